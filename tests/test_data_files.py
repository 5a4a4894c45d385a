"""Data files: every format into samples and batches, and every bad input named by file and
line, column or byte offset before anything is returned (RELIABILITY L1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import treadle_collators.plugin
from treadle.data import DataError, UniversalDataModule, read_records
from treadle.data.tokenizer import ByteTokenizer
from treadle.plugins import PluginManager
from treadle.task import TaskSpec
from treadle.testing import isolated_plugin_manager

ROWS: list[dict[str, Any]] = [
    {"text": "the first review, good", "label": 1},
    {"text": "second one, bad", "label": 0},
    {"text": "third: fine", "label": 1},
    {"text": "fourth, awful", "label": 0},
    {"text": "fifth — très bien", "label": 1},
]


@pytest.fixture
def manager() -> PluginManager:
    return isolated_plugin_manager(("collators", treadle_collators.plugin))


def module(
    manager: PluginManager, task: TaskSpec | None = None, **options: Any
) -> UniversalDataModule:
    task = task or TaskSpec.classification("reviews", num_classes=2, max_seq_len=32)
    options = {"batch_size": 2, "num_workers": 0, "seed": 0, **options}
    return UniversalDataModule(task, plugin_manager=manager, **options)


def write(path: Path, rows: list[dict[str, Any]], kind: str) -> Path:
    if kind == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    elif kind == "json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    elif kind == "json-columns":
        columns = {key: [row[key] for row in rows] for key in rows[0]}
        path.write_text(json.dumps(columns), encoding="utf-8")
    elif kind == "json-data":
        path.write_text(json.dumps({"data": rows}), encoding="utf-8")
    elif kind == "csv":
        lines = ["text,label"] + [f'"{row["text"]}",{row["label"]}' for row in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif kind == "tsv":
        lines = ["text\tlabel"] + [f"{row['text']}\t{row['label']}" for row in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


SUFFIX = {"jsonl": ".jsonl", "json": ".json", "json-columns": ".json", "json-data": ".json"}


@pytest.mark.parametrize("kind", ["jsonl", "json", "json-columns", "json-data", "csv", "tsv"])
def test_each_format_gives_the_same_classification_samples(
    tmp_path: Path, manager: PluginManager, kind: str
) -> None:
    path = write(tmp_path / f"data{SUFFIX.get(kind, '.' + kind)}", ROWS, kind)
    data = module(manager)
    train_loader, val_loader = data.load_from_file(path, validation_split=0.2)
    assert val_loader is not None
    train, val = data.train_dataset(), data.val_dataset()
    assert (len(train), len(val)) == (4, 1)
    samples = [train[i] for i in range(4)] + [val[0]]
    tokenizer = ByteTokenizer()
    texts = sorted(tokenizer.decode(sample["input_ids"]) for sample in samples)
    assert texts == sorted(row["text"] for row in ROWS)
    by_text = {row["text"]: row["label"] for row in ROWS}
    for sample in samples:
        assert sample["label"] == by_text[tokenizer.decode(sample["input_ids"])]
    batch = next(iter(train_loader))
    assert batch["labels"].dtype == torch.long
    assert batch["labels"].shape == (2,)
    assert batch["input_ids"].shape[0] == 2
    assert batch["attention_mask"].shape == batch["input_ids"].shape


def test_txt_lines_become_language_modeling_blocks(tmp_path: Path, manager: PluginManager) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("first line\n\nsecond line\r\nthird\n", encoding="utf-8")
    records = read_records(path)
    assert [(r.location.rsplit(":", 1)[1], r.values["text"]) for r in records] == [
        ("1", "first line"),
        ("3", "second line"),
        ("4", "third"),
    ]
    data = module(manager, TaskSpec.language_modeling(max_seq_len=8))
    train_loader, val_loader = data.load_from_file(path, validation_split=0)
    assert val_loader is None
    stream = torch.cat(
        [data.train_dataset()[i]["input_ids"] for i in range(len(data.train_dataset()))]
    )
    assert ByteTokenizer().decode(stream) == "first linesecond linethird"
    assert stream.tolist().count(1) == 3  # one begin token per line
    batch = next(iter(train_loader))
    assert batch["input_ids"].shape == (2, 8)


def test_text_and_label_columns_can_be_named(tmp_path: Path, manager: PluginManager) -> None:
    rows = [{"review": row["text"], "stars": row["label"]} for row in ROWS]
    path = write(tmp_path / "named.jsonl", rows, "jsonl")
    data = module(manager)
    data.load_from_file(path, validation_split=0.2, text_column="review", label_column="stars")
    assert len(data.train_dataset()) == 4


def test_class_names_map_text_labels(tmp_path: Path, manager: PluginManager) -> None:
    rows = [
        {"text": "a", "label": "neg"},
        {"text": "b", "label": "pos"},
        {"text": "c", "label": "pos"},
    ]
    path = write(tmp_path / "names.jsonl", rows, "jsonl")
    task = TaskSpec.classification("sentiment", num_classes=2, class_names=["neg", "pos"])
    data = module(manager, task)
    data.load_from_file(path, validation_split=0)
    assert [data.train_dataset()[i]["label"] for i in range(3)] == [0, 1, 1]


def test_the_split_depends_only_on_the_seed(tmp_path: Path, manager: PluginManager) -> None:
    rows = [{"text": f"row {i}", "label": i % 2} for i in range(40)]
    path = write(tmp_path / "many.jsonl", rows, "jsonl")

    def val_texts(seed: int) -> list[str]:
        data = module(manager, seed=seed)
        data.load_from_file(path, validation_split=0.25)
        val = data.val_dataset()
        return [ByteTokenizer().decode(val[i]["input_ids"]) for i in range(len(val))]

    assert len(val_texts(1)) == 10
    assert val_texts(1) == val_texts(1)
    assert val_texts(1) != val_texts(2)


def test_vision_and_sequence_to_sequence_records(tmp_path: Path, manager: PluginManager) -> None:
    images = [{"pixel_values": [[0, 128], [255, 64]], "label": i % 3} for i in range(4)]
    path = write(tmp_path / "images.jsonl", images, "jsonl")
    task = TaskSpec(name="tiny", modality="vision", task_type="image_classification", num_classes=3)
    data = module(manager, task)
    train_loader, _ = data.load_from_file(path, validation_split=0)
    batch = next(iter(train_loader))
    assert batch["pixel_values"].shape == (2, 1, 2, 2)
    assert float(batch["pixel_values"].max()) <= 1.0  # uint8 scaled by the collator

    pairs = [{"text": f"source {i}", "target": f"target {i}"} for i in range(3)]
    path = write(tmp_path / "pairs.jsonl", pairs, "jsonl")
    data = module(manager, TaskSpec.sequence_to_sequence(max_source_len=16, max_target_len=16))
    train_loader, _ = data.load_from_file(path, validation_split=0)
    batch = next(iter(train_loader))
    assert {"input_ids", "decoder_input_ids", "labels"} <= set(batch)


def test_parquet_files_are_read_with_pyarrow(tmp_path: Path, manager: PluginManager) -> None:
    parquet = pytest.importorskip("pyarrow.parquet")
    pyarrow = pytest.importorskip("pyarrow")
    path = tmp_path / "data.parquet"
    parquet.write_table(pyarrow.Table.from_pylist(ROWS), path)
    data = module(manager)
    data.load_from_file(path, validation_split=0.2)
    assert len(data.train_dataset()) == 4


# -- L1: bad input is named, and nothing partial is returned -----------------------------------


def load_error(manager: PluginManager, path: Path, **options: Any) -> str:
    data = module(manager)
    with pytest.raises(DataError) as caught:
        data.load_from_file(path, **options)
    with pytest.raises(DataError, match="no data loaded yet"):
        data.train_dataset()  # nothing partial was kept
    return str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path, manager: PluginManager) -> None:
    message = load_error(manager, tmp_path / "absent.jsonl")
    assert "data file not found" in message
    assert "absent.jsonl" in message


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_an_empty_file_is_named(tmp_path: Path, manager: PluginManager, content: bytes) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    message = load_error(manager, path)
    assert str(path) in message
    assert "empty" in message or "no records" in message


def test_an_empty_csv_with_only_a_header_is_named(tmp_path: Path, manager: PluginManager) -> None:
    path = tmp_path / "header.csv"
    path.write_text("text,label\n", encoding="utf-8")
    assert "no records" in load_error(manager, path)


def test_a_malformed_jsonl_line_is_named_by_file_and_line(
    tmp_path: Path, manager: PluginManager
) -> None:
    path = tmp_path / "bad.jsonl"
    lines = (
        [json.dumps(row) for row in ROWS[:2]]
        + ['{"text": "oops", "label": 1']
        + [json.dumps(ROWS[3])]
    )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    message = load_error(manager, path)
    assert f"{path}:3: malformed JSON line" in message


def test_a_jsonl_line_that_is_not_an_object_is_named(
    tmp_path: Path, manager: PluginManager
) -> None:
    path = tmp_path / "list.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n[1, 2]\n", encoding="utf-8")
    assert f"{path}:2: expected a JSON object" in load_error(manager, path)


def test_malformed_json_is_named_by_line_and_column(tmp_path: Path, manager: PluginManager) -> None:
    path = tmp_path / "bad.json"
    path.write_text(
        '[\n  {"text": "a", "label": 1},\n  {"text": "b" "label": 0}\n]\n', encoding="utf-8"
    )
    message = load_error(manager, path)
    assert f"{path}:3: malformed JSON" in message
    assert "column" in message


def test_a_csv_row_with_too_many_fields_is_named(tmp_path: Path, manager: PluginManager) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("text,label\ngood,1\nunquoted, comma,0\nfine,1\n", encoding="utf-8")
    message = load_error(manager, path)
    assert f"{path}:3: malformed CSV: 3 fields where the header has 2 (text, label)" in message


def test_an_unterminated_csv_quote_is_named(tmp_path: Path, manager: PluginManager) -> None:
    path = tmp_path / "quote.csv"
    path.write_text('text,label\ngood,1\n"never closed,0\n', encoding="utf-8")
    message = load_error(manager, path)
    assert str(path) in message
    assert "malformed CSV" in message


def test_a_cp1252_file_is_named_with_its_byte_offset(
    tmp_path: Path, manager: PluginManager
) -> None:
    path = tmp_path / "latin.jsonl"
    content = '{"text": "fine", "label": 1}\n{"text": "caf\u00e9 cr\u00e8me", "label": 0}\n'
    data = content.encode("cp1252")
    path.write_bytes(data)
    offset = data.index(b"\xe9")
    message = load_error(manager, path)
    assert f"{path}: not valid UTF-8 at byte offset {offset} (line 2" in message
    assert "iconv" in message


def test_a_missing_text_column_names_the_columns_found(
    tmp_path: Path, manager: PluginManager
) -> None:
    path = write(tmp_path / "cols.jsonl", [{"body": "x", "label": 0}], "jsonl")
    message = load_error(manager, path, validation_split=0)
    assert f"{path}:1: no column 'text' (columns found: 'body', 'label')" in message
    assert "text_column=" in message


def test_a_missing_label_column_names_the_line(tmp_path: Path, manager: PluginManager) -> None:
    rows: list[dict[str, Any]] = [ROWS[0], ROWS[1], {"text": "no label here"}]
    path = write(tmp_path / "labels.jsonl", rows, "jsonl")
    message = load_error(manager, path, validation_split=0)
    assert f"{path}:3: no column 'label' (columns found: 'text')" in message


def test_bad_values_are_named(tmp_path: Path, manager: PluginManager) -> None:
    path = write(tmp_path / "range.jsonl", [ROWS[0], {"text": "x", "label": 7}], "jsonl")
    assert f"{path}:2: label 7 is outside 0..1" in load_error(manager, path, validation_split=0)
    path = write(tmp_path / "type.jsonl", [{"text": 3, "label": 0}], "jsonl")
    assert f"{path}:1: column 'text' holds int 3, expected text" in load_error(
        manager, path, validation_split=0
    )
    path = write(tmp_path / "name.jsonl", [{"text": "x", "label": "maybe"}], "jsonl")
    assert "'maybe'" in load_error(manager, path, validation_split=0)


def test_an_unknown_suffix_is_named(tmp_path: Path, manager: PluginManager) -> None:
    path = tmp_path / "data.xml"
    path.write_text("<a/>", encoding="utf-8")
    assert "unknown data file type '.xml'" in load_error(manager, path)


# -- found by the property tests of test_data_fuzz.py (RELIABILITY L1) ---------------------------


def test_L1_json_nested_past_the_recursion_limit_is_named_by_line_and_column(
    tmp_path: Path, manager: PluginManager
) -> None:
    path = tmp_path / "deep.json"
    path.write_bytes(b'[{"text": "x", "label": 1},\n' + b"[" * 100_000)
    message = load_error(manager, path)
    assert f"{path}:2: JSON nested 100001 levels deep at line 2, column 100000" in message
    assert "flatten the data" in message
    path = tmp_path / "deep.jsonl"
    path.write_bytes(b'{"text": "x", "label": 1}\n{"text": ' + b"[" * 5_000 + b"]" * 5_000 + b"}")
    assert f"{path}:2: JSON nested 5001 levels deep at column 5009" in load_error(manager, path)


def test_L1_a_number_longer_than_python_reads_is_named_by_line_and_column(
    tmp_path: Path, manager: PluginManager
) -> None:
    path = tmp_path / "long.jsonl"
    path.write_bytes(
        b'{"text": "fine", "label": 1}\n{"text": "x", "label": 1' + b"0" * 5_000 + b"}"
    )
    message = load_error(manager, path)
    assert f"{path}:2: a JSON number of more than 4300 digits at column 4324" in message
    assert "store longer numbers as text" in message


def test_L1_an_escaped_half_surrogate_in_a_text_is_named_by_line(
    tmp_path: Path, manager: PluginManager
) -> None:
    path = tmp_path / "surrogate.jsonl"
    path.write_text('{"text": "fine", "label": 1}\n{"text": "a\\ud800b", "label": 0}\n')
    message = load_error(manager, path, validation_split=0)
    assert f"{path}:2: column 'text' holds '\\ud800' at character 1, half of a surrogate" in message


def test_L1_too_few_records_to_split_names_the_file(tmp_path: Path, manager: PluginManager) -> None:
    path = write(tmp_path / "one.jsonl", ROWS[:1], "jsonl")
    message = load_error(manager, path, validation_split=0.5)
    assert message.startswith(f"{path}: cannot split 1 item into training and validation")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nul\x00byte.jsonl", "cannot be opened: embedded null byte"),
        ("x" * 5_000 + ".jsonl", "cannot be opened: File name too long"),
        ("~no_such_user_treadle/data.jsonl", "data file not found: ~no_such_user_treadle"),
    ],
)
def test_L1_a_file_name_no_file_can_have_is_a_data_error(
    manager: PluginManager, name: str, expected: str
) -> None:
    assert expected in load_error(manager, Path(name))
