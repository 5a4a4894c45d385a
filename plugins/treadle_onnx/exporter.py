"""The ``onnx`` export format: torch 2.13's default (dynamo) ONNX exporter, checked with
``onnx.checker`` and run by onnxruntime, in the bundle through :mod:`treadle_onnx.bundle_loader`."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

from treadle.export import BundleLoader

if TYPE_CHECKING:
    from treadle.export import ExportRequest

__all__ = ["OnnxExporter"]


class OnnxExporter:
    """Writes ``model.onnx`` with dynamic batch (and, for text, sequence) axes.

    torch 2.13's ``torch.onnx.export`` defaults to ``dynamo=True``: it captures the model with
    ``torch.export`` and translates it with onnxscript, so it needs ``onnx`` and
    ``onnxscript`` installed. Weights are stored inside the file (``external_data=False``),
    so the artifact is one file (ONNX's protobuf limit makes that 2 GB at most).

    :param opset_version: ONNX opset; the exporter's default when None.
    """

    artifact_name = "model.onnx"
    runtime = "onnxruntime"
    requirements: Sequence[str] = ("onnxruntime>=1.17",)
    loader = BundleLoader(
        module="treadle_onnx.bundle_loader", imports=("onnxruntime",), priority=30
    )

    def __init__(self, opset_version: int | None = None) -> None:
        self.opset_version = opset_version

    def export(self, request: ExportRequest) -> None:
        """Export, then check the file with ``onnx.checker.check_model``."""
        import torch

        from treadle.export import ExportError

        try:
            import onnx
            import onnxscript  # noqa: F401  (the dynamo exporter's translator)
        except ImportError as err:
            msg = (
                "the 'onnx' format needs onnx and onnxscript: "
                f'pip install "treadle[onnx]" ({err})'
            )
            raise ExportError(msg) from err
        # No autograd bookkeeping while torch traces twice (capture, decompositions): about 5%
        # fewer calls for the tiny GPT, and the same file byte for byte (measured).
        with torch.no_grad(), warnings.catch_warnings():
            # Inputs sharing an axis name (input_ids and attention_mask: "batch") is intended.
            warnings.filterwarnings("ignore", message=r".*axis name: .* will not be used")
            torch.onnx.export(
                request.model,
                request.example_inputs,
                str(request.path),
                input_names=list(request.input_names),
                output_names=list(request.output_names),
                # Axis names as strings: the exporter makes them Dim.DYNAMIC and names the axes.
                dynamic_shapes=request.dynamic_shapes(),
                opset_version=self.opset_version,
                external_data=False,
                dynamo=True,
                verbose=False,
            )
        onnx.checker.check_model(str(request.path), full_check=True)
