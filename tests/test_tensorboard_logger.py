"""The ``tensorboard`` logger plugin, read back with TensorBoard's own event reader."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch

from tests.trainer_fixtures import (
    Blobs,
    TinyClassifier,
    classification_task,
    engine_plugin_manager,
    needs_engine,
    small_config,
)
from treadle import hookimpl
from treadle.config.training import PluginsConfig
from treadle.engine.trainer import Trainer
from treadle.errors import ConfigError
from treadle.plugins import PluginManager

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
)


def read_events(log_dir: Path) -> EventAccumulator:
    """Every event of ``log_dir`` as TensorBoard loads it (no sampling: size guidance 0)."""
    accumulator = EventAccumulator(
        str(log_dir), size_guidance={"scalars": 0, "tensors": 0}, purge_orphaned_data=True
    )
    accumulator.Reload()
    return accumulator


def scalars(accumulator: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


class CrashAt:
    """Fails the run at the batch after optimizer step ``step`` (a crash, not a stop)."""

    def __init__(self, step: int) -> None:
        self.step = step

    @hookimpl
    def treadle_on_batch_end(self, trainer: Any) -> None:
        if trainer.global_step == self.step:
            msg = f"crash after step {self.step}"
            raise RuntimeError(msg)


def manager(*extra: tuple[str, object]) -> PluginManager:
    import treadle_tensorboard.plugin

    built = engine_plugin_manager(("tensorboard", treadle_tensorboard.plugin), *extra)
    built.registry("collators").register("stack", torch.utils.data.default_collate)
    return built


def train(run_dir: Path, *, resume: str | None = None, crash_at: int | None = None) -> Any:
    config = small_config(
        run_dir,
        epochs=2,
        log_every_n_steps=1,
        save_every_n_steps=4,
        resume=resume,
        plugins=PluginsConfig(options={"tensorboard": {}}),
    )
    extra = [("crash", CrashAt(crash_at))] if crash_at is not None else []
    torch.manual_seed(0)
    task = attrs.evolve(classification_task(), collator="stack")
    trainer = Trainer(
        TinyClassifier(), None, config, task, device="cpu", plugin_manager=manager(*extra)
    )
    return trainer.train(Blobs(64, seed=0), Blobs(32, seed=1))


@needs_engine
def test_a_run_writes_scalars_at_their_steps_with_hparams_and_config(tmp_path: Path) -> None:
    results = train(tmp_path / "run")
    events = read_events(tmp_path / "run" / "tensorboard")
    tags = events.Tags()
    losses = scalars(events, "train/batch_loss")
    assert [step for step, _ in losses] == list(range(1, 17))  # 8 batches a epoch, 2 epochs
    rates = scalars(events, "train/learning_rate")
    assert len(rates) == 16
    assert rates[0][1] > 0
    epoch_losses = scalars(events, "val_loss")
    assert [step for step, _ in epoch_losses] == [8, 16]
    expected = [row["val_loss"] for row in results["history"]]
    assert [value for _, value in epoch_losses] == pytest.approx(expected, rel=1e-6)
    assert [step for step, _ in scalars(events, "gradient_norm")] == [8, 16]
    assert {"train_loss", "learning_rate"} <= set(tags["scalars"])
    # the config as text, and the HParams dashboard's three summaries
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads("\n".join(line[4:] for line in text.splitlines()))["epochs"] == 2
    plugin_tags = events.summary_metadata
    hparam_tags = {
        tag for tag, meta in plugin_tags.items() if meta.plugin_data.plugin_name == "hparams"
    }
    assert hparam_tags == {
        "_hparams_/experiment",
        "_hparams_/session_start_info",
        "_hparams_/session_end_info",
    }


@needs_engine
def test_a_resume_continues_the_event_directory_without_duplicate_steps(tmp_path: Path) -> None:
    reference = train(tmp_path / "whole")
    with pytest.raises(RuntimeError, match="crash after step 11"):
        train(tmp_path / "run", crash_at=11)
    interrupted = scalars(read_events(tmp_path / "run" / "tensorboard"), "train/batch_loss")
    assert [step for step, _ in interrupted] == list(range(1, 12))  # 9-11: after the checkpoint
    train(tmp_path / "run", resume="auto")  # continues from the checkpoint at step 8

    log_dir = tmp_path / "run" / "tensorboard"
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 2  # one directory, two files
    resumed = read_events(log_dir)
    whole = read_events(tmp_path / "whole" / "tensorboard")
    for tag in ("train/batch_loss", "train/learning_rate", "val_loss", "train_loss"):
        got, expected = scalars(resumed, tag), scalars(whole, tag)
        assert [step for step, _ in got] == [step for step, _ in expected], tag
        assert [value for _, value in got] == [value for _, value in expected], tag
    assert reference["global_step"] == 16


def test_drift_scores_and_every_numeric_figure_reach_tensorboard(tmp_path: Path) -> None:
    from treadle.engine.drift import build_profile
    from treadle.engine.metrics import MetricsEngine
    from treadle_tensorboard import TensorBoardLogger

    config = small_config(tmp_path, plugins=PluginsConfig(options={"tensorboard": {}}))
    sink = TensorBoardLogger(config, run_dir=tmp_path)
    engine = MetricsEngine(loggers=[sink])
    generator = torch.Generator().manual_seed(0)
    reference = build_profile({"x": torch.randn(500, generator=generator)})
    shifted = build_profile({"x": torch.randn(500, generator=generator) + 3.0}, reference=reference)
    drift = engine.log_epoch(
        epoch=0,
        train_metrics={"loss": 1.0},
        val_metrics={"loss": 2.0},
        learning_rate=1e-3,
        gradient_norm=0.5,
        reference_profile=reference,
        current_profile=shifted,
        step=7,
    )
    engine.close()
    events = read_events(tmp_path / "tensorboard")
    assert scalars(events, "drift_js_divergence") == [(7, pytest.approx(drift.js_divergence))]
    assert scalars(events, "gradient_norm") == [(7, 0.5)]


def test_nan_values_are_kept_and_the_step_never_writes(tmp_path: Path) -> None:
    from treadle_tensorboard import TensorBoardLogger

    sink = TensorBoardLogger(small_config(tmp_path), run_dir=tmp_path)
    sink.log_metrics({"val_loss": math.nan}, 3)
    assert not (tmp_path / "tensorboard").exists()  # buffered: written by the logger's thread
    sink.close()
    ((step, value),) = scalars(read_events(tmp_path / "tensorboard"), "val_loss")
    assert step == 3
    assert math.isnan(value)
    with pytest.raises(ValueError, match="closed"):
        sink.log_metrics({"val_loss": 1.0}, 4)


def test_unknown_options_are_refused_naming_the_known_ones(tmp_path: Path) -> None:
    from treadle_tensorboard import TensorBoardLogger

    config = small_config(tmp_path, plugins=PluginsConfig(options={"tensorboard": {"logdir": "x"}}))
    with pytest.raises(ConfigError, match=r"unknown option.*logdir; known: flush_seconds"):
        TensorBoardLogger(config, run_dir=tmp_path)


def test_options_switch_the_logger_on_for_that_run_only() -> None:
    import treadle_tensorboard.plugin
    from treadle.engine.binding import configure_run

    built = engine_plugin_manager(("tensorboard", treadle_tensorboard.plugin))
    on = small_config(Path("x"), plugins=PluginsConfig(options={"tensorboard": {}}))
    assert configure_run(built, on).logger_names == ["tensorboard"]
    assert configure_run(built, small_config(Path("x"))).logger_names == []
