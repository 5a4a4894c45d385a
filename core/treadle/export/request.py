"""What an exporter is asked to write: one artifact of one model, as an :class:`ExportRequest`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from treadle.export.inputs import PositionalModel

__all__ = ["ExportRequest", "torch_requirement"]

_TORCH_MAJOR, _TORCH_MINOR = (int(part) for part in torch.__version__.split(".")[:2])


@attrs.frozen(kw_only=True)
class ExportRequest:
    """One artifact to write, handed to :meth:`treadle.protocols.Exporter.export`.

    A frozen value: the bundle may give it more fields in a minor release, and an exporter
    reads only those it needs.

    :ivar model: an ``nn.Module`` in eval mode that takes the input tensors positionally, in
        ``input_names`` order, and returns one tensor (the logits).
    :ivar example_inputs: one sample, every dynamic axis of size 1 repeated to size 2
        (``torch.export`` specializes an axis whose example size is 1).
    :ivar path: the file to write, inside the bundle's ``artifacts/`` folder.
    :ivar input_names: the inputs' names, in positional order (``("input_ids",
        "attention_mask")``).
    :ivar output_names: the output's name, ``("logits",)``.
    :ivar dynamic_axes: axis names per input and output name:
        ``{"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}}``.
    :ivar metadata: the manifest's JSON-ready ``model``, ``task``, ``training_config`` and
        ``task_spec`` sections.
    """

    model: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    path: Path
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: Mapping[str, Mapping[int, str]]
    metadata: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def user_model(self) -> nn.Module:
        """The model as the user gave it (keyword inputs, any output), without the positional
        wrapper: for formats that store weights rather than a traced program."""
        return self.model.model if isinstance(self.model, PositionalModel) else self.model

    def dynamic_shapes(self, dim: object = None) -> tuple[tuple[dict[int, Any], ...]]:
        """``dynamic_shapes`` for ``torch.export.export`` or ``torch.onnx.export`` of
        :attr:`model`: one ``{axis: dim}`` per input, for the positional ``*inputs``.

        :param dim: what every dynamic axis becomes (``torch.export.Dim.DYNAMIC``); None gives
            the axis names (``"batch"``), which ``torch.onnx.export`` also writes into the graph.
        """
        per_input = tuple(
            {axis: axis_name if dim is None else dim for axis, axis_name in axes.items()}
            for axes in (self.dynamic_axes.get(name, {}) for name in self.input_names)
        )
        return (per_input,)


def torch_requirement(*, same_minor: bool = False) -> str:
    """A requirements.txt line for the torch that runs an artifact written with this one:
    ``torch>=2.13,<3``, or ``torch>=2.13,<2.14`` when the format follows torch's minor version
    (a saved ``ExportedProgram``)."""
    upper = f"{_TORCH_MAJOR}.{_TORCH_MINOR + 1}" if same_minor else str(_TORCH_MAJOR + 1)
    return f"torch>={_TORCH_MAJOR}.{_TORCH_MINOR},<{upper}"
