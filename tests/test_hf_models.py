"""The ``hf`` model plugin: transformers models by name, from config (nothing downloaded), with
PEFT adapters; trained, resumed and exported through treadle's own run assembly."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.trainer_fixtures import needs_main_job
from treadle import hookimpl
from treadle.config.training import PluginsConfig
from treadle.errors import ConfigError
from treadle.model_loading import load_checkpoint_model
from treadle.plugins import PluginManager, make_plugin_manager
from treadle.run_setup import build_run_setup, resolve_config

transformers = pytest.importorskip("transformers")

TINY_GPT2 = {"n_layer": 2, "n_embd": 32, "n_head": 2}
TINY_BERT = {
    "num_hidden_layers": 2,
    "hidden_size": 32,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
LORA = {"method": "lora", "r": 4, "lora_alpha": 8, "target_modules": ["c_attn"]}


class CrashAt:
    def __init__(self, step: int) -> None:
        self.step = step

    @hookimpl
    def treadle_on_batch_end(self, trainer: Any) -> None:
        if trainer.global_step == self.step:
            msg = f"crash after step {self.step}"
            raise RuntimeError(msg)


class Losses:
    def __init__(self) -> None:
        self.values: list[torch.Tensor] = []

    @hookimpl
    def treadle_on_batch_end(self, loss: torch.Tensor) -> None:
        self.values.append(loss.clone())


def gpt2_overrides(run_dir: Path, **more: Any) -> dict[str, Any]:
    return {
        "model_type": "hf",
        "hf.model": "gpt2",
        "hf.config": TINY_GPT2,
        "dataset": "pydoc_topics",
        "max_seq_len": 32,
        "max_train_samples": 48,
        "max_val_samples": 8,
        "batch_size": 8,
        "epochs": 2,
        "save_every_n_steps": 4,
        "checkpoint_dir": str(run_dir),
        "experiment_location": None,
        "loggers": (),
        "device": "cpu",
        **more,
    }


def bert_overrides(run_dir: Path, data: Path, **more: Any) -> dict[str, Any]:
    return {
        "model_type": "hf",
        "hf.model": "bert",
        "hf.config": TINY_BERT,
        "dataset": str(data),
        "task": "classification",
        "max_seq_len": 16,
        "batch_size": 8,
        "epochs": 2,
        "save_every_n_steps": 3,
        "checkpoint_dir": str(run_dir),
        "experiment_location": None,
        "loggers": (),
        "device": "cpu",
        **more,
    }


def text_classification_file(path: Path) -> Path:
    """Short texts labelled by topic: 40 rows of two classes."""
    rows = []
    for index in range(40):
        label = index % 2
        words = "cats purr and sleep" if label else "stocks fell on tuesday"
        rows.append({"text": f"{words} {index}", "label": label})
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    return path


def manager(*extra: tuple[str, object]) -> PluginManager:
    return make_plugin_manager(plugins=list(extra))


def run(overrides: dict[str, Any], *extra: tuple[str, object]) -> tuple[Any, dict[str, Any]]:
    """Build the run as ``treadle train`` does, train it; (setup, results)."""
    plugins = manager(*extra)
    config = resolve_config("quick_prototype", overrides=overrides).config
    setup = build_run_setup(config, plugins)
    results = setup.make_trainer(plugins).train(setup.train_data, setup.val_data)
    return setup, results


def assert_resumes_exactly(
    overrides_of: Any, tmp_path: Path, crash_at: int, checkpoint_step: int, steps_per_epoch: int
) -> Any:
    whole_losses = Losses()
    whole, _ = run(overrides_of(tmp_path / "whole"), ("record_losses", whole_losses))
    first, second = Losses(), Losses()
    with pytest.raises(RuntimeError, match="crash after step"):
        run(overrides_of(tmp_path / "part"), ("crash", CrashAt(crash_at)), ("record_losses", first))
    resumed, _ = run(
        {**overrides_of(tmp_path / "part"), "resume": "auto"}, ("record_losses", second)
    )
    # the resumed attempt replays the batches after the checkpoint, bit for bit
    replayed = first.values[:checkpoint_step] + second.values
    assert len(replayed) == len(whole_losses.values) == 2 * steps_per_epoch
    for index, (got, expected) in enumerate(zip(replayed, whole_losses.values, strict=True)):
        assert torch.equal(got, expected), f"batch {index}"
    expected_state = whole.model.state_dict()
    for name, tensor in resumed.model.state_dict().items():
        if isinstance(tensor, torch.Tensor):
            assert torch.equal(tensor, expected_state[name]), name
    return resumed


def export_and_verify(setup: Any, tmp_path: Path) -> Path:
    from treadle.export import create_export_bundle, read_manifest

    bundle = create_export_bundle(
        setup.model,
        setup.model_config,
        setup.task_spec,
        setup.config,
        output_dir=tmp_path / "exports",
        formats=["onnx"],
    )
    manifest = read_manifest(bundle)
    assert manifest["status"] == "complete", manifest.get("errors")
    checked = subprocess.run(
        [sys.executable, str(bundle / "inference.py"), "--verify"],
        cwd=bundle,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return bundle


@needs_main_job
@pytest.mark.slow
def test_tiny_gpt2_from_config_trains_resumes_exactly_and_exports_to_onnx(tmp_path: Path) -> None:
    resumed = assert_resumes_exactly(
        gpt2_overrides, tmp_path, crash_at=5, checkpoint_step=4, steps_per_epoch=6
    )
    model = resumed.model.model
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert model.config.n_layer == 2
    assert model.config.vocab_size == 259  # the byte tokenizer's vocabulary (quick_prototype)
    assert model.config.n_positions == 32
    export_and_verify(resumed, tmp_path)


@needs_main_job
@pytest.mark.slow
def test_tiny_bert_classifier_from_config_trains_resumes_exactly_and_exports_to_onnx(
    tmp_path: Path,
) -> None:
    data = text_classification_file(tmp_path / "topics.jsonl")
    resumed = assert_resumes_exactly(
        lambda run_dir: bert_overrides(run_dir, data),
        tmp_path,
        crash_at=4,
        checkpoint_step=3,
        steps_per_epoch=5,
    )
    model = resumed.model.model
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.config.num_labels == 2
    export_and_verify(resumed, tmp_path)


@needs_main_job
@pytest.mark.slow
def test_lora_trains_only_adapters_checkpoints_them_alone_and_exports_merged(
    tmp_path: Path,
) -> None:
    overrides = gpt2_overrides(tmp_path / "run", **{"hf.peft": LORA, "epochs": 1})
    plugins = manager()
    config = resolve_config("quick_prototype", overrides=overrides).config
    setup = build_run_setup(config, plugins)
    before = {name: tensor.clone() for name, tensor in setup.model.model.state_dict().items()}
    results = setup.make_trainer(plugins).train(setup.train_data, setup.val_data)
    after = setup.model.model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed
    assert all(".lora_A." in name or ".lora_B." in name for name in changed), changed
    # lora_B starts at zero: every B of the 2 blocks moved
    assert {name for name in changed if ".lora_B." in name} == {
        name for name in before if ".lora_B." in name
    }

    checkpoint = torch.load(results["best_checkpoint"], weights_only=True)
    saved = checkpoint["model_state_dict"]
    assert set(saved) == {"_extra_state"} | {f"model.{name}" for name in before if "lora_" in name}
    assert saved["_extra_state"]["base"]["model"] == "gpt2"
    assert saved["_extra_state"]["base"]["peft"]["r"] == 4

    # the registry's and `treadle export`'s way back: base rebuilt from the checkpoint's
    # config (whatever the RNG did meanwhile), adapters loaded into it
    torch.rand(1000)
    rebuilt, _, _ = load_checkpoint_model(results["best_checkpoint"], plugins)
    inputs = torch.randint(0, 259, (2, 12))
    setup.model.eval()
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(inputs), setup.model(inputs))
        merged = setup.model.for_export()
        assert not any("lora_" in name for name, _ in merged.named_parameters())
        torch.testing.assert_close(merged(inputs), setup.model(inputs), rtol=1e-5, atol=1e-5)
    bundle = export_and_verify(setup, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["class"].endswith("HFModel")  # merged: no peft model inside


@needs_main_job
def test_adapters_refuse_a_base_built_with_another_seed(tmp_path: Path) -> None:
    overrides = gpt2_overrides(tmp_path, **{"hf.peft": LORA})
    plugins = manager()
    config = resolve_config("quick_prototype", overrides=overrides).config
    saved = build_run_setup(config, plugins).model.state_dict()
    other = resolve_config("quick_prototype", overrides={**overrides, "random_seed": 7}).config
    with pytest.raises(ConfigError, match=r"trained on another base model"):
        build_run_setup(other, plugins).model.load_state_dict(saved)


def test_the_peft_loss_recognises_the_adapter_model_and_checks_only_adapters_train() -> None:
    from treadle.config import TrainingConfig
    from treadle.task import TaskSpec
    from treadle_hf.models import build_hf_model
    from treadle_losses.peft import PEFTAwareLoss

    config = TrainingConfig(
        vocab_size=64,
        max_seq_len=16,
        plugins=PluginsConfig(options={"hf": {"model": "gpt2", "config": TINY_GPT2, "peft": LORA}}),
    )
    model = build_hf_model(config, TaskSpec.language_modeling(max_seq_len=16))
    loss = PEFTAwareLoss()
    loss.prepare_model(model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == loss.adapter_names(model) == model.adapter_names
    next(p for name, p in model.named_parameters() if "wte" in name).requires_grad_(True)
    with pytest.raises(RuntimeError, match="were unfrozen"):
        loss.check_frozen()


def test_weights_load_from_a_local_folder(tmp_path: Path) -> None:
    from treadle.config import TrainingConfig
    from treadle.task import TaskSpec
    from treadle_hf.models import build_hf_model

    config = transformers.AutoConfig.for_model("gpt2", vocab_size=64, n_positions=16, **TINY_GPT2)
    saved = transformers.AutoModelForCausalLM.from_config(config)
    saved.save_pretrained(tmp_path / "tiny-gpt2")
    training = TrainingConfig(
        plugins=PluginsConfig(options={"hf": {"model": str(tmp_path / "tiny-gpt2")}})
    )
    loaded = build_hf_model(training, TaskSpec.language_modeling(max_seq_len=16))
    assert loaded.reference["source"] == "folder"
    for name, tensor in saved.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name


def test_a_hub_name_offline_fails_within_a_second_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from treadle.config import TrainingConfig
    from treadle.task import TaskSpec
    from treadle_hf.models import build_hf_model, import_transformers

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    config = TrainingConfig(
        plugins=PluginsConfig(options={"hf": {"model": "openai-community/gpt2"}})
    )
    # what is timed is the wait for the hub, not importing transformers' model classes
    import_transformers().AutoModelForCausalLM  # noqa: B018
    started = time.monotonic()
    with pytest.raises(
        ConfigError, match=r"offline \(HF_HUB_OFFLINE=1\).*hf.model = an architecture"
    ):
        build_hf_model(config, TaskSpec.language_modeling())
    assert time.monotonic() - started < 1.0


def test_unreachable_hub_fails_within_a_second(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from treadle_hf.hub import check_hub_model

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"cannot be reached.*HF_HUB_OFFLINE=1"):
        check_hub_model("acme/model")
    assert time.monotonic() - started < 1.0


def test_options_are_checked_before_anything_is_built() -> None:
    from treadle.config import TrainingConfig
    from treadle.task import TaskSpec
    from treadle_hf.models import build_hf_model

    task = TaskSpec.language_modeling()
    with pytest.raises(ConfigError, match=r"needs plugins\.options\.hf\.model"):
        build_hf_model(TrainingConfig(), task)
    unknown = TrainingConfig(plugins=PluginsConfig(options={"hf": {"model": "gpt2", "layers": 2}}))
    with pytest.raises(ConfigError, match="unknown option"):
        build_hf_model(unknown, task)
    typo = TrainingConfig(plugins=PluginsConfig(options={"hf": {"model": "gtp2"}}))
    with pytest.raises(ConfigError, match="neither an architecture"):
        build_hf_model(typo, task)


def test_dotted_set_keys_become_plugin_options() -> None:
    resolved = resolve_config(
        overrides=[
            "model_type=hf",
            "hf.model=gpt2",
            'hf.config={"n_layer": 2}',
            "plugins.options.mlflow.experiment=exp",
        ]
    )
    assert resolved.config.plugins.options == {
        "hf": {"model": "gpt2", "config": {"n_layer": 2}},
        "mlflow": {"experiment": "exp"},
    }
    assert resolved.sources["plugins"] == "override"


def test_discovery_imports_neither_torch_nor_transformers() -> None:
    probe = (
        "import sys, treadle_hf.plugin, treadle_mlflow.plugin, treadle_tensorboard.plugin;"
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'mlflow', 'tensorboard')"
        " if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
