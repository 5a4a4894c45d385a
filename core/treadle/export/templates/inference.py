"""Standalone inference for a treadle export bundle: predicts, or verifies every artifact.

Copied verbatim into each bundle. It imports neither treadle nor anything the bundle's
requirements.txt does not list: every name (model, task, classes) comes from manifest.json at
run time, never from this file.

    python inference.py                      # predict for the manifest's sample input
    python inference.py --input inputs.json  # {"input_ids": [[1, 2, 3]]} or {"pixel_values": ...}
    python inference.py --format onnx --output outputs.json
    python inference.py --verify             # sha256 and sample outputs of every artifact
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

BUNDLE_DIR = Path(__file__).resolve().parent
#: Runtimes this script can run, in the order it prefers them when --format is not given.
RUNTIME_PREFERENCE = ("onnxruntime", "torchscript", "torch_export")
#: The Python module each runtime needs.
RUNTIME_MODULES = {"onnxruntime": "onnxruntime", "torchscript": "torch", "torch_export": "torch"}

Runner = Callable[[list[np.ndarray]], np.ndarray]


class BundleError(ValueError):
    """Bad input or a bundle this script cannot run; main() prints it and exits with 2."""


def read_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def load_manifest(bundle_dir: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = read_json(bundle_dir / "manifest.json")
    return manifest


def artifact_path(bundle_dir: Path, relative: str) -> Path:
    """The artifact's file: as the manifest names it, or flat beside this script (a
    TorchServe model archive extracts its extra files into one folder)."""
    nested = bundle_dir / relative
    return nested if nested.exists() else bundle_dir / Path(relative).name


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def runtime_available(runtime: str) -> bool:
    module = RUNTIME_MODULES.get(runtime)
    return module is not None and importlib.util.find_spec(module) is not None


def load_runner(runtime: str, path: Path) -> Runner:
    """A function from input arrays (in signature order) to the output array."""
    if runtime == "onnxruntime":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [node.name for node in session.get_inputs()]

        def run_onnx(arrays: list[np.ndarray]) -> np.ndarray:
            return np.asarray(session.run(None, dict(zip(names, arrays, strict=True)))[0])

        return run_onnx
    if runtime in ("torchscript", "torch_export"):
        import torch

        if runtime == "torchscript":
            module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        else:
            module = torch.export.load(str(path)).module()

        def run_torch(arrays: list[np.ndarray]) -> np.ndarray:
            with torch.no_grad():
                result = module(*[torch.from_numpy(array) for array in arrays])
            return np.asarray(result.detach().cpu().numpy())

        return run_torch
    message = f"inference.py has no runtime for {runtime or 'this format'!r}"
    raise BundleError(message)


def input_arrays(manifest: dict[str, Any], values: dict[str, Any]) -> list[np.ndarray]:
    """The inputs as arrays in signature order, with the signature's dtypes."""
    arrays = []
    expected = [spec["name"] for spec in manifest["signature"]["inputs"]]
    missing = [name for name in expected if name not in values]
    if missing:
        message = f"inputs lack {', '.join(missing)}; expected: {', '.join(expected)}"
        raise BundleError(message)
    for spec in manifest["signature"]["inputs"]:
        array = np.asarray(values[spec["name"]], dtype=np.dtype(spec["dtype"]))
        if array.ndim != len(spec["shape"]):
            message = (
                f"input {spec['name']!r} has {array.ndim} dimensions; "
                f"the model takes {len(spec['shape'])}: {spec['shape']}"
            )
            raise BundleError(message)
        arrays.append(array)
    return arrays


def choose_format(manifest: dict[str, Any], requested: str | None) -> str:
    artifacts = manifest["artifacts"]
    if requested is not None:
        if requested not in artifacts:
            message = f"format {requested!r} is not in this bundle; it has: {', '.join(artifacts)}"
            raise BundleError(message)
        return requested
    for runtime in RUNTIME_PREFERENCE:
        for name, artifact in artifacts.items():
            if artifact["runtime"] == runtime and runtime_available(runtime):
                return str(name)
    message = (
        f"no artifact of this bundle ({', '.join(artifacts)}) can run here: "
        f"pip install -r {BUNDLE_DIR / 'requirements.txt'}"
    )
    raise BundleError(message)


