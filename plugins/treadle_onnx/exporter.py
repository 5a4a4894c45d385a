"""The ``onnx`` export format: torch 2.13's default (dynamo) ONNX exporter, checked with
``onnx.checker`` and run back through onnxruntime."""

# treadle.export is imported inside the methods: discovery imports this module via plugin.py.

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

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

    def __init__(self, opset_version: int | None = None) -> None:
        self.opset_version = opset_version

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
        """Export, then check the file with ``onnx.checker.check_model``."""
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
        # Axis names as strings: the exporter makes them Dim.DYNAMIC and names the ONNX axes.
        per_input = tuple(dict(dynamic_axes.get(name, {})) for name in input_names)
        with warnings.catch_warnings():
            # Inputs sharing an axis name (input_ids and attention_mask: "batch") is intended.
            warnings.filterwarnings("ignore", message=r".*axis name: .* will not be used")
            torch.onnx.export(
                model,
                example_inputs,
                str(path),
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_shapes=(per_input,),
                opset_version=self.opset_version,
                external_data=False,
                dynamo=True,
                verbose=False,
            )
        onnx.checker.check_model(str(path), full_check=True)

    def load(self, path: Path) -> Callable[..., torch.Tensor]:
        """An onnxruntime session on CPU, called with tensors, returning the first output.

        :raises NotImplementedError: onnxruntime is not installed (verification is skipped).
        """
        try:
            import onnxruntime
        except ImportError as err:
            msg = 'onnxruntime is not installed: pip install "treadle[onnxruntime]"'
            raise NotImplementedError(msg) from err
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [node.name for node in session.get_inputs()]

        def run(*tensors: torch.Tensor) -> torch.Tensor:
            feeds = {
                name: tensor.detach().cpu().numpy()
                for name, tensor in zip(names, tensors, strict=True)
            }
            return torch.from_numpy(session.run(None, feeds)[0])

        return run
