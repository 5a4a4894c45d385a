"""The console and jsonl loggers: real files, buffering, strict JSON, logging not printing."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

import treadle_loggers.plugin
from treadle.config import TrainingConfig
from treadle.errors import ConfigError
from treadle.testing import check_hookimpls, isolated_plugin_manager
from treadle_loggers.console import ConsoleLogger, format_metrics
from treadle_loggers.jsonl import JsonlLogger


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_jsonl_writes_one_object_per_call_with_slashed_names_as_keys(tmp_path: Path) -> None:
    sink = JsonlLogger(run_dir=tmp_path / "run")
    sink.log_metrics({"train/batch_loss": 0.5, "train/learning_rate": 1e-4}, step=10)
    sink.log_metrics({"val_loss": 0.4, "epoch": 1}, step=20)
    sink.close()
    first, second = read_lines(tmp_path / "run" / "metrics.jsonl")
    assert first["step"] == 10
    assert first["train/batch_loss"] == 0.5
    assert first["train/learning_rate"] == 1e-4
    assert isinstance(first["time"], float)
    assert (second["step"], second["val_loss"], second["epoch"]) == (20, 0.4, 1)


def test_jsonl_buffers_and_writes_every_n_lines(tmp_path: Path) -> None:
    sink = JsonlLogger(run_dir=tmp_path, flush_every=3)
    path = tmp_path / "metrics.jsonl"
    for step in range(2):
        sink.log_metrics({"loss": 1.0}, step)
    assert not path.exists()
    sink.log_metrics({"loss": 1.0}, 2)
    assert len(read_lines(path)) == 3
    sink.log_metrics({"loss": 1.0}, 3)
    assert len(read_lines(path)) == 3
    sink.close()
    assert [line["step"] for line in read_lines(path)] == [0, 1, 2, 3]


def test_jsonl_writes_non_finite_values_as_null(tmp_path: Path) -> None:
    sink = JsonlLogger(run_dir=tmp_path)
    sink.log_metrics({"loss": math.nan, "norm": math.inf}, 0)
    sink.close()
    text = (tmp_path / "metrics.jsonl").read_text(encoding="utf-8")
    assert "NaN" not in text
    assert "Infinity" not in text
    assert read_lines(tmp_path / "metrics.jsonl")[0]["loss"] is None


def test_jsonl_appends_when_a_run_resumes(tmp_path: Path) -> None:
    for step in (1, 2):
        sink = JsonlLogger(run_dir=tmp_path)
        sink.log_metrics({"loss": 0.1}, step)
        sink.close()
    assert [line["step"] for line in read_lines(tmp_path / "metrics.jsonl")] == [1, 2]


def test_jsonl_refuses_reserved_names_a_closed_file_and_no_run_dir(tmp_path: Path) -> None:
    sink = JsonlLogger(run_dir=tmp_path)
    with pytest.raises(ValueError, match="step"):
        sink.log_metrics({"step": 1.0}, 0)
    sink.close()
    sink.close()  # a second close does nothing
    with pytest.raises(ValueError, match="closed"):
        sink.log_metrics({"loss": 1.0}, 0)
    with pytest.raises(ConfigError, match="run_dir"):
        JsonlLogger(run_dir=None)


def test_console_logs_one_info_line_and_prints_nothing(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.INFO, logger="treadle_loggers.console"):
        ConsoleLogger().log_metrics({"train/batch_loss": 0.42131, "lr": 1e-4}, 120)
        ConsoleLogger(TrainingConfig(epochs=4)).log_metrics({"epoch": 2, "val_loss": 0.5}, 120)
    first, second = caplog.records
    assert first.levelno == logging.INFO
    assert first.getMessage() == "step 120 | train/batch_loss=0.4213 lr=1.000e-04"
    assert second.getMessage() == "epoch 3/4 (step 120) | val_loss=0.5000", "counted from 1"
    assert capsys.readouterr() == ("", "")


def test_console_formats_non_finite_values() -> None:
    assert format_metrics({"loss": math.nan}, 0) == "step 0 | loss=nan"


def test_the_plugin_registers_its_loggers_built_the_trainer_way(tmp_path: Path) -> None:
    assert check_hookimpls(treadle_loggers.plugin) == []
    registry = isolated_plugin_manager(("loggers", treadle_loggers.plugin)).registry("loggers")
    assert registry.names() == ["console", "jsonl", "progress"]
    config = TrainingConfig()
    for name in registry.names():
        sink = registry.create(name, training_config=config, run_dir=tmp_path)
        sink.log_metrics({"loss": 1.0}, 0)
        sink.close()
    assert read_lines(tmp_path / "metrics.jsonl")[0]["loss"] == 1.0
