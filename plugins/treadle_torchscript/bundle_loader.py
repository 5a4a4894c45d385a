"""Runs a bundle's TorchScript or torch.export artifact with torch on CPU.

Copied verbatim into every bundle with such an artifact (``loaders/``), where the bundle's
inference.py imports it by path: it stands alone, with numpy and torch only.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: torch 2.13 warns on torch.jit.load; the bundle's README says TorchScript is deprecated.
_DEPRECATED = r".*(TorchScript|torch\.jit).*deprecated.*"


def _predictor(module: Any) -> Callable[[list[np.ndarray]], np.ndarray]:
    import torch

    def predict(arrays: list[np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            result = module(*[torch.from_numpy(np.ascontiguousarray(array)) for array in arrays])
        return np.asarray(result.detach().cpu().numpy())

    return predict


def load_torchscript(path: Path) -> Callable[[list[np.ndarray]], np.ndarray]:
    """``torch.jit.load`` of the artifact: ``predict(arrays)`` returns its output."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATED)
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    return _predictor(module)


def load_torch_export(path: Path) -> Callable[[list[np.ndarray]], np.ndarray]:
    """``torch.export.load`` of the artifact: ``predict(arrays)`` returns its output."""
    import torch

    return _predictor(torch.export.load(str(path)).module())
