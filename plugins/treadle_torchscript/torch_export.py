"""The ``torch_export`` export format: an ExportedProgram saved with ``torch.export.save``,
the successor torch offers to TorchScript."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["TorchExportExporter"]

_TORCH_MINOR = ".".join(torch.__version__.split(".")[:2])
_NEXT_MINOR = f"{_TORCH_MINOR.split('.')[0]}.{int(_TORCH_MINOR.split('.')[1]) + 1}"


class TorchExportExporter:
    """Writes ``model.pt2``: ``torch.export.export`` with every named dynamic axis
    ``Dim.DYNAMIC`` (torch infers its range), saved with ``torch.export.save``.

    The saved program's format follows torch's minor version, so the bundle pins it.
    """

    artifact_name = "model.pt2"
    runtime = "torch_export"
    requirements: Sequence[str] = (f"torch>={_TORCH_MINOR},<{_NEXT_MINOR}",)

    def export(
        self,
        model: torch.nn.Module,
        example_inputs: tuple[torch.Tensor, ...],
        path: Path,
        *,
        input_names: Sequence[str],
        output_names: Sequence[str],
        dynamic_axes: Mapping[str, Mapping[int, str]],
        metadata: Mapping[str, Any],
    ) -> None:
        per_input = tuple(
            {axis: torch.export.Dim.DYNAMIC for axis in dynamic_axes.get(name, {})}
            for name in input_names
        )
        program = torch.export.export(model, example_inputs, dynamic_shapes=(per_input,))
        torch.export.save(program, str(path))

    def load(self, path: Path) -> Callable[..., torch.Tensor]:
        module = torch.export.load(str(path)).module()

        def run(*tensors: torch.Tensor) -> torch.Tensor:
            result: torch.Tensor = module(*tensors)
            return result

        return run
