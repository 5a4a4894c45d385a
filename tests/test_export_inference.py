"""A bundle's inference.py reading what it is given: any bytes or JSON as manifest.json, or as an
input file, end in its own clear error (BundleError, exit status 2), never another exception
and never a hang (issue 14, "Beyond the known list")."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from treadle.export.templates import inference

SHA = "0" * 64

VALID: dict[str, Any] = {
    "manifest_version": 2,
    "status": "complete",
    "task": {"name": "t", "class_names": ["a", "b"]},
    "signature": {
        "inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 2]}],
    },
    "sample": {"inputs": {"input_ids": [[1, 2, 3]]}, "outputs": {"logits": [[0.5, -0.5]]}},
    "tolerance": {"rtol": 1e-4, "atol": 1e-4},
    "artifacts": {
        "onnx": {
            "file": "artifacts/model.onnx",
            "sha256": SHA,
            "runtime": "onnxruntime",
            "loader": {
                "file": "loaders/treadle_onnx.bundle_loader.py",
                "function": "load",
                "sha256": SHA,
                "imports": ["a_module_nobody_installs"],
                "priority": 30,
            },
        },
        "pytorch": {"file": "artifacts/model.pytorch.pt", "sha256": SHA, "loader": None},
    },
}

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=25,
)
# Every path (list of keys) into VALID, to replace one value with arbitrary JSON.
PATHS: list[tuple[Any, ...]] = []


def _collect(value: Any, path: tuple[Any, ...]) -> None:
    PATHS.append(path)
    if isinstance(value, dict):
        for key, item in value.items():
            _collect(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _collect(item, (*path, index))


_collect(VALID, ())
PROPERTY = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def bundle_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


def _read(bundle: Path, data: bytes) -> dict[str, Any] | None:
    """load_manifest on ``data``: the manifest, or None after a BundleError with a message."""
    (bundle / "manifest.json").write_bytes(data)
    try:
        return inference.load_manifest(bundle)
    except inference.BundleError as err:
        message = str(err)
    assert message.strip()
    return None


def _use(manifest: dict[str, Any]) -> None:
    """What predict and verify do with a manifest before running anything: only BundleError."""
    with contextlib.suppress(inference.BundleError):
        inference.choose_format(manifest, None)
    try:
        arrays = inference.input_arrays(manifest, manifest["sample"]["inputs"])
    except inference.BundleError:
        return
    logits = np.zeros((1, 3), dtype=np.float32) if arrays else np.zeros((0,))
    inference.predictions(manifest["task"], logits)


def test_the_valid_manifest_reads_back() -> None:
    with tempfile.TemporaryDirectory() as folder:
        manifest = _read(Path(folder), json.dumps(VALID).encode())
    assert manifest == VALID
    assert manifest is not None
    _use(manifest)


@PROPERTY
@given(data=st.binary(max_size=2048))
def test_any_bytes_as_manifest_give_a_bundle_error_or_a_manifest(
    bundle_dir: Path, data: bytes
) -> None:
    _read(bundle_dir, data)


@PROPERTY
@given(document=JSON)
def test_any_json_as_manifest_gives_a_bundle_error_or_a_usable_manifest(
    bundle_dir: Path, document: Any
) -> None:
    manifest = _read(bundle_dir, json.dumps(document).encode())
    if manifest is not None:
        _use(manifest)


@PROPERTY
@given(path=st.sampled_from(PATHS), replacement=JSON)
def test_a_valid_manifest_with_any_field_replaced_stays_a_clear_error_or_usable(
    bundle_dir: Path, path: tuple[Any, ...], replacement: Any
) -> None:
    document: Any = copy.deepcopy(VALID)
    if path:
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = replacement
    else:
        document = replacement
    manifest = _read(bundle_dir, json.dumps(document).encode())
    if manifest is not None:
        _use(manifest)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000, "nested too deeply"),
        ('{"manifest_version": 1}', "manifest_version 1"),
        ("\udcff".encode("utf-8", "surrogatepass").decode("latin-1"), "not valid JSON"),
        ('{"manifest_version": 2, "artifacts": {"x": {"file": "../../etc/passwd"', "not valid"),
        ("1" * 5000, "not valid JSON"),
    ],
)
def test_known_hostile_manifests_name_the_problem(text: str, message: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "manifest.json").write_text(text, encoding="latin-1")
        with pytest.raises(inference.BundleError, match=message):
            inference.load_manifest(Path(folder))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (("artifacts", "onnx", "file"), "../outside.onnx", r"artifacts\["),
        (("artifacts", "onnx", "file"), "/etc/passwd", "relative path inside the bundle"),
        (("artifacts", "onnx", "loader", "file"), "a\u0000b", "relative path"),
        (("artifacts", "onnx", "loader", "function"), "__import__", "public function name"),
        (("tolerance", "atol"), math.inf, "a number >= 0"),
        (("signature", "inputs", 0, "dtype"), "object", "numeric dtype"),
    ],
)
def test_a_manifest_naming_paths_outside_or_code_is_refused(
    field: tuple[Any, ...], value: Any, message: str
) -> None:
    document: Any = copy.deepcopy(VALID)
    parent = document
    for key in field[:-1]:
        parent = parent[key]
    parent[field[-1]] = value
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "manifest.json").write_text(json.dumps(document))
        with pytest.raises(inference.BundleError, match=message):
            inference.load_manifest(Path(folder))


@PROPERTY
@given(document=JSON)
def test_any_json_as_an_input_file_gives_a_bundle_error_or_arrays(document: Any) -> None:
    try:
        arrays = inference.input_arrays(copy.deepcopy(VALID), document)
    except inference.BundleError as err:
        arrays, message = [], str(err)
    else:
        message = ""
    assert message.strip() or [array.dtype for array in arrays] == [np.dtype("int64")]


def test_main_prints_one_line_and_exits_2_for_a_damaged_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "manifest.json").write_text('{"manifest_version": 2, "artifacts": []}')

    for arguments in (["--verify"], []):
        assert inference.main([*arguments, "--bundle", str(tmp_path)]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.strip().splitlines() == [
            "inference.py: manifest.json: artifacts must be a non-empty object"
        ]
