"""Standalone inference for a treadle export bundle: predicts, or verifies every artifact.

Copied verbatim into each bundle. It imports neither treadle nor anything the bundle's
requirements.txt does not list: every name (model, task, classes) comes from manifest.json at
run time, never from this file. Each artifact runs through its exporter's loader, a standalone
module in loaders/ whose sha256 the manifest records and which is checked before it runs.

    python inference.py                      # predict for the manifest's sample input
    python inference.py --input inputs.json  # {"input_ids": [[1, 2, 3]]} or {"pixel_values": ...}
    python inference.py --format onnx --output outputs.json
    python inference.py --verify             # sha256 and sample outputs of every artifact

Before predicting it checks the artifact's sha256 against the manifest (--skip-checksum to
predict from a changed file anyway); a loader's sha256 is always checked before it runs.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import numpy as np

BUNDLE_DIR = Path(__file__).resolve().parent
#: The manifest layout this script reads (loaders per artifact).
MANIFEST_VERSION = 2
#: Input dtypes numpy can build from a manifest's or a request's nested lists.
INPUT_DTYPES = frozenset(
    {"bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"}
)

Runner = Callable[[list[np.ndarray]], np.ndarray]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FUNCTION = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class BundleError(ValueError):
    """Bad input or a bundle this script cannot run; main() prints it and exits with 2."""


def read_json(path: Path) -> Any:
    """The JSON in ``path``; BundleError for anything that is not JSON text."""
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except RecursionError as err:
        message = f"{path} is nested too deeply to read"
        raise BundleError(message) from err
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, a too-long integer
        message = f"{path} is not valid JSON: {err}"
        raise BundleError(message) from err


def _require(condition: bool, where: str, expected: str) -> None:
    if not condition:
        message = f"manifest.json: {where} must be {expected}"
        raise BundleError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_file(value: Any, where: str) -> None:
    """A relative path inside the bundle: no absolute path, no '..', no NUL."""
    safe = (
        isinstance(value, str)
        and value.strip() != ""
        and "\0" not in value
        and "\\" not in value
        and not PurePosixPath(value).is_absolute()
        and ".." not in PurePosixPath(value).parts
    )
    _require(safe, where, "a relative path inside the bundle")


def _check_loader(loader: Any, where: str) -> None:
    _require(isinstance(loader, dict), where, "an object or null")
    _check_file(loader.get("file"), f"{where}.file")
    _require(isinstance(loader.get("sha256"), str), f"{where}.sha256", "a sha256 string")
    _require(bool(_SHA256.match(loader["sha256"])), f"{where}.sha256", "64 hex digits")
    function = loader.get("function")
    _require(isinstance(function, str), f"{where}.function", "a function name")
    _require(bool(_FUNCTION.match(function)), f"{where}.function", "a public function name")
    imports = loader.get("imports")
    _require(isinstance(imports, list), f"{where}.imports", "a list of module names")
    for name in imports:
        _require(
            isinstance(name, str) and bool(_MODULE.match(name)), f"{where}.imports", "module names"
        )
    _require(_is_int(loader.get("priority")), f"{where}.priority", "an integer")


def _check_artifacts(artifacts: Any) -> None:
    _require(isinstance(artifacts, dict) and bool(artifacts), "artifacts", "a non-empty object")
    for name, artifact in artifacts.items():
        where = f"artifacts[{json.dumps(name)}]"
        _require(isinstance(artifact, dict), where, "an object")
        _check_file(artifact.get("file"), f"{where}.file")
        sha256 = artifact.get("sha256")
        _require(
            isinstance(sha256, str) and bool(_SHA256.match(sha256)),
            f"{where}.sha256",
            "64 hex digits",
        )
        if artifact.get("loader") is not None:
            _check_loader(artifact["loader"], f"{where}.loader")
        else:
            artifact["loader"] = None


def _check_signature(signature: Any) -> None:
    _require(isinstance(signature, dict), "signature", "an object")
    for part in ("inputs", "outputs"):
        specs = signature.get(part)
        _require(isinstance(specs, list) and bool(specs), f"signature.{part}", "a non-empty list")
        for index, spec in enumerate(specs):
            where = f"signature.{part}[{index}]"
            _require(isinstance(spec, dict), where, "an object")
            _require(isinstance(spec.get("name"), str), f"{where}.name", "a string")
            if part == "inputs":
                dtype = spec.get("dtype")
                valid = isinstance(dtype, str) and dtype in INPUT_DTYPES
                _require(valid, f"{where}.dtype", "a numeric dtype")
                shape = spec.get("shape")
                _require(
                    isinstance(shape, list)
                    and all(_is_int(size) or isinstance(size, str) for size in shape),
                    f"{where}.shape",
                    "a list of sizes and axis names",
                )


def _check_rest(manifest: dict[str, Any]) -> None:
    sample: Any = manifest.get("sample")
    _require(isinstance(sample, dict), "sample", "an object")
    for part in ("inputs", "outputs"):
        _require(isinstance(sample.get(part), dict), f"sample.{part}", "an object")
    output_name = manifest["signature"]["outputs"][0]["name"]
    _require(output_name in sample["outputs"], "sample.outputs", f"an object with {output_name!r}")
    tolerance: Any = manifest.get("tolerance")
    _require(isinstance(tolerance, dict), "tolerance", "an object")
    for key in ("rtol", "atol"):
        value = tolerance.get(key)
        valid = isinstance(value, int | float) and not isinstance(value, bool)
        _require(valid and math.isfinite(value) and value >= 0, f"tolerance.{key}", "a number >= 0")
    task = manifest.setdefault("task", {})
    _require(isinstance(task, dict), "task", "an object")
    names = task.get("class_names")
    _require(
        names is None or (isinstance(names, list) and all(isinstance(n, str) for n in names)),
        "task.class_names",
        "a list of strings or null",
    )


def load_manifest(bundle_dir: Path) -> dict[str, Any]:
    """The bundle's manifest, checked to hold everything this script reads.

    :raises BundleError: no manifest.json, not JSON, another manifest version, or a field
        of the wrong shape; the message names the field.
    """
    path = bundle_dir / "manifest.json"
    if not path.is_file():
        message = f"{bundle_dir} holds no manifest.json: not a treadle export bundle"
        raise BundleError(message)
    manifest: dict[str, Any] = read_json(path)
    _require(isinstance(manifest, dict), "the document", "a JSON object")
    version = manifest.get("manifest_version")
    if version != MANIFEST_VERSION or not _is_int(version):
        message = (
            f"manifest.json has manifest_version {json.dumps(version)}; this inference.py reads "
            f"version {MANIFEST_VERSION}: use the inference.py written with the bundle"
        )
        raise BundleError(message)
    _check_artifacts(manifest.get("artifacts"))
    _check_signature(manifest.get("signature"))
    _check_rest(manifest)
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


def check_sha256(bundle_dir: Path, name: str, artifact: dict[str, Any]) -> None:
    """Refuse an artifact that is missing or differs from the sha256 the manifest recorded:
    hashing costs a fraction of loading the model, and a changed file must never predict."""
    path = artifact_path(bundle_dir, artifact["file"])
    if not path.is_file():
        message = f"{artifact['file']} ({name}) is missing from the bundle"
        raise BundleError(message)
    if sha256_of(path) != artifact["sha256"]:
        message = (
            f"{artifact['file']} ({name}) does not match its sha256 in manifest.json: it changed "
            f"after export. Run --verify to see what differs, or pass --skip-checksum to run "
            f"it anyway"
        )
        raise BundleError(message)


def missing_imports(loader: dict[str, Any]) -> list[str]:
    """The modules a loader needs that cannot be imported here."""
    missing = []
    for name in loader["imports"]:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a dotted name whose parent is missing
            found = False
        if not found:
            missing.append(name)
    return missing


def runs_here(artifact: dict[str, Any]) -> bool:
    """Whether the artifact has a loader and everything it imports is installed here."""
    return bool(artifact["loader"]) and not missing_imports(artifact["loader"])


def import_loader(bundle_dir: Path, name: str, loader: dict[str, Any]) -> ModuleType:
    """The format's loader module, imported from its file after its sha256 is checked."""
    path = artifact_path(bundle_dir, loader["file"])
    digest = sha256_of(path)
    if digest != loader["sha256"]:
        message = f"the loader {loader['file']} of {name!r} differs from the manifest's sha256"
        raise BundleError(message)
    spec = importlib.util.spec_from_file_location(f"_bundle_loader_{digest[:16]}", path)
    if spec is None or spec.loader is None:
        message = f"cannot import the loader {loader['file']} of {name!r}"
        raise BundleError(message)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_runner(bundle_dir: Path, name: str, artifact: dict[str, Any]) -> Runner:
    """A function from input arrays (in signature order) to the output array."""
    loader = artifact["loader"]
    if not loader:
        message = f"format {name!r} has no loader: inference.py cannot run it"
        raise BundleError(message)
    missing = missing_imports(loader)
    if missing:
        message = (
            f"format {name!r} needs {', '.join(missing)}: "
            f"pip install -r {BUNDLE_DIR / 'requirements.txt'}"
        )
        raise BundleError(message)
    module = import_loader(bundle_dir, name, loader)
    try:
        runner: Runner = getattr(module, loader["function"])(
            artifact_path(bundle_dir, artifact["file"])
        )
    except Exception as err:  # the runtime's own error on a damaged file: one line, exit 2
        message = f"loading {name!r} with {loader['file']} failed: {type(err).__name__}: {err}"
        raise BundleError(message) from err
    return runner


