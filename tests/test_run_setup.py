"""Run assembly as a library: configs resolved from plain values, the run's parts, run folders;
and the resume probe that ``verify-resume`` loads instead of flags of ``treadle train``."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.trainer_fixtures import needs_main_job
from treadle.cli import main
from treadle.errors import ConfigError
from treadle.run_setup import build_run_setup, next_run_dir, parse_override, resolve_config
from treadle_cli.commands.verify_resume import probe_environment
from treadle_cli.resume_probe import PROBE_TARGET, RECORD_ENV, STOP_AT_ENV, ResumeProbe

TINY = {
    "d_model": 32,
    "num_heads": 2,
    "d_ff": 64,
    "num_layers": 1,
    "max_seq_len": 32,
    "max_train_samples": 48,
    "max_val_samples": 16,
    "experiment_location": None,
    "loggers": ("jsonl",),
}


def test_resolve_config_takes_plain_values_and_names_each_source(tmp_path: Path) -> None:
    config_file = tmp_path / "run.toml"
    config_file.write_text("epochs = 7\nlearning_rate = 0.002\nbatch_size = 4\n", encoding="utf-8")
    resolved = resolve_config(
        "baseline",
        config_file,
        overrides={"learning_rate": 3e-4, "epochs": 5},
        fields={"epochs": 2, "device": None},
    )
    assert resolved.config.epochs == 2
    assert resolved.config.learning_rate == 3e-4
    assert resolved.config.batch_size == 4
    assert resolved.sources["epochs"] == "field epochs"
    assert resolved.sources["learning_rate"] == "override"
    assert resolved.sources["batch_size"] == f"file {config_file}"
    assert resolved.sources["device"] != "field device", "None fields are left out"
    assert resolved.sources["weight_decay"] in ("default", "preset baseline")


def test_resolve_config_reads_key_value_texts_and_labels_them_as_asked() -> None:
    resolved = resolve_config(
        overrides=["learning_rate=3e-4", 'loggers=["jsonl"]'], override_label="flag --set"
    )
    assert resolved.config.loggers == ("jsonl",)
    assert resolved.sources["learning_rate"] == "flag --set"
    assert resolved.sources["d_model"] == "preset quick_prototype"
    with pytest.raises(ConfigError, match="flag --set 'epochs': expected KEY=VALUE"):
        resolve_config(overrides=["epochs"], override_label="flag --set")
    with pytest.raises(ConfigError, match="Unknown preset 'fast'"):
        resolve_config("fast")
    with pytest.raises(ConfigError, match="lerning_rate"):
        resolve_config(overrides={"lerning_rate": 0.1})


def test_parse_override_reads_json_then_plain_text() -> None:
    assert parse_override("epochs=3") == ("epochs", 3)
    assert parse_override("betas=[0.9, 0.95]") == ("betas", (0.9, 0.95))
    assert parse_override("run_name=nightly") == ("run_name", "nightly")
    with pytest.raises(ConfigError, match="NaN and infinities are refused"):
        parse_override("learning_rate=NaN")


def test_next_run_dir_numbers_runs_and_resumes_the_newest(tmp_path: Path) -> None:
    assert next_run_dir(tmp_path, "gpt", resume=False) == tmp_path / "gpt"
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "epoch_001.pt").write_bytes(b"x")
    assert next_run_dir(tmp_path, "gpt", resume=False) == tmp_path / "gpt-2"
    assert next_run_dir(tmp_path, "gpt", resume=True) == tmp_path / "gpt"
    with pytest.raises(ConfigError, match="no run named 'bert'"):
        next_run_dir(tmp_path, "bert", resume=True)


@needs_main_job
def test_build_run_setup_gives_the_model_data_and_a_trainer(tmp_path: Path) -> None:
    from treadle.plugins import make_plugin_manager

    overrides: dict[str, Any] = {**TINY, "checkpoint_dir": str(tmp_path / "run")}
    config = resolve_config(overrides=overrides, fields={"epochs": 1}).config
    manager = make_plugin_manager()
    setup = build_run_setup(config, manager)
    again = build_run_setup(config, manager)
    assert setup.config is config
    assert setup.task_spec.task_type == "language_modeling"
    assert len(setup.train_data) == 48
    assert len(setup.val_data) == 16
    assert setup.model_config.d_model == 32
    first, second = setup.model.state_dict(), again.model.state_dict()
    assert all((first[name] == second[name]).all() for name in first), "seeded weights"
    trainer = setup.make_trainer(manager)
    assert trainer.training_config is config


# -- the resume probe -------------------------------------------------------------------------


def test_train_has_no_test_only_flags(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("--record", "--kill-at-step"):
        with pytest.raises(SystemExit) as caught:
            main(["train", flag, "1", "--plan"])
        assert caught.value.code == 2
        assert f"unrecognized arguments: {flag}" in capsys.readouterr().err


def test_probe_environment_loads_the_probe_beside_the_users_plugins(tmp_path: Path) -> None:
    record = tmp_path / "part1.json"
    env = probe_environment(
        record, 5, {"TREADLE_PLUGINS": "acme_treadle.extra", STOP_AT_ENV: "9", "HOME": "/h"}
    )
    assert env["TREADLE_PLUGINS"] == f"acme_treadle.extra,{PROBE_TARGET}"
    assert env[RECORD_ENV] == str(record)
    assert env[STOP_AT_ENV] == "5"
    assert env["HOME"] == "/h"
    assert STOP_AT_ENV not in probe_environment(record, None, {STOP_AT_ENV: "9"})


def test_the_probe_reads_its_settings_from_the_environment(tmp_path: Path) -> None:
    probe = ResumeProbe.from_environment({RECORD_ENV: str(tmp_path / "r.json"), STOP_AT_ENV: "3"})
    assert probe.record == tmp_path / "r.json"
    assert probe.stop_at_step == 3
    assert ResumeProbe.from_environment({}).record is None
    with pytest.raises(ConfigError, match=STOP_AT_ENV):
        ResumeProbe.from_environment({RECORD_ENV: "r.json", STOP_AT_ENV: "0"})


class _View:
    def __init__(self, model: Any) -> None:
        self.global_step = 0
        self.model = model


def test_the_probe_records_losses_and_parameters_and_stops_at_its_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    sent: list[tuple[int, int]] = []
    monkeypatch.setattr("os.kill", lambda pid, signum: sent.append((pid, signum)))
    model = torch.nn.Linear(2, 1)
    view = _View(model)
    probe = ResumeProbe(tmp_path / "record.json", stop_at_step=2)
    for step in (1, 2, 3):
        view.global_step = step
        probe.treadle_on_batch_end(trainer=view, loss=torch.tensor(0.5 * step))  # type: ignore[arg-type]
    probe.treadle_on_training_end(trainer=view)  # type: ignore[arg-type]
    record = json.loads((tmp_path / "record.json").read_text(encoding="utf-8"))
    assert record["losses"] == [[1, 0.5], [2, 1.0], [3, 1.5]]
    assert len(record["parameters"]) == 64
    assert [signum for _, signum in sent] == [signal.SIGTERM], "once, at step 2"
