"""The ``torchscript`` export format: ``torch.jit.trace``, saved with ``torch.jit.save``.

torch 2.13 warns that TorchScript is deprecated; the bundle's README says so and points to
the ``torch_export`` format. The deprecation warnings are silenced here because the bundle
documents them; tracer warnings are logged at DEBUG: the bundle verifies the trace numerically.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["TorchScriptExporter"]

logger = logging.getLogger(__name__)

_TORCH_MINOR = ".".join(torch.__version__.split(".")[:2])
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
    requirements: Sequence[str] = (f"torch>={_TORCH_MINOR},<3",)

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
        with warnings.catch_warnings(record=True) as caught:
            warnings.filterwarnings("ignore", message=_DEPRECATED)
            warnings.simplefilter("always", torch.jit.TracerWarning)  # type: ignore[attr-defined]
            # check_trace re-traces and compares graphs; it fails on fused fast paths that
            # compute the same values, so the values are checked instead (by the bundle).
            traced = torch.jit.trace(  # type: ignore[no-untyped-call]
                model, example_inputs, check_trace=False
            )
            torch.jit.save(traced, str(path))
        for warning in caught:
            logger.debug("torch.jit.trace: %s", warning.message)

    def load(self, path: Path) -> Callable[..., torch.Tensor]:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_DEPRECATED)
            module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]

        def run(*tensors: torch.Tensor) -> torch.Tensor:
            result: torch.Tensor = module(*tensors)
            return result

        return run
