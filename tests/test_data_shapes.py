"""Data in the shapes PyTorch users have: a ``TensorDataset`` of ``(input, label)`` tuples and a
plain ``list`` of sample dicts train through the Trainer with the task's own collator, exactly
as the same samples given as dicts by a Dataset do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import treadle_collators.plugin
from treadle import hookimpl
from treadle.data import yields_batches
from treadle.engine import Trainer
from treadle.task import TaskSpec

from .docs_examples import docs_examples
from .trainer_fixtures import engine_plugin_manager, needs_engine, small_config

FEATURES = 6
CLASSES = 3


def blobs(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three Gaussian blobs in 6 dimensions: features (size, 6) float32, labels (size,) long."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (size,), generator=generator)
    centers = torch.nn.functional.one_hot(labels, FEATURES).float() * 4
    return centers + torch.randn(size, FEATURES, generator=generator), labels


class DictSamples(Dataset[dict[str, Any]]):
    """The same samples as dicts: what a treadle user wrote before tuples were accepted."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input": self.features[index], "label": int(self.labels[index])}


class LossRecorder:
    def __init__(self) -> None:
        self.losses: list[float] = []

    @hookimpl
    def treadle_on_batch_end(self, loss: torch.Tensor) -> None:
        self.losses.append(float(loss))


def train(tmp_path: Path, train_data: Any, val_data: Any) -> tuple[list[float], dict[str, Any]]:
    """Per-batch losses and final weights of a classification MLP, a plain ``nn.Sequential``,
    trained for 4 epochs with the task's (bundled) collator."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 16), torch.nn.ReLU(), torch.nn.Linear(16, CLASSES)
    )
    recorder = LossRecorder()
    manager = engine_plugin_manager(("collators", treadle_collators.plugin), ("recorder", recorder))
    task = TaskSpec.classification("blobs", num_classes=CLASSES, modality="tabular")
    results = Trainer(
        model, None, small_config(tmp_path, epochs=4), task, device="cpu", plugin_manager=manager
    ).train(train_data, val_data)
    assert results["history"][-1]["val_accuracy"] > 0.8, "three blobs are easy to tell apart"
    return recorder.losses, model.state_dict()


@needs_engine
def test_a_tensor_dataset_and_a_list_of_dicts_train_like_dict_samples(tmp_path: Path) -> None:
    features, labels = blobs(96, seed=0)
    val_features, val_labels = blobs(48, seed=1)
    expected_losses, expected_weights = train(
        tmp_path / "dicts",
        DictSamples(features, labels),
        DictSamples(val_features, val_labels),
    )
    assert len(expected_losses) == 4 * 96 // 8

    tensors = train(
        tmp_path / "tensors",
        TensorDataset(features, labels),
        TensorDataset(val_features, val_labels),
    )
    listed = train(
        tmp_path / "list",
        [{"input": x, "labels": y} for x, y in zip(features, labels, strict=True)],
        [{"input": x, "labels": y} for x, y in zip(val_features, val_labels, strict=True)],
    )
    for losses, weights in (tensors, listed):
        assert losses == expected_losses
        assert all(torch.equal(weights[name], value) for name, value in expected_weights.items())


def test_what_is_batches_and_what_is_samples() -> None:
    features, labels = blobs(8, seed=0)
    samples = [{"input": x, "labels": y} for x, y in zip(features, labels, strict=True)]
    assert not yields_batches(TensorDataset(features, labels))
    assert not yields_batches(samples)
    assert yields_batches(DataLoader(samples, batch_size=4))
    assert yields_batches(tuple(samples))  # any other iterable: ready batches, as before
    assert yields_batches([(features, labels)])  # a list of tuples: batches, as before
    assert yields_batches([])  # nothing to batch: the loop reports "no batch"


@needs_engine
def test_a_list_of_per_sample_tuples_is_refused_with_the_fix(tmp_path: Path) -> None:
    features, labels = blobs(8, seed=0)
    task = TaskSpec.classification("blobs", num_classes=CLASSES, modality="tabular")
    trainer = Trainer(
        torch.nn.Linear(FEATURES, CLASSES),
        None,
        small_config(tmp_path),
        task,
        device="cpu",
        plugin_manager=engine_plugin_manager(("collators", treadle_collators.plugin)),
    )
    with pytest.raises(TypeError, match="Pass a Dataset to let the Trainer collate"):
        trainer.train(list(zip(features, labels, strict=True)), None)


@needs_engine
def test_the_first_example_of_the_data_docs_trains_a_tensor_dataset_and_a_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (example,) = docs_examples("data.md", "tests/test_data_shapes.py")
    monkeypatch.chdir(tmp_path)  # the default config writes checkpoints and treadle.db here
    exec(compile(example, "docs/data.md", "exec"), {"__name__": "docs_example"})
    accuracy = float(capsys.readouterr().out.split("validation accuracy ")[1])
    assert accuracy > 0.9
