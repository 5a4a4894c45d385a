"""ModelRegistry: the spec's examples, measured checkpoints, references, lineage, profiles."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import treadle_sqlite.plugin
from treadle.errors import ConfigError, UnknownNameError
from treadle.model_registry import (
    SERVING_OVERHEAD,
    DuplicateModelError,
    ModelRegistry,
    ModelRegistryEntry,
    RegistryError,
    checkpoint_facts,
    estimate_memory_gb,
)
from treadle.plugins import PluginManager
from treadle.testing import isolated_plugin_manager


@pytest.fixture
def manager() -> PluginManager:
    return isolated_plugin_manager(("sqlite", treadle_sqlite.plugin))


@pytest.fixture
def registry(tmp_path: Path, manager: PluginManager) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models.db", plugin_manager=manager)


def _checkpoint(path: Path, dtype: torch.dtype = torch.float32) -> int:
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Linear(32, 4)).to(dtype)
    optimizer = torch.optim.AdamW(model.parameters())
    torch.save(
        {
            "model_state_dict": model.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "epoch": 3,
        },
        path,
    )
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.mark.slow  # discovers every installed plugin: the spec builds no plugin manager
def test_the_spec_example_and_workflow_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("checkpoints").mkdir()
    _checkpoint(Path("checkpoints/epoch_10.pt"))
    registry = ModelRegistry("models.db")
    model_id = registry.register_model(
        name="transformer-v1",
        version="1.0.0",
        checkpoint_path="checkpoints/epoch_10.pt",
        task_type="language_modeling",
        metrics={"val_loss": 0.38, "perplexity": 1.46},
        config_hash="abc123",
        training_run_id=42,
    )
    registry.promote_model(model_id, "production")
    model = registry.get_model(tag="production")
    assert isinstance(model, ModelRegistryEntry)
    assert (model.model_id, model.training_run_id, model.tags) == (model_id, 42, ("production",))
    second = registry.register_model(
        name="transformer-gpt",
        version="1.0.0",
        checkpoint_path="checkpoints/epoch_10.pt",
        task_type="language_modeling",
        metrics={"val_loss": 0.31},
        config_hash=hashlib.sha256(json.dumps({"d_model": 64}).encode()).hexdigest(),
    )
    comparison = registry.compare_models([model_id, second])
    assert list(comparison[["version", "val_loss"]].itertuples(index=False, name=None)) == [
        ("1.0.0", 0.38),
        ("1.0.0", 0.31),
    ]
    assert "created_at" in comparison.columns
    registry.close()


def test_the_entry_is_frozen_and_serializable(registry: ModelRegistry) -> None:
    model_id = registry.register_model(
        "m", "1.0.0", "m.pt", "classification", {"acc": 0.9}, model_size_mb=1, memory_req_gb=1
    )
    entry = registry.get_model(model_id=model_id)
    with pytest.raises(AttributeError):
        entry.status = "retired"  # type: ignore[misc]
    data = entry.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["tags"] == []
    assert hash(entry) == hash(registry.get_model(model_id=model_id))


def test_size_and_memory_are_measured_from_the_checkpoint(
    tmp_path: Path, registry: ModelRegistry
) -> None:
    path = tmp_path / "epoch_1.pt"
    parameters = _checkpoint(path)
    facts = checkpoint_facts(path)
    assert facts.num_parameters == parameters
    assert facts.parameter_bytes == parameters * 4
    assert facts.size_mb == pytest.approx(path.stat().st_size / 2**20)
    model_id = registry.register_model("m", "1", str(path), "classification")
    entry = registry.get_model(model_id=model_id)
    assert entry.model_size_mb == pytest.approx(path.stat().st_size / 2**20)
    assert entry.memory_req_gb == pytest.approx(parameters * 4 * SERVING_OVERHEAD / 2**30)


def test_the_memory_estimate_follows_the_stored_dtype(tmp_path: Path) -> None:
    parameters = _checkpoint(tmp_path / "half.pt", torch.bfloat16)
    facts = checkpoint_facts(tmp_path / "half.pt")
    assert facts.parameter_bytes == parameters * 2
    assert facts.memory_req_gb == pytest.approx(estimate_memory_gb(parameters * 2))
    assert estimate_memory_gb(2**30) == pytest.approx(1.2)


def test_a_file_torch_cannot_read_is_sized_by_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07" * 4096)
    facts = checkpoint_facts(path)
    assert facts.num_parameters is None
    assert facts.memory_req_gb == pytest.approx(8192 * SERVING_OVERHEAD / 2**30)


def test_a_missing_checkpoint_registers_with_a_warning(
    tmp_path: Path, registry: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="treadle.model_registry"):
        model_id = registry.register_model("m", "1", str(tmp_path / "gone.pt"), "lm")
    assert "gone.pt does not exist" in caplog.text
    entry = registry.get_model(model_id=model_id)
    assert (entry.model_size_mb, entry.memory_req_gb) == (0.0, 0.0)


def test_r1_a_duplicate_version_names_the_first_and_changes_nothing(
    registry: ModelRegistry,
) -> None:
    first = registry.register_model(
        "gpt",
        "1.0.0",
        "a.pt",
        "lm",
        {"val_loss": 0.5},
        tags=["production"],
        model_size_mb=1,
        memory_req_gb=1,
    )
    with pytest.raises(DuplicateModelError, match=rf"'gpt' version '1.0.0'.*model_id {first}"):
        registry.register_model(
            "gpt",
            "1.0.0",
            "b.pt",
            "lm",
            {"val_loss": 0.1},
            tags=["staging"],
            model_size_mb=1,
            memory_req_gb=1,
        )
    entry = registry.get_model(model_id=first)
    assert (entry.checkpoint_path, entry.metrics, entry.tags) == (
        "a.pt",
        {"val_loss": 0.5},
        ("production",),
    )
    with pytest.raises(UnknownNameError):
        registry.get_model(tag="staging")
    assert isinstance(DuplicateModelError("x"), ValueError)


def test_references_by_version_tag_and_name(registry: ModelRegistry) -> None:
    def add(name: str, version: str) -> int:
        return registry.register_model(
            name, version, "m.pt", "lm", model_size_mb=0, memory_req_gb=0
        )

    gpt1, gpt2, bert1 = add("gpt", "1.0.0"), add("gpt", "2.0.0"), add("bert", "1.0.0")
    assert registry.get_model(version="2.0.0").model_id == gpt2
    with pytest.raises(RegistryError, match=r"Several models hold version '1\.0\.0'.*name="):
        registry.get_model(version="1.0.0")
    assert registry.get_model(version="1.0.0", name="bert").model_id == bert1
    assert registry.get_model(name="gpt").model_id == gpt2
    registry.promote_model(gpt1, "production")
    assert registry.get_model(tag="production").model_id == gpt1
    registry.promote_model(bert1, "production")
    with pytest.raises(RegistryError, match="'bert', 'gpt'; pass name="):
        registry.get_model(tag="production")
    with pytest.raises(ConfigError, match="model_id alone"):
        registry.get_model(model_id=gpt1, tag="production")
    with pytest.raises(ConfigError, match="needs model_id, version, tag or name"):
        registry.get_model()
    with pytest.raises(ConfigError, match="model_id must be an integer"):
        registry.get_model(model_id="1")  # type: ignore[arg-type]
    with pytest.raises(UnknownNameError, match="No model holds tag 'canary' of model 'gpt'"):
        registry.get_model(tag="canary", name="gpt")


def test_retiring_removes_tags_and_refuses_promotion(
    registry: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    model_id = registry.register_model("m", "1", "m.pt", "lm", model_size_mb=0, memory_req_gb=0)
    registry.promote_model(model_id, "production")
    with caplog.at_level(logging.WARNING, logger="treadle.model_registry"):
        registry.delete_model(model_id)
    assert "no longer holds production" in caplog.text
    with pytest.raises(RegistryError, match=r"retired and cannot take the tag 'production'"):
        registry.promote_model(model_id, "production")
    assert registry.get_model(model_id=model_id).tags == ()
    registry.set_status(model_id, "active")
    registry.promote_model(model_id, "production")
    assert registry.get_model(tag="production").model_id == model_id
    with pytest.raises(ConfigError, match="status must be one of"):
        registry.set_status(model_id, "archived")
    with pytest.raises(ConfigError, match="'active' or 'experimental'"):
        registry.register_model("m", "2", "m.pt", "lm", status="retired")


def test_list_models_filters_and_limits(registry: ModelRegistry) -> None:
    for index in range(5):
        registry.register_model(
            "a" if index % 2 else "b",
            str(index),
            "m.pt",
            "lm",
            {"loss": float(index)},
            model_size_mb=0,
            memory_req_gb=0,
        )
    assert list(registry.list_models(limit=2)["version"]) == ["4", "3"]
    assert list(registry.list_models(name="a")["version"]) == ["3", "1"]
    registry.delete_model(1)
    assert list(registry.list_models(status="retired")["model_id"]) == [1]
    assert len(registry.list_models()) == 5, "retired versions are listed too"
    with pytest.raises(ConfigError, match="status must be one of"):
        registry.list_models(status="gone")


def test_a_registered_data_profile_comes_back_for_drift(registry: ModelRegistry) -> None:
    from treadle.engine.drift import build_profile, compute_drift

    rng = np.random.default_rng(0)
    training = {"length": rng.normal(0, 1, 500), "tokens": rng.integers(0, 10, 500).astype(float)}
    profile = build_profile(training, bins=10)
    model_id = registry.register_model(
        "m", "1", "m.pt", "lm", data_profile=profile, model_size_mb=0, memory_req_gb=0
    )
    stored = registry.get_data_profile(model_id)
    assert stored == profile
    shifted = build_profile(
        {"length": rng.normal(3, 1, 500), "tokens": training["tokens"]}, reference=stored
    )
    drift = compute_drift(stored, shifted)
    assert "length" in drift.affected_features
    plain = registry.register_model(
        "m", "2", "m.pt", "lm", data_profile=profile.to_dict(), model_size_mb=0, memory_req_gb=0
    )
    assert registry.get_data_profile(plain) == profile
    none = registry.register_model("m", "3", "m.pt", "lm", model_size_mb=0, memory_req_gb=0)
    assert registry.get_data_profile(none) is None
    with pytest.raises(ConfigError, match="not a valid treadle data profile"):
        registry.register_model("m", "4", "m.pt", "lm", data_profile={"features": {}})
    with pytest.raises(UnknownNameError):
        registry.get_data_profile(999)


def test_lineage_follows_parents_both_ways(registry: ModelRegistry) -> None:
    def add(version: str, parent: int | None = None) -> int:
        return registry.register_model(
            "m", version, "m.pt", "lm", parent_model_id=parent, model_size_mb=0, memory_req_gb=0
        )

    base = add("1")
    tuned = add("2", base)
    retrained = add("3", tuned)
    other = add("4", base)
    lineage = registry.get_lineage(tuned)
    assert [e.model_id for e in lineage.ancestors] == [base]
    assert [e.model_id for e in lineage.descendants] == [retrained]
    assert [e.model_id for e in registry.get_lineage(base).descendants] == [tuned, retrained, other]
    assert [e.model_id for e in registry.get_lineage(retrained).ancestors] == [tuned, base]


def test_export_formats_as_the_export_command_records_them(registry: ModelRegistry) -> None:
    model_id = registry.register_model("m", "1", "m.pt", "lm", model_size_mb=0, memory_req_gb=0)
    registry.add_export_formats(model_id, ["torchscript", "pytorch"])
    registry.add_export_formats(model_id, ["pytorch", "onnx"])
    assert registry.get_model(model_id=model_id).export_formats == (
        "torchscript",
        "pytorch",
        "onnx",
    )
    with pytest.raises(UnknownNameError):
        registry.add_export_formats(999, ["onnx"])
