"""Exporter conformance: an artifact, loaded back through its exporter's own runtime, gives the
model's outputs within a tolerance, on the example inputs and on other batch sizes and lengths.

Plugin authors run it on their format in their own test suite::

    from treadle.testing.exporters import check_exporter

    def test_my_format_round_trips(tmp_path):
        errors = check_exporter(MyExporter(), model, {"input_ids": ids}, tmp_path,
                                task_spec=task, variants=[{"input_ids": longer_ids}])
        assert errors  # one max-abs-error per input set checked
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from treadle.export.inputs import (
    BATCH_AXIS,
    OUTPUT_NAME,
    PositionalModel,
    dynamic_axes_for,
    inputs_for_tracing,
)
from treadle.export.manifest import DEFAULT_TOLERANCE

if TYPE_CHECKING:
    from treadle.protocols import Exporter
    from treadle.task import TaskSpec

__all__ = ["check_exporter", "describe_inputs"]


def describe_inputs(inputs: Mapping[str, torch.Tensor]) -> str:
    """``"input_ids (3, 17), attention_mask (3, 17)"``: names and shapes, for messages."""
    return ", ".join(f"{name} {tuple(tensor.shape)}" for name, tensor in inputs.items())


def check_exporter(
    exporter: Exporter,
    model: torch.nn.Module,
    example_inputs: Mapping[str, torch.Tensor],
    directory: Path,
    *,
    task_spec: TaskSpec | None = None,
    variants: Sequence[Mapping[str, torch.Tensor]] = (),
    rtol: float = DEFAULT_TOLERANCE["rtol"],
    atol: float = DEFAULT_TOLERANCE["atol"],
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Export ``model`` with ``exporter`` exactly as a bundle does, load the artifact with
    ``exporter.load`` and compare its outputs with the model's on ``example_inputs`` and on
    each of ``variants`` (same names; other batch sizes or sequence lengths).

    :param task_spec: decides the dynamic axes (batch; sequence for text); batch only if None.
    :param metadata: what the bundle passes as ``metadata`` (a format such as ``pytorch``
        needs the model, task and training sections to rebuild the model).
    :returns: the largest absolute error per input set, keyed by :func:`describe_inputs`.
    :raises AssertionError: an output differs beyond the tolerance or has another shape; the
        message names the artifact, the inputs and the error.
    """
    was_training = model.training
    model.eval()
    try:
        positional = PositionalModel(model, tuple(example_inputs)).eval()
        with torch.no_grad():
            reference = positional(*example_inputs.values())
        if task_spec is not None:
            dynamic_axes = dynamic_axes_for(task_spec, example_inputs, reference)
        else:
            dynamic_axes = {name: {0: BATCH_AXIS} for name in [*example_inputs, OUTPUT_NAME]}
        Path(directory).mkdir(parents=True, exist_ok=True)
        path = Path(directory) / exporter.artifact_name
        exporter.export(
            positional,
            inputs_for_tracing(example_inputs, dynamic_axes),
            path,
            input_names=list(example_inputs),
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes,
            metadata=dict(metadata or {}),
        )
        run = exporter.load(path)
        errors: dict[str, float] = {}
        for inputs in [example_inputs, *variants]:
            with torch.no_grad():
                expected = positional(*inputs.values()).double()
                actual = run(*inputs.values()).detach().cpu().double()
            described = describe_inputs(inputs)
            if actual.shape != expected.shape:
                msg = (
                    f"{path.name} on {described}: output shape {tuple(actual.shape)}, the "
                    f"model's {tuple(expected.shape)}"
                )
                raise AssertionError(msg)
            error = float((actual - expected).abs().max()) if expected.numel() else 0.0
            if not torch.allclose(actual, expected, rtol=rtol, atol=atol):
                msg = (
                    f"{path.name} on {described}: outputs differ from the model's by up to "
                    f"{error:.3g} (rtol={rtol}, atol={atol})"
                )
                raise AssertionError(msg)
            errors[described] = error
        return errors
    finally:
        model.train(was_training)
