"""Built-in named data sets (pydoc_topics, digits), registered by the treadle_datasets plugin,
and the data module built from a TrainingConfig, as ``treadle train`` builds it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch

import treadle_collators.plugin
import treadle_datasets.plugin
from treadle.config import TrainingConfig
from treadle.data import DataError, UniversalDataModule, list_datasets, load_named_dataset
from treadle.data.datasets import dataset_info
from treadle.data.samples import SizedDataset
from treadle.data.tokenizer import ByteTokenizer
from treadle.errors import ConfigError, UnknownNameError
from treadle.plugins import PluginManager
from treadle.task import TaskSpec
from treadle.testing import isolated_plugin_manager
from treadle_datasets.pydoc_topics import pydoc_documents

DOCS = Path(__file__).resolve().parents[1] / "docs" / "data.md"


@pytest.fixture
def manager() -> PluginManager:
    return isolated_plugin_manager(
        ("collators", treadle_collators.plugin), ("datasets", treadle_datasets.plugin)
    )


def config(**values: Any) -> TrainingConfig:
    options: dict[str, Any] = {"vocab_size": 259, "max_seq_len": 32, "num_workers": 0}
    return TrainingConfig(**{**options, **values})


def test_list_datasets_describes_each_with_source_and_licence() -> None:
    names = [info.name for info in list_datasets()]
    assert names == ["digits", "huggingface", "pydoc_topics"]
    text = DOCS.read_text(encoding="utf-8")
    for info in list_datasets():
        assert info.source
        assert info.licence
        assert f"`{info.name}`" in text, f"docs/data.md does not describe {info.name}"
    assert "PSF" in dataset_info("pydoc_topics").licence
    assert "CC BY 4.0" in dataset_info("digits").licence
    assert dataset_info("digits").provider == "datasets: treadle 0.1.0"


def test_an_unknown_name_lists_the_registered_data_sets_and_the_closest() -> None:
    with pytest.raises(UnknownNameError) as caught:
        load_named_dataset("pydoc_topic")
    message = caught.value.args[0]
    assert message.startswith("Unknown data set 'pydoc_topic'. Registered: digits, huggingface,")
    assert "pydoc_topics (datasets: treadle 0.1.0)" in message
    assert message.endswith("Did you mean 'pydoc_topics'?")


def test_pydoc_documents_are_whole_paragraphs_of_every_topic() -> None:
    from pydoc_data.topics import topics

    documents = pydoc_documents()
    assert len(documents) > 200  # enough units for a 10% validation split
    joined = "".join(doc.values["text"] for doc in documents)
    assert len(joined) > 0.95 * sum(len(text) for text in topics.values())
    assert documents[0].location.startswith("pydoc_data.topics[")


def test_pydoc_topics_gives_full_blocks_of_real_text_split_by_seed() -> None:
    task = TaskSpec.language_modeling(max_seq_len=64)
    train, val = load_named_dataset("pydoc_topics", task_spec=task, seed=3)
    _, other_val = load_named_dataset("pydoc_topics", task_spec=task, seed=4)
    assert len(train) > 5000
    assert 0.07 < len(val) / (len(train) + len(val)) < 0.14
    block = train[0]["input_ids"]
    assert block.dtype == torch.long
    assert block.shape == (64,)
    assert "statement" in " ".join(
        ByteTokenizer().decode(train[i]["input_ids"]) for i in range(0, 200, 10)
    )
    _, again = load_named_dataset("pydoc_topics", task_spec=task, seed=3)
    assert torch.equal(again[5]["input_ids"], val[5]["input_ids"])
    assert not torch.equal(other_val[5]["input_ids"], val[5]["input_ids"])


def test_a_named_data_set_refuses_a_task_it_does_not_serve() -> None:
    with pytest.raises(DataError, match="'pydoc_topics' serves language_modeling"):
        load_named_dataset("pydoc_topics", task_spec=TaskSpec.vision_tiny())


@pytest.fixture(scope="module")
def digits() -> tuple[SizedDataset[Any], SizedDataset[Any]]:
    pytest.importorskip("sklearn")
    return load_named_dataset("digits", seed=0)


@pytest.mark.slow  # importing scikit-learn takes 2-7 s
def test_digits_are_real_8x8_images_in_0_1_with_10_classes(
    digits: tuple[SizedDataset[Any], SizedDataset[Any]],
) -> None:
    train, val = digits
    assert len(train) + len(val) == 1797
    sample = train[0]
    assert sample["pixel_values"].shape == (1, 8, 8)
    assert sample["pixel_values"].dtype == torch.float32
    assert float(sample["pixel_values"].min()) >= 0.0
    assert float(sample["pixel_values"].max()) <= 1.0
    labels = {int(train[i]["label"]) for i in range(len(train))}
    assert labels == set(range(10))


def test_digits_without_scikit_learn_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes the import fail as for a package that is not installed
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DataError, match=r'pip install "treadle\[vision\]"'):
        load_named_dataset("digits")


def test_the_default_config_builds_the_main_job_data(manager: PluginManager) -> None:
    module = UniversalDataModule.from_training_config(config(batch_size=8), plugin_manager=manager)
    assert module.task_spec == TaskSpec.language_modeling(max_seq_len=32)
    train, val = module.train_dataset(), module.val_dataset()
    assert len(train) > 5 * len(val) > 0
    train_loader, _ = module.dataloaders()
    batch = next(iter(train_loader))
    assert batch["input_ids"].shape == (8, 32)
    assert int(batch["input_ids"].max()) < 259


@pytest.mark.slow  # importing scikit-learn takes 2-7 s
def test_digits_config_gives_vision_tiny(
    manager: PluginManager, digits: tuple[SizedDataset[Any], SizedDataset[Any]]
) -> None:
    module = UniversalDataModule.from_training_config(
        config(dataset="digits", task="image_classification", batch_size=16), plugin_manager=manager
    )
    assert module.task_spec == TaskSpec.vision_tiny()
    train_loader, val_loader = module.dataloaders()
    batch = next(iter(train_loader))
    assert batch["pixel_values"].shape == (16, 1, 8, 8)
    assert batch["labels"].shape == (16,)
    assert val_loader is not None
    assert len(module.val_dataset()) == 180


def test_a_task_that_does_not_fit_the_named_data_set_is_a_config_error(
    manager: PluginManager,
) -> None:
    with pytest.raises(ConfigError, match="set task = 'image_classification'"):
        UniversalDataModule.from_training_config(config(dataset="digits"), plugin_manager=manager)


def test_a_vocabulary_smaller_than_the_tokenizer_is_a_config_error(manager: PluginManager) -> None:
    with pytest.raises(ConfigError, match="set vocab_size >= 259"):
        UniversalDataModule.from_training_config(config(vocab_size=100), plugin_manager=manager)


def test_a_data_file_in_the_config_is_read_with_the_configs_task(
    tmp_path: Path, manager: PluginManager
) -> None:
    path = tmp_path / "reviews.jsonl"
    rows = [{"text": f"review {i}", "label": ["bad", "good", "meh"][i % 3]} for i in range(20)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    module = UniversalDataModule.from_training_config(
        config(dataset=str(path), task="classification", validation_split=0.25),
        plugin_manager=manager,
    )
    assert module.task_spec.num_classes == 3
    assert module.task_spec.class_names == ("bad", "good", "meh")
    assert (len(module.train_dataset()), len(module.val_dataset())) == (15, 5)

    lm = UniversalDataModule.from_training_config(config(dataset=str(path)), plugin_manager=manager)
    assert lm.task_spec.task_type == "language_modeling"
    assert lm.task_spec.name == "reviews"


def test_a_name_that_is_neither_built_in_nor_a_file_is_unknown(manager: PluginManager) -> None:
    with pytest.raises(UnknownNameError, match="Unknown data set 'wikitxt'") as caught:
        UniversalDataModule.from_training_config(config(dataset="wikitxt"), plugin_manager=manager)
    assert "Or give the path of a data file (.jsonl," in caught.value.args[0]
    with pytest.raises(UnknownNameError, match="Did you mean 'digits'"):
        UniversalDataModule.from_training_config(config(dataset="digit"), plugin_manager=manager)
    with pytest.raises(DataError, match="data file not found"):
        UniversalDataModule.from_training_config(
            config(dataset="missing/file.jsonl"), plugin_manager=manager
        )


def test_from_training_config_cuts_the_split_to_max_samples() -> None:
    from treadle.config import TrainingConfigBuilder

    config = TrainingConfigBuilder.quick_prototype().build()
    assert (config.max_train_samples, config.max_val_samples) == (3072, 512)
    module = UniversalDataModule.from_training_config(config)
    train, val = module.train_dataset(), module.val_dataset()
    assert (len(train), len(val)) == (3072, 512)
    full = UniversalDataModule.from_training_config(
        attrs.evolve(config, max_train_samples=None, max_val_samples=None)
    )
    assert len(full.train_dataset()) > 3072
    # the first samples of the same split
    assert torch.equal(train[0]["input_ids"], full.train_dataset()[0]["input_ids"])
    assert torch.equal(train[-1]["input_ids"], full.train_dataset()[3071]["input_ids"])
    with pytest.raises(IndexError):
        train[3072]
