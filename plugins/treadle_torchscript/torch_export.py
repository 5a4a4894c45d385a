"""The ``torch_export`` export format: an ExportedProgram saved with ``torch.export.save``,
the successor torch offers to TorchScript."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from treadle.export import BundleLoader, torch_requirement

if TYPE_CHECKING:
    from treadle.export import ExportRequest

__all__ = ["TorchExportExporter"]


class TorchExportExporter:
    """Writes ``model.pt2``: ``torch.export.export`` with every named dynamic axis
    ``Dim.DYNAMIC`` (torch infers its range), saved with ``torch.export.save``.

    The saved program's format follows torch's minor version, so the bundle pins it.
    """

    artifact_name = "model.pt2"
    runtime = "torch_export"
    requirements: Sequence[str] = (torch_requirement(same_minor=True),)
    loader = BundleLoader(
        module="treadle_torchscript.bundle_loader",
        function="load_torch_export",
        imports=("torch",),
        priority=10,
    )

    def export(self, request: ExportRequest) -> None:
        import torch

        program = torch.export.export(
            request.model,
            request.example_inputs,
            dynamic_shapes=request.dynamic_shapes(torch.export.Dim.DYNAMIC),
        )
        torch.export.save(program, str(request.path))
