"""MetricsEngine and MetricsTracker: history, alerts, drift, confidence, loggers."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import treadle_loggers.plugin
from treadle.engine.drift import build_profile
from treadle.engine.metrics import AlertConfig, MetricsEngine, confidence_metrics
from treadle.engine.tracker import MetricsTracker
from treadle.errors import PluginLoadError
from treadle.plugins import PluginManager
from treadle.testing import isolated_plugin_manager
from treadle_loggers.jsonl import JsonlLogger


class RecordingLogger:
    """A real metric sink that keeps what it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, float], int]] = []
        self.closed = False

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.calls.append((dict(metrics), step))

    def close(self) -> None:
        self.closed = True


def log(
    engine: MetricsEngine,
    epoch: int,
    val_loss: float,
    accuracy: float = 0.9,
    gradient_norm: float = 1.0,
    **profiles: Any,
) -> Any:
    return engine.log_epoch(
        epoch=epoch,
        train_metrics={"loss": val_loss},
        val_metrics={"loss": val_loss, "accuracy": accuracy},
        learning_rate=1e-4,
        gradient_norm=gradient_norm,
        epoch_duration=1.5,
        **profiles,
    )


def alert_types(engine: MetricsEngine) -> list[str]:
    return [alert["type"] for alert in engine.get_alerts()]


def test_steady_progress_raises_no_alert() -> None:
    engine = MetricsEngine(alert_config=AlertConfig(patience_epochs=2))
    for epoch, loss in enumerate([1.0, 0.9, 0.85, 0.8], start=1):
        log(engine, epoch, loss, accuracy=0.8 + epoch / 100)
        assert not engine.has_alerts()


def test_a_val_loss_spike_above_the_threshold_alerts() -> None:
    engine = MetricsEngine(alert_config=AlertConfig(val_loss_spike_threshold=0.2))
    log(engine, 1, 0.5)
    log(engine, 2, 0.59)  # +18%: within
    assert not engine.has_alerts()
    log(engine, 3, 0.75)  # +27%
    assert alert_types(engine) == ["val_loss_spike"]
    assert "27" in engine.get_alerts()[0]["message"]


def test_a_non_finite_val_loss_alerts_as_critical() -> None:
    engine = MetricsEngine()
    log(engine, 1, math.nan)
    (alert,) = engine.get_alerts()
    assert (alert["type"], alert["severity"]) == ("val_loss_spike", "critical")


def test_an_accuracy_drop_above_the_threshold_alerts() -> None:
    engine = MetricsEngine(alert_config=AlertConfig(accuracy_drop_threshold=0.05))
    log(engine, 1, 0.5, accuracy=0.90)
    log(engine, 2, 0.49, accuracy=0.87)  # -3.3%
    assert not engine.has_alerts()
    log(engine, 3, 0.48, accuracy=0.80)  # -8%
    assert alert_types(engine) == ["accuracy_drop"]


def test_a_large_gradient_norm_alerts() -> None:
    engine = MetricsEngine(alert_config=AlertConfig(gradient_norm_threshold=5.0))
    log(engine, 1, 0.5, gradient_norm=4.0)
    assert not engine.has_alerts()
    log(engine, 2, 0.4, gradient_norm=6.0)
    assert alert_types(engine) == ["gradient_norm"]


def test_no_improvement_for_patience_epochs_alerts_once_per_patience() -> None:
    engine = MetricsEngine(alert_config=AlertConfig(patience_epochs=2))
    raised = []
    for epoch, loss in enumerate([1.0, 1.01, 1.02, 1.01, 1.015, 0.9], start=1):
        log(engine, epoch, loss)
        raised.append("no_improvement" in alert_types(engine))
    assert raised == [False, False, True, False, True, False]
    assert len(engine.get_alert_history()) == 2


def test_data_drift_alerts_and_is_returned() -> None:
    rng = np.random.default_rng(0)
    reference = build_profile({"x": rng.normal(0, 1, 5000)})
    current = build_profile({"x": rng.normal(3, 1, 5000)}, reference=reference)
    engine = MetricsEngine(drift_threshold_warning=0.1, drift_threshold_critical=0.2)
    drift = log(engine, 1, 0.5, reference_profile=reference, current_profile=current)
    assert drift.status == "critical"
    assert alert_types(engine) == ["data_drift"]
    assert engine.history[0]["drift_status"] == "critical"


def test_without_profiles_drift_is_healthy_and_nothing_was_compared() -> None:
    drift = log(MetricsEngine(), 1, 0.5)
    assert (drift.status, drift.js_divergence, drift.num_features) == ("healthy", 0.0, 0)


def test_one_profile_alone_is_refused() -> None:
    profile = build_profile({"x": np.arange(10.0)})
    with pytest.raises(ValueError, match="both reference_profile"):
        log(MetricsEngine(), 1, 0.5, reference_profile=profile)


def test_confidence_matches_the_hand_computation() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    first = [math.exp(v) / (math.exp(2) + math.exp(1) + 1) for v in (2.0, 1.0, 0.0)]
    entropy_first = -sum(p * math.log(p) for p in first)
    figures = confidence_metrics(logits, torch.tensor([0, 1]))
    assert figures["top1_confidence"] == pytest.approx((first[0] + 1 / 3) / 2)
    assert figures["top5_confidence"] == pytest.approx(1.0)  # 3 classes: all of them
    assert figures["entropy"] == pytest.approx((entropy_first + math.log(3)) / 2)


