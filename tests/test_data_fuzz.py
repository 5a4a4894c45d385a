"""Property tests of the data loaders under hostile input (RELIABILITY L1, L2).

L1: arbitrary bytes, arbitrary JSON and arbitrary file names given to ``read_records`` and
``UniversalDataModule.load_from_file`` (.jsonl, .json, .csv, .tsv, .txt, .parquet) either load
or raise :class:`~treadle.errors.DataError` naming the file (and the line or byte offset where
the damage has one); never another exception, never a hang, never a partial result, and the
file is left as it was. L2: an arbitrary data-set name while offline is a clear DataError
within a second.

Each property tries a bounded number of inputs (``EXAMPLES``) with a deadline generous enough
for a loaded 2-core machine: a hang fails it, a slow neighbour does not.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import treadle_collators.plugin
import treadle_datasets.plugin
from treadle.config import TrainingConfig
from treadle.data import DataError, Record, UniversalDataModule, read_records
from treadle.errors import UnknownNameError
from treadle.plugins import PluginManager
from treadle.task import TaskSpec
from treadle.testing import isolated_plugin_manager

#: Inputs each property tries: ~1-3 s apiece on this machine.
EXAMPLES = 150
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=5),  # a hang fails; a loaded machine does not
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,  # the same inputs on every run: a failure here is a bug, not luck
)

SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt", ".parquet")
#: A message names where in the file, or says the whole file is the problem.
WHERE = re.compile(r":\d+|byte offset \d+|\[item \d+\]|\[row \d+\]")
WHOLE_FILE = (
    "the file is empty",
    "holds no records",
    "expected a JSON list of objects",
    "column lists differ in length",
    "not a readable Parquet file",
    "reading Parquet files needs pyarrow",
    "cannot split",
    "token(s) in all",
)

MANAGER: PluginManager = isolated_plugin_manager(
    ("collators", treadle_collators.plugin), ("datasets", treadle_datasets.plugin)
)


@contextmanager
def data_file(suffix: str, content: bytes) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="treadle-fuzz-") as folder:
        path = Path(folder) / f"data{suffix}"
        path.write_bytes(content)
        yield path


def read_checked(path: Path, read: Callable[[Path], Any]) -> Any:
    """``read(path)``, asserting the L1 promises: a DataError naming the file (and where in
    it), or a result; the file unchanged either way."""
    before = path.read_bytes(), path.stat().st_mtime_ns
    try:
        result = read(path)
    except DataError as err:
        message = str(err)
        assert str(path) in message, message
        assert WHERE.search(message) or any(part in message for part in WHOLE_FILE), message
        result = err
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before, "the loader changed the file"
    return result


# -- arbitrary bytes ---------------------------------------------------------------------------

VALID = {
    ".jsonl": b'{"text": "a good one", "label": 1}\n{"text": "a bad one", "label": 0}\n',
    ".json": b'[{"text": "a good one", "label": 1}, {"text": "a bad one", "label": 0}]',
    ".csv": b'text,label\n"a good, one",1\na bad one,0\n',
    ".tsv": b"text\tlabel\na good one\t1\na bad one\t0\n",
    ".txt": b"a good one\na bad one\n",
}


def _valid_parquet() -> bytes:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        return VALID[".jsonl"]
    sink = pyarrow.BufferOutputStream()
    table = pyarrow.table({"text": ["a good one", "a bad one"], "label": [1, 0]})
    pyarrow.parquet.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


VALID[".parquet"] = _valid_parquet()


#: Inputs random generation rarely reaches: nesting past the recursion limit, an integer past
#: Python's 4,300-digit conversion limit, JSON escapes of lone surrogates, NUL, BOM, CR.
HOSTILE = [
    b"[" * 100_000,
    b'{"text": ' + b"[" * 5_000 + b"]" * 5_000 + b', "label": 1}',
    b'{"text": "x", "label": 1' + b"0" * 5_000 + b"}",
    b'[{"text": "x", "label": 1' + b"0" * 5_000 + b"}]",
    b'{"text": "\\ud800 alone", "label": 1}',
    b'{"text": "\\udc00", "label": 0}\n{"text": "fine", "label": 1}',
    b'[{"text": "\\ud83d", "label": 1}]',
    b'{"text": "a\\u0000b", "label": 1}',
    b"\xef\xbb\xbftext,label\r\nfine,1\r\n",
    b'text,label\n"a\x00b",1\n',
    b"text,label\n" + b'"' + b"x" * 200_000 + b'",1\n',
    b"text\rlabel\r",
    b"\xff\xfe" + "text\n".encode("utf-16-le"),
]


@st.composite
def damaged(draw: st.DrawFn, suffix: str) -> bytes:
    """Random bytes, random text, a known-hostile input, or a valid file of ``suffix`` with
    bytes cut, inserted or flipped: most fuzzing finds its bugs near valid input."""
    kind = draw(st.sampled_from(["bytes", "text", "hostile", "mutated", "mutated"]))
    if kind == "hostile":
        return draw(st.sampled_from(HOSTILE))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "text":
        return draw(st.text(max_size=200)).encode("utf-8")
    content = bytearray(VALID.get(suffix, VALID[".jsonl"]))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(content)))
        action = draw(st.sampled_from(["cut", "insert", "flip"]))
        if action == "cut":
            del content[position : position + draw(st.integers(1, 8))]
        elif action == "insert":
            content[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif position < len(content):
            content[position] ^= 1 << draw(st.integers(0, 7))
    return bytes(content)


def bytes_for_each_suffix() -> st.SearchStrategy[tuple[str, bytes]]:
    return st.sampled_from(SUFFIXES).flatmap(
        lambda suffix: st.tuples(st.just(suffix), damaged(suffix))
    )


@FUZZ
@given(case=bytes_for_each_suffix())
def test_L1_arbitrary_bytes_load_or_raise_a_data_error_naming_the_file(
    case: tuple[str, bytes],
) -> None:
    suffix, content = case
    with data_file(suffix, content) as path:
        result = read_checked(path, read_records)
        if not isinstance(result, DataError):
            assert result, "an empty result must be an error"
            assert all(isinstance(record, Record) for record in result)
            assert all(record.location.startswith(str(path)) for record in result)


@FUZZ
@given(case=bytes_for_each_suffix())
def test_L1_arbitrary_bytes_through_the_data_module_keep_nothing_of_a_failed_load(
    case: tuple[str, bytes],
) -> None:
    suffix, content = case
    task = TaskSpec.classification("fuzz", num_classes=2, max_seq_len=16)
    module = UniversalDataModule(task, batch_size=2, num_workers=0, plugin_manager=MANAGER)
    with data_file(".jsonl", VALID[".jsonl"] * 3) as good:
        module.load_from_file(good, validation_split=0.5)
    before = [module.train_dataset()[i] for i in range(len(module.train_dataset()))]
    with data_file(suffix, content) as path:
        result = read_checked(path, lambda p: module.load_from_file(p, validation_split=0.5))
    if isinstance(result, DataError):  # the last good load is what the module still holds
        after = [module.train_dataset()[i] for i in range(len(module.train_dataset()))]
        assert repr(after) == repr(before)


# -- arbitrary JSON ----------------------------------------------------------------------------

#: Text as JSON can carry it: lone surrogates included (json.dumps escapes them as \\ud800).
json_text = st.text(max_size=20) | st.text(st.characters(categories=["Cs"]), max_size=2)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | json_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(json_text, children, max_size=4)
    ),
    max_leaves=12,
)
#: Rows that look like data: the columns the task reads, holding anything JSON can.
json_rows = st.dictionaries(
    st.sampled_from(["text", "label", "image", "target", "other"]), json_values, max_size=4
)


@FUZZ
@given(value=json_values | st.lists(json_rows, max_size=5))
def test_L1_arbitrary_json_documents_load_as_written_or_raise_a_data_error(value: Any) -> None:
    content = json.dumps(value)
    with data_file(".json", content.encode()) as path:
        result = read_checked(path, read_records)
    if isinstance(result, list) and isinstance(value, list):
        assert _as_json([dict(record.values) for record in result]) == _as_json(value)


@FUZZ
@given(lines=st.lists(json_values | json_rows, min_size=1, max_size=6))
def test_L1_arbitrary_json_lines_load_as_written_or_raise_a_data_error(lines: list[Any]) -> None:
    content = "\n".join(json.dumps(line) for line in lines).encode()
    with data_file(".jsonl", content) as path:
        result = read_checked(path, read_records)
    if isinstance(result, list):
        assert _as_json([dict(record.values) for record in result]) == _as_json(lines)


TASKS = {
    "classification": TaskSpec.classification("fuzz", num_classes=3, max_seq_len=16),
    "classification by name": TaskSpec.classification(
        "fuzz", num_classes=2, class_names=("bad", "good"), max_seq_len=16
    ),
    "language_modeling": TaskSpec.language_modeling("fuzz", max_seq_len=8),
    "vision": TaskSpec.vision_tiny("fuzz"),
    "sequence_to_sequence": TaskSpec.sequence_to_sequence("fuzz"),
}


@FUZZ
@given(rows=st.lists(json_rows, min_size=1, max_size=6), task=st.sampled_from(sorted(TASKS)))
def test_L1_arbitrary_json_rows_become_samples_or_a_data_error_naming_the_line(
    rows: list[dict[str, Any]], task: str
) -> None:
    module = UniversalDataModule(
        TASKS[task], batch_size=2, num_workers=0, seed=0, plugin_manager=MANAGER
    )
    content = "\n".join(json.dumps(row) for row in rows).encode()
    with data_file(".jsonl", content) as path:
        result = read_checked(path, lambda p: module.load_from_file(p, validation_split=0))
    if not isinstance(result, DataError):
        train_loader, _ = result
        for batch in train_loader:  # every sample the module built is one its collator takes
            assert "labels" in batch


# -- arbitrary names ----------------------------------------------------------------------------

names = st.text(max_size=300) | st.sampled_from(
    ["", "~", "~no_such_user_treadle/data.jsonl", "a\x00b.jsonl", "x" * 5000 + ".csv", "/"]
)


@FUZZ
@given(name=names)
def test_L1_an_arbitrary_file_name_is_a_data_error_naming_it(name: str) -> None:
    with (
        tempfile.TemporaryDirectory() as folder,
        _chdir(Path(folder)),
        pytest.raises(DataError) as caught,
    ):
        read_records(name)  # nothing in an empty folder: no name can be read
    message = str(caught.value)
    assert "data file" in message or "is not a file" in message, message


@FUZZ
@given(name=names)
def test_L1_an_arbitrary_dataset_name_in_a_config_is_unknown_or_a_data_error(name: str) -> None:
    if name in MANAGER.registry("datasets"):
        return  # a real data set: loading it is not what this tests
    config = TrainingConfig(dataset=name, num_workers=0, vocab_size=259)
    with (
        tempfile.TemporaryDirectory() as folder,
        _chdir(Path(folder)),
        pytest.raises((UnknownNameError, DataError)) as caught,
    ):
        UniversalDataModule.from_training_config(config, plugin_manager=MANAGER)
    message = str(caught.value)
    assert any(words in message for words in ("data set", "data file", "is not a file")), message


@FUZZ
@given(name=names)
def test_L2_an_arbitrary_hub_name_while_offline_fails_clearly_within_a_second(name: str) -> None:
    module = UniversalDataModule(
        TaskSpec.language_modeling("fuzz"), num_workers=0, plugin_manager=MANAGER
    )
    with tempfile.TemporaryDirectory() as folder, _chdir(Path(folder)), _offline(Path(folder)):
        if name and os.path.exists(os.path.expanduser(name)):
            return  # a folder that exists is a local copy, not a hub name
        started = time.perf_counter()
        with pytest.raises(DataError) as caught:
            module.load_huggingface(name)
        assert time.perf_counter() - started < 1.0
    assert "offline" in str(caught.value) or "dataset_name" in str(caught.value)


@contextmanager
def _chdir(folder: Path) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        yield


@contextmanager
def _offline(home: Path) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        patch.setenv("HF_HOME", str(home / "hf-home"))
        for variable in ("HF_DATASETS_CACHE", "HF_HUB_CACHE"):
            patch.delenv(variable, raising=False)
        yield


def _as_json(value: Any) -> str:
    """``value`` as JSON means it: NaN equal to NaN, an escaped surrogate pair one character."""
    return json.dumps(json.loads(json.dumps(value)))
