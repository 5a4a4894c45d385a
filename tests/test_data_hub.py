"""Hugging Face data sets: a hub name fails at once when offline (RELIABILITY L2); local
copies load through the optional ``datasets`` library."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pytest

import treadle_collators.plugin
import treadle_datasets.plugin
from treadle.data import DataError, UniversalDataModule
from treadle.plugins import PluginManager
from treadle.task import TaskSpec
from treadle.testing import isolated_plugin_manager
from treadle_datasets.hub import check_hub_reachable


@pytest.fixture
def manager() -> PluginManager:
    return isolated_plugin_manager(
        ("collators", treadle_collators.plugin), ("datasets", treadle_datasets.plugin)
    )


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Hugging Face caches that hold nothing, and no proxy."""
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    for name in ("HF_DATASETS_CACHE", "HF_HUB_CACHE", "TREADLE_SKIP_HUB_CHECK"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    return home


def module(manager: PluginManager, task: TaskSpec | None = None) -> UniversalDataModule:
    task = task or TaskSpec.classification("reviews", num_classes=2, max_seq_len=32)
    return UniversalDataModule(task, batch_size=2, num_workers=0, seed=0, plugin_manager=manager)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens there once the socket is closed


def test_a_hub_name_while_offline_fails_clearly_within_a_second(
    manager: PluginManager, empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = module(manager, TaskSpec.language_modeling())
    started = time.perf_counter()
    with pytest.raises(DataError) as caught:
        data.load_huggingface("wikitext", "wikitext-103-v1")
    assert time.perf_counter() - started < 1.0
    message = str(caught.value)
    assert "'wikitext' is a Hugging Face Hub data set" in message
    assert "offline (HF_DATASETS_OFFLINE=1)" in message
    assert "save_to_disk" in message


def test_an_unreachable_hub_counts_as_offline_within_a_second(
    manager: PluginManager, empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    started = time.perf_counter()
    with pytest.raises(DataError, match="cannot be reached: this machine looks offline"):
        module(manager).load_huggingface("imdb")
    assert time.perf_counter() - started < 1.0
    monkeypatch.setenv("TREADLE_SKIP_HUB_CHECK", "1")
    check_hub_reachable("imdb")  # skipped: no error


def test_without_datasets_installed_the_extra_is_named(
    manager: PluginManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    local = tmp_path / "saved"
    local.mkdir()
    with pytest.raises(DataError, match=r'pip install "treadle\[hf\]"'):
        module(manager).load_huggingface(str(local))


ROWS = [{"text": f"review number {i}", "label": i % 2} for i in range(20)]


@pytest.mark.slow  # importing datasets takes 2 s or more
def test_a_saved_dataset_dict_loads_offline_with_its_splits(
    manager: PluginManager, tmp_path: Path
) -> None:
    datasets = pytest.importorskip("datasets")
    files = {"train": tmp_path / "train.jsonl", "validation": tmp_path / "validation.jsonl"}
    files["train"].write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    files["validation"].write_text(
        "".join(json.dumps(row) + "\n" for row in ROWS[:2]), encoding="utf-8"
    )
    # built through load_dataset: Dataset.from_dict fails to fingerprint with some
    # dill/pyarrow pairs (PicklingError on MonthDayNano)
    splits = datasets.load_dataset(
        "json",
        data_files={name: str(path) for name, path in files.items()},
        cache_dir=str(tmp_path / "cache"),
    )
    splits.save_to_disk(tmp_path / "dict")
    train = splits["train"]
    data = module(manager)
    train_loader, val_loader = data.load_huggingface(str(tmp_path / "dict"), max_samples=10)
    assert (len(data.train_dataset()), len(data.val_dataset())) == (10, 2)
    assert val_loader is not None
    assert next(iter(train_loader))["labels"].shape == (2,)

    train.save_to_disk(tmp_path / "single")  # one Dataset: the split is made by the seed
    data.load_huggingface(str(tmp_path / "single"))
    assert (len(data.train_dataset()), len(data.val_dataset())) == (18, 2)

    with pytest.raises(DataError, match=r"has no split 'training' \(splits: train, validation\)"):
        data.load_huggingface(str(tmp_path / "dict"), train_split="training")


@pytest.mark.slow  # importing datasets takes 2 s or more
def test_a_local_data_file_loads_through_datasets(manager: PluginManager, tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    data = module(manager)
    data.load_huggingface(str(path), cache_dir=str(tmp_path / "cache"))
    assert len(data.train_dataset()) + len(data.val_dataset()) == 20

    renamed = tmp_path / "renamed.jsonl"
    renamed.write_text(json.dumps({"body": "x", "label": 0}) + "\n", encoding="utf-8")
    with pytest.raises(
        DataError, match=r"\[train row 0\]: no column 'text' \(columns found: 'body', 'label'\)"
    ):
        data.load_huggingface(str(renamed), cache_dir=str(tmp_path / "cache"))


@pytest.mark.parametrize("name", ["~no_such_user_treadle", "imdb\x00", "x" * 5_000])
def test_L2_a_name_no_path_can_have_is_still_an_offline_error(
    manager: PluginManager, empty_cache: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Found by test_data_fuzz.py: ``Path.expanduser`` raised RuntimeError for an unknown
    ``~user`` and ``Path.exists`` OSError for a name longer than the system allows."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match=r"is a Hugging Face Hub data set and this process is"):
        module(manager, TaskSpec.language_modeling()).load_huggingface(name)


def test_L2_an_empty_name_is_refused_not_read_as_the_working_directory(
    manager: PluginManager,
) -> None:
    with pytest.raises(DataError, match=r"needs dataset_name="):
        module(manager, TaskSpec.language_modeling()).load_huggingface("")