def predictions(task: dict[str, Any], logits: np.ndarray) -> Any:
    """Argmax over the last axis; for one label per row, with the class names as data."""
    indices = logits.argmax(axis=-1)
    class_names = task.get("class_names") or []
    if logits.ndim == 2:
        return [
            {
                "class_index": int(index),
                "class_name": class_names[index] if index < len(class_names) else None,
            }
            for index in indices.tolist()
        ]
    return {"token_ids": indices.tolist()}


def predict(bundle_dir: Path, arguments: argparse.Namespace) -> int:
    manifest = load_manifest(bundle_dir)
    name = choose_format(manifest, arguments.format)
    artifact = manifest["artifacts"][name]
    values = read_json(Path(arguments.input)) if arguments.input else manifest["sample"]["inputs"]
    run = load_runner(artifact["runtime"], artifact_path(bundle_dir, artifact["file"]))
    logits = run(input_arrays(manifest, values))
    output_name = manifest["signature"]["outputs"][0]["name"]
    if arguments.output:
        with Path(arguments.output).open("w", encoding="utf-8") as handle:
            json.dump({output_name: logits.tolist()}, handle)
    task: dict[str, Any] = manifest.get("task", {})
    result = {
        "format": name,
        "output_shape": list(logits.shape),
        "predictions": predictions(task, logits),
    }
    print(json.dumps(result, ensure_ascii=False))
    return 0


def verify(bundle_dir: Path) -> int:
    """Check every artifact's sha256, then run the sample through each runnable one and
    compare with the outputs recorded at export. Returns 1 on any mismatch."""
    manifest = load_manifest(bundle_dir)
    tolerance = manifest["tolerance"]
    sample = manifest["sample"]
    output_name = manifest["signature"]["outputs"][0]["name"]
    expected = np.asarray(sample["outputs"][output_name], dtype=np.float64)
    arrays = input_arrays(manifest, sample["inputs"])
    failures = 0
    for name, artifact in manifest["artifacts"].items():
        path = artifact_path(bundle_dir, artifact["file"])
        if not path.exists():
            print(f"FAIL {name}: {artifact['file']} is missing")
            failures += 1
            continue
        digest = sha256_of(path)
        if digest != artifact["sha256"]:
            print(f"FAIL {name}: sha256 {digest} differs from the manifest's {artifact['sha256']}")
            failures += 1
            continue
        runtime = artifact["runtime"]
        if not runtime_available(runtime):
            reason = (
                f"{RUNTIME_MODULES[runtime]} is not installed"
                if runtime in RUNTIME_MODULES
                else "inference.py has no runtime for it (needs its exporter's loader)"
            )
            print(f"ok   {name}: sha256 matches; outputs not checked: {reason}")
            continue
        try:
            actual = load_runner(runtime, path)(arrays).astype(np.float64)
        except Exception as err:  # any runtime failure is this artifact's verdict
            print(f"FAIL {name}: running it failed: {type(err).__name__}: {err}")
            failures += 1
            continue
        if actual.shape != expected.shape:
            print(f"FAIL {name}: output shape {actual.shape}, recorded {expected.shape}")
            failures += 1
            continue
        error = float(np.max(np.abs(actual - expected))) if actual.size else 0.0
        if not np.allclose(actual, expected, rtol=tolerance["rtol"], atol=tolerance["atol"]):
            print(
                f"FAIL {name}: outputs differ from the recorded ones by up to {error:.3g} "
                f"(tolerance rtol={tolerance['rtol']}, atol={tolerance['atol']})"
            )
            failures += 1
            continue
        print(f"ok   {name}: sha256 matches; outputs within tolerance (max error {error:.3g})")
    count = len(manifest["artifacts"])
    print(f"{'FAILED' if failures else 'verified'}: {count} artifacts, {failures} failed")
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run or verify this export bundle.")
    parser.add_argument("--input", help="JSON file: {input name: nested list}")
    parser.add_argument("--format", help="artifact to run (default: the first runnable)")
    parser.add_argument("--output", help="write the raw outputs to this JSON file")
    parser.add_argument(
        "--verify", action="store_true", help="check every artifact against the manifest"
    )
    parser.add_argument("--bundle", default=str(BUNDLE_DIR), help="bundle folder")
    arguments = parser.parse_args(argv)
    bundle_dir = Path(arguments.bundle)
    try:
        if arguments.verify:
            return verify(bundle_dir)
        return predict(bundle_dir, arguments)
    except (BundleError, OSError, json.JSONDecodeError) as err:
        print(f"inference.py: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
