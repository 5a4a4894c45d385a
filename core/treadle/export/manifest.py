"""The bundle's manifest.json: artifacts with sha256, signature, sample, versions, status."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import torch

import treadle

__all__ = [
    "DEFAULT_TOLERANCE",
    "MANIFEST_FILE",
    "MANIFEST_VERSION",
    "jsonable",
    "read_manifest",
    "sha256_of",
    "signature_of",
    "versions",
]

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 2
#: How far an artifact's outputs may stray from the eager model's: float32 kernels of another
#: runtime reorder sums (onnxruntime differs by ~1e-6 on the built-in models, measured).
DEFAULT_TOLERANCE: dict[str, float] = {"rtol": 1e-4, "atol": 1e-4}

_SKIP = object()
_EXPORT_LIBRARIES = ("onnx", "onnxscript", "onnxruntime", "numpy")


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plain(value: Any, dropped: list[str], where: str) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        dropped.append(where)
        return _SKIP
    if isinstance(value, Mapping):
        items = {str(key): _plain(item, dropped, f"{where}.{key}") for key, item in value.items()}
        return {key: item for key, item in items.items() if item is not _SKIP}
    if isinstance(value, list | tuple):
        items_list = [_plain(item, dropped, f"{where}[{i}]") for i, item in enumerate(value)]
        return [item for item in items_list if item is not _SKIP]
    if attrs.has(type(value)):
        return _plain(attrs.asdict(value, recurse=False), dropped, where)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
        return _plain(fields, dropped, where)
    if isinstance(value, SimpleNamespace):
        return _plain(vars(value), dropped, where)
    dropped.append(where)
    return _SKIP


def jsonable(value: Any) -> tuple[Any, list[str]]:
    """``value`` as JSON-ready data, and the paths (``$.field``) of what was left out.

    Mappings, lists, tuples, attrs classes, dataclasses and SimpleNamespaces are walked;
    str, int, finite float, bool and None are kept; anything else (tensors, functions,
    NaN) is dropped and its path reported.
    """
    dropped: list[str] = []
    plain = _plain(value, dropped, "$")
    return (None if plain is _SKIP else plain), dropped


def signature_of(
    inputs: Mapping[str, torch.Tensor],
    logits: torch.Tensor,
    output_name: str,
    dynamic_axes: Mapping[str, Mapping[int, str]],
) -> dict[str, list[dict[str, Any]]]:
    """Input and output names, dtypes and shapes, dynamic axes named (``"batch"``)."""

    def describe(name: str, tensor: torch.Tensor) -> dict[str, Any]:
        axes = dynamic_axes.get(name, {})
        shape = [axes.get(axis, size) for axis, size in enumerate(tensor.shape)]
        return {"name": name, "dtype": str(tensor.dtype).removeprefix("torch."), "shape": shape}

    return {
        "inputs": [describe(name, tensor) for name, tensor in inputs.items()],
        "outputs": [describe(output_name, logits)],
    }


def versions() -> dict[str, str]:
    """treadle, torch and Python versions, and those of the export libraries already loaded
    (onnx, onnxscript, onnxruntime, numpy): the ones that wrote or checked the artifacts."""
    found = {
        "treadle": treadle.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    for module in _EXPORT_LIBRARIES:
        if module in sys.modules:
            found[module] = str(getattr(sys.modules[module], "__version__", "unknown"))
    return found


def read_manifest(bundle_dir: str | Path) -> dict[str, Any]:
    """The manifest of a bundle.

    :raises FileNotFoundError: the folder holds no manifest.json (not a bundle).
    """
    path = Path(bundle_dir) / MANIFEST_FILE
    with path.open(encoding="utf-8") as handle:
        manifest: dict[str, Any] = json.load(handle)
    return manifest