def input_arrays(manifest: dict[str, Any], values: Any) -> list[np.ndarray]:
    """The inputs as arrays in signature order, with the signature's dtypes."""
    arrays = []
    expected = [spec["name"] for spec in manifest["signature"]["inputs"]]
    if not isinstance(values, dict):
        message = f"inputs must be a JSON object {{input name: nested list}}: {', '.join(expected)}"
        raise BundleError(message)
    missing = [name for name in expected if name not in values]
    if missing:
        message = f"inputs lack {', '.join(missing)}; expected: {', '.join(expected)}"
        raise BundleError(message)
    for spec in manifest["signature"]["inputs"]:
        try:
            array = np.asarray(values[spec["name"]], dtype=np.dtype(spec["dtype"]))
        except (ValueError, TypeError, OverflowError) as err:
            message = f"input {spec['name']!r} is not a rectangular array of {spec['dtype']}: {err}"
            raise BundleError(message) from err
        if array.ndim != len(spec["shape"]):
            message = (
                f"input {spec['name']!r} has {array.ndim} dimensions; "
                f"the model takes {len(spec['shape'])}: {spec['shape']}"
            )
            raise BundleError(message)
        arrays.append(array)
    return arrays


def choose_format(manifest: dict[str, Any], requested: str | None) -> str:
    """``requested``, or the runnable artifact whose loader has the highest priority (the
    first in the manifest on a tie)."""
    artifacts = manifest["artifacts"]
    if requested is not None:
        if requested not in artifacts:
            message = f"format {requested!r} is not in this bundle; it has: {', '.join(artifacts)}"
            raise BundleError(message)
        return requested
    runnable = [name for name, artifact in artifacts.items() if runs_here(artifact)]
    if runnable:
        return str(max(runnable, key=lambda name: artifacts[name]["loader"]["priority"]))
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
    if not arguments.skip_checksum:
        check_sha256(bundle_dir, name, artifact)
    arrays = input_arrays(manifest, values)
    run = load_runner(bundle_dir, name, artifact)
    try:
        logits = np.asarray(run(arrays))
    except Exception as err:  # the runtime's own error (a wrong input size): one line, exit 2
        message = f"running {name!r} failed: {type(err).__name__}: {err}"
        raise BundleError(message) from err
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
    try:
        expected = np.asarray(sample["outputs"][output_name], dtype=np.float64)
    except (ValueError, TypeError, OverflowError) as err:
        message = f"manifest.json: sample.outputs is not a rectangular array of numbers: {err}"
        raise BundleError(message) from err
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
        if not runs_here(artifact):
            reason = (
                f"{', '.join(missing_imports(artifact['loader']))} not installed"
                if artifact["loader"]
                else "no standalone loader (the format needs its exporter to load)"
            )
            print(f"ok   {name}: sha256 matches; outputs not checked: {reason}")
            continue
        try:
            actual = load_runner(bundle_dir, name, artifact)(arrays).astype(np.float64)
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
    parser.add_argument(
        "--skip-checksum",
        action="store_true",
        help="predict even if the artifact's sha256 differs from the manifest's",
    )
    parser.add_argument("--bundle", default=str(BUNDLE_DIR), help="bundle folder")
    arguments = parser.parse_args(argv)
    bundle_dir = Path(arguments.bundle)
    try:
        if arguments.verify:
            return verify(bundle_dir)
        return predict(bundle_dir, arguments)
    except (BundleError, OSError) as err:
        print(f"inference.py: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
