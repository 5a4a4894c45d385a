"""The ``torchscript`` export format: ``torch.jit.trace``, saved with ``torch.jit.save``.

torch 2.13 warns that TorchScript is deprecated; the bundle's README says so and points to
the ``torch_export`` format. The deprecation warnings are silenced here because the bundle
documents them; tracer warnings are logged at DEBUG: the bundle verifies the trace numerically.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

from treadle.export import BundleLoader, torch_requirement

if TYPE_CHECKING:
    from treadle.export import ExportRequest

__all__ = ["TorchScriptExporter"]

logger = logging.getLogger(__name__)

_DEPRECATED = r".*(TorchScript|torch\.jit).*deprecated.*"


class TorchScriptExporter:
    """Writes ``model.torchscript.pt``: the model traced with its example inputs.

    Tracing records the operations one call makes, so control flow that depends on input
    values is frozen; shapes stay dynamic where the model computes them from ``.shape``.
    The bundle checks the trace against the model on the sample, and the exporter
    conformance check (:mod:`treadle.testing.exporters`) on other batch sizes and lengths.
    """

    artifact_name = "model.torchscript.pt"
    runtime = "torchscript"
    requirements: Sequence[str] = (torch_requirement(),)
    loader = BundleLoader(
        module="treadle_torchscript.bundle_loader",
        function="load_torchscript",
        imports=("torch",),
        priority=20,
    )

    def export(self, request: ExportRequest) -> None:
        import torch

        with warnings.catch_warnings(record=True) as caught:
            warnings.filterwarnings("ignore", message=_DEPRECATED)
            warnings.simplefilter("always", torch.jit.TracerWarning)  # type: ignore[attr-defined]
            # check_trace re-traces and compares graphs; it fails on fused fast paths that
            # compute the same values, so the values are checked instead (by the bundle).
            traced = torch.jit.trace(  # type: ignore[no-untyped-call]
                request.model, request.example_inputs, check_trace=False
            )
            torch.jit.save(traced, str(request.path))
        for warning in caught:
            logger.debug("torch.jit.trace: %s", warning.message)
