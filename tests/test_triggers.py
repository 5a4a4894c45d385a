"""RetrainingTrigger: degradation, drift and the minimum time between retrains, with reasons."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from treadle.errors import ConfigError
from treadle.jobs.triggers import RetrainingTrigger

NOW = datetime(2030, 6, 1, 12, tzinfo=UTC)


def test_the_spec_example_retrains_on_a_10_5_percent_worse_loss() -> None:
    trigger = RetrainingTrigger(
        monitor_metric="val_loss",
        degradation_threshold=0.1,
        min_days_between_retrains=7,
        drift_threshold=0.2,
    )
    decision = trigger.should_retrain(
        current_metrics={"val_loss": 0.42},
        reference_metrics={"val_loss": 0.38},
        drift_score=0.15,
    )
    assert decision  # truthy, as the spec's `if should_retrain:` uses it
    assert decision.degradation == pytest.approx(0.04 / 0.38)
    assert decision.reasons == (
        "val_loss degraded by 10.5% (0.38 -> 0.42), above the 10.0% threshold",
        "drift score 0.15 below threshold 0.2",
    )
    assert decision.to_dict()["should_retrain"] is True


def test_no_retrain_within_the_thresholds() -> None:
    decision = RetrainingTrigger().should_retrain({"val_loss": 0.40}, {"val_loss": 0.38}, 0.1)
    assert not decision
    assert decision.reasons[0] == "val_loss changed by +5.3%, within the 10.0% threshold"


def test_drift_alone_triggers_and_says_so() -> None:
    decision = RetrainingTrigger().should_retrain({"val_loss": 0.38}, {"val_loss": 0.38}, 0.25)
    assert decision
    assert "drift score 0.25 >= threshold 0.2" in decision.reasons


def test_too_soon_since_the_last_retrain_blocks_and_says_when() -> None:
    trigger = RetrainingTrigger(min_days_between_retrains=7)
    recent = (NOW - timedelta(days=2)).isoformat()
    decision = trigger.should_retrain(
        {"val_loss": 1.0}, {"val_loss": 0.5}, 0.9, last_retrain_at=recent, now=NOW
    )
    assert not decision
    assert decision.is_too_soon
    assert decision.reasons[-1] == "too soon: last retrain 2.0 days ago, minimum 7 days"
    old = NOW - timedelta(days=8)
    assert trigger.should_retrain(
        {"val_loss": 1.0}, {"val_loss": 0.5}, last_retrain_at=old, now=NOW
    )


def test_higher_is_better_metrics_degrade_downwards() -> None:
    trigger = RetrainingTrigger(monitor_metric="val_accuracy", degradation_threshold=0.05)
    assert trigger.higher_is_better
    assert trigger.should_retrain({"val_accuracy": 0.80}, {"val_accuracy": 0.90})
    assert not trigger.should_retrain({"val_accuracy": 0.95}, {"val_accuracy": 0.90})
    custom = RetrainingTrigger(monitor_metric="bleu", higher_is_better=True)
    assert custom.should_retrain({"bleu": 20.0}, {"bleu": 30.0})


def test_missing_and_nan_metrics() -> None:
    trigger = RetrainingTrigger()
    missing = trigger.should_retrain({}, {"val_loss": 0.4})
    assert not missing
    assert "val_loss missing from current or reference metrics" in missing.reasons[0]
    diverged = trigger.should_retrain({"val_loss": math.nan}, {"val_loss": 0.4})
    assert diverged  # a model whose loss became NaN needs retraining
    assert diverged.degradation == math.inf


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"degradation_threshold": -0.1}, "degradation_threshold must be >= 0"),
        ({"drift_threshold": math.nan}, "drift_threshold must be a finite number"),
        ({"min_days_between_retrains": "7"}, "min_days_between_retrains must be a finite"),
        ({"monitor_metric": ""}, "monitor_metric must be a metric name"),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RetrainingTrigger(**options)  # type: ignore[arg-type]


def test_a_naive_last_retrain_time_is_refused() -> None:
    with pytest.raises(ConfigError, match="must carry a time zone"):
        RetrainingTrigger().should_retrain(
            {"val_loss": 1.0}, {"val_loss": 0.5}, last_retrain_at="2030-01-01T00:00:00"
        )
