"""Runs a ``numpy_mlp`` artifact with numpy alone.

Copied verbatim into every bundle with such an artifact, where the bundle's inference.py
imports it by path: it stands alone (numpy and the standard library only).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-values)))


_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda values: np.maximum(values, 0.0),
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
}


def load(path: Path) -> Callable[[list[np.ndarray]], np.ndarray]:
    """``predict([features])``: features ``(batch, num_features)`` in, the last layer's
    outputs ``(batch, num_outputs)`` out, in float32."""
    with np.load(path, allow_pickle=False) as archive:
        layers = json.loads(str(archive["layers"]))
        weights = {name: archive[name] for name in archive.files if name != "layers"}

    def predict(arrays: list[np.ndarray]) -> np.ndarray:
        (hidden,) = arrays
        hidden = np.asarray(hidden, dtype=np.float32)
        for layer in layers:
            if layer["op"] == "linear":
                hidden = hidden @ weights[f"weight_{layer['index']}"].T
                if layer["bias"]:
                    hidden = hidden + weights[f"bias_{layer['index']}"]
            else:
                hidden = _ACTIVATIONS[layer["op"]](hidden)
        return hidden

    return predict