def test_confidence_leaves_out_ignored_positions_and_sums_the_top_five() -> None:
    logits = torch.randn(2, 4, 10)
    labels = torch.tensor([[1, 2, -100, -100], [3, -100, -100, -100]])
    kept = logits.reshape(-1, 10)[labels.reshape(-1) != -100]
    probs = kept.softmax(-1)
    figures = confidence_metrics(logits, labels)
    assert figures["top1_confidence"] == pytest.approx(float(probs.max(-1).values.mean()))
    assert figures["top5_confidence"] == pytest.approx(
        float(probs.topk(5, -1).values.sum(-1).mean())
    )


def test_scalars_confidence_and_epochs_reach_the_loggers_at_optimizer_steps() -> None:
    sink = RecordingLogger()
    engine = MetricsEngine(gradient_accumulation_steps=4, loggers=[sink])
    engine.log_scalar("train/batch_loss", torch.tensor(0.5), step=8)
    engine.log_confidence(torch.randn(3, 5), torch.tensor([0, 1, 2]), step=12)
    log(engine, 1, 0.4)
    engine.close()
    steps = [step for _, step in sink.calls]
    assert steps == [2, 3, 3]
    assert sink.calls[0][0] == {"train/batch_loss": 0.5}
    assert set(sink.calls[1][0]) == {
        "confidence/top1_confidence",
        "confidence/top5_confidence",
        "confidence/entropy",
    }
    epoch_row = sink.calls[2][0]
    assert epoch_row["val_loss"] == 0.4
    assert epoch_row["val_accuracy"] == 0.9
    assert epoch_row["epoch"] == 1.0
    assert sink.closed


def test_prefixed_metric_names_are_not_prefixed_twice() -> None:
    engine = MetricsEngine()
    engine.log_epoch(1, {"train_loss": 1.0}, {"val_loss": 0.9}, 1e-3, 0.1)
    row = engine.history[0]
    assert (row["train_loss"], row["val_loss"]) == (1.0, 0.9)


def test_summary_is_a_dataframe_with_one_row_per_epoch() -> None:
    engine = MetricsEngine()
    for epoch in (1, 2):
        log(engine, epoch, 1.0 / epoch)
    summary = engine.get_summary()
    assert list(summary["epoch"]) == [1, 2]
    assert list(summary["val_loss"]) == [1.0, 0.5]


def test_use_wandb_without_the_wandb_logger_names_the_install_fix() -> None:
    manager: PluginManager = isolated_plugin_manager(("loggers", treadle_loggers.plugin))
    with pytest.raises(PluginLoadError, match=r'pip install "treadle\[wandb\]"'):
        MetricsEngine(use_wandb=True, plugin_manager=manager)


def test_use_wandb_builds_the_registered_wandb_logger(tmp_path: Path) -> None:
    class WandbStandIn(RecordingLogger):
        def __init__(self, training_config: object, run_dir: Path | None) -> None:
            super().__init__()
            self.run_dir = run_dir

    manager = isolated_plugin_manager()
    manager.registry("loggers").register("wandb", WandbStandIn)
    engine = MetricsEngine(use_wandb=True, plugin_manager=manager, run_dir=tmp_path)
    log(engine, 1, 0.5)
    (wandb_logger,) = engine.loggers
    assert isinstance(wandb_logger, WandbStandIn)
    assert wandb_logger.run_dir == tmp_path
    assert wandb_logger.calls[0][0]["val_loss"] == 0.5


def test_epochs_are_written_to_a_real_jsonl_file(tmp_path: Path) -> None:
    engine = MetricsEngine(loggers=[JsonlLogger(run_dir=tmp_path)])
    log(engine, 1, 0.5)
    log(engine, 2, 0.4)
    engine.close()
    lines = (tmp_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["val_loss"] for line in lines] == [0.5, 0.4]


@pytest.mark.parametrize(
    "options",
    [
        {"gradient_accumulation_steps": 0},
        {"drift_threshold_warning": 0.3, "drift_threshold_critical": 0.2},
    ],
)
def test_bad_engine_settings_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        MetricsEngine(**options)


def test_alert_config_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="val_loss_spike_threshold"):
        AlertConfig(val_loss_spike_threshold=-1.0)


def test_the_legacy_tracker_summarizes_epochs_with_the_spec_columns() -> None:
    tracker = MetricsTracker()
    tracker.log_epoch(1, {"loss": 0.6}, {"loss": 0.5}, learning_rate=1e-4, gradient_norm=0.5)
    tracker.log_epoch(2, {"loss": 0.42}, {"loss": 0.38}, learning_rate=1e-4, gradient_norm=0.5)
    tracker.log_epoch(3, {"loss": 0.4}, {"loss": math.nan}, learning_rate=1e-4, gradient_norm=0.5)
    summary = tracker.get_summary()
    assert list(summary.columns[:3]) == ["epoch", "train_loss", "val_loss"]
    assert list(summary["train_loss"]) == [0.6, 0.42, 0.4]
    assert tracker.get_best_epoch() == 2
