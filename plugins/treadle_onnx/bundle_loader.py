"""Runs a bundle's ONNX artifact with onnxruntime on CPU.

Copied verbatim into every bundle with an ``onnx`` artifact (``loaders/``), where the bundle's
inference.py imports it by path: it stands alone, with numpy and onnxruntime only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np


def load(path: Path) -> Callable[[list[np.ndarray]], np.ndarray]:
    """An onnxruntime session for the artifact: ``predict(arrays)`` takes the inputs in the
    graph's input order and returns its first output."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [node.name for node in session.get_inputs()]

    def predict(arrays: list[np.ndarray]) -> np.ndarray:
        return np.asarray(session.run(None, dict(zip(names, arrays, strict=True)))[0])

    return predict
