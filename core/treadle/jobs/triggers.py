"""RetrainingTrigger: decide from metrics and drift whether a model should be retrained, and
say why."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import attrs

from treadle.errors import ConfigError

__all__ = ["RetrainingDecision", "RetrainingTrigger"]

#: metrics that get better as they grow; any other monitored metric is "lower is better"
_HIGHER_IS_BETTER_PREFIXES = ("val_accuracy", "accuracy", "val_f1", "f1", "val_auc", "auc")


@attrs.frozen(kw_only=True)
class RetrainingDecision:
    """Whether to retrain, and every reason found. True in an ``if`` when retraining is due.

    :ivar reasons: the sentences behind the decision: degradation, drift, or why not (too soon
        since the last retrain, nothing degraded).
    :ivar degradation: the relative change of the monitored metric toward worse (0.1 = 10 %
        worse), or ``None`` when either value is missing.
    """

    should_retrain: bool
    reasons: tuple[str, ...]
    monitor_metric: str
    degradation: float | None
    drift_score: float | None
    is_too_soon: bool = False

    def __bool__(self) -> bool:
        return self.should_retrain

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, as a retraining job records it."""
        return {
            "should_retrain": self.should_retrain,
            "reasons": list(self.reasons),
            "monitor_metric": self.monitor_metric,
            "degradation": self.degradation,
            "drift_score": self.drift_score,
            "is_too_soon": self.is_too_soon,
        }


def _non_negative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        msg = f"{name} must be a finite number: {value!r}"
        raise ConfigError(msg)
    if value < 0:
        msg = f"{name} must be >= 0: {value}"
        raise ConfigError(msg)
    return float(value)


class RetrainingTrigger:
    """Retrain when the monitored metric degraded past a threshold or the data drifted, but
    not sooner than ``min_days_between_retrains`` after the last retrain.

    :param monitor_metric: the metric to compare (``val_loss``: lower is better;
        ``val_accuracy`` and the like: higher is better).
    :param degradation_threshold: relative worsening that triggers (0.1: 10 %).
    :param min_days_between_retrains: the least time between two retrains.
    :param drift_threshold: a drift score (e.g. a JS divergence) at or above which to retrain.
    :param higher_is_better: override the direction guessed from the metric's name.
    """

    def __init__(
        self,
        monitor_metric: str = "val_loss",
        degradation_threshold: float = 0.1,
        min_days_between_retrains: float = 7,
        drift_threshold: float = 0.2,
        *,
        higher_is_better: bool | None = None,
    ) -> None:
        if not isinstance(monitor_metric, str) or not monitor_metric:
            msg = f"monitor_metric must be a metric name such as 'val_loss': {monitor_metric!r}"
            raise ConfigError(msg)
        self.monitor_metric = monitor_metric
        self.degradation_threshold = _non_negative("degradation_threshold", degradation_threshold)
        self.min_days_between_retrains = _non_negative(
            "min_days_between_retrains", min_days_between_retrains
        )
        self.drift_threshold = _non_negative("drift_threshold", drift_threshold)
        if higher_is_better is None:
            higher_is_better = monitor_metric.startswith(_HIGHER_IS_BETTER_PREFIXES)
        self.higher_is_better = higher_is_better

    def degradation(
        self, current_metrics: Mapping[str, float], reference_metrics: Mapping[str, float]
    ) -> float | None:
        """Relative worsening of the monitored metric (positive: worse), or ``None``."""
        current = current_metrics.get(self.monitor_metric)
        reference = reference_metrics.get(self.monitor_metric)
        if current is None or reference is None:
            return None
        if not (math.isfinite(current) and math.isfinite(reference)):
            return math.inf if not math.isfinite(current) else None
        change = (reference - current) if self.higher_is_better else (current - reference)
        if reference == 0:
            return math.inf if change > 0 else 0.0
        return change / abs(reference)

    def should_retrain(
        self,
        current_metrics: Mapping[str, float],
        reference_metrics: Mapping[str, float],
        drift_score: float | None = None,
        last_retrain_at: datetime | str | None = None,
        *,
        now: datetime | None = None,
    ) -> RetrainingDecision:
        """Decide whether to retrain.

        :param current_metrics: the model's metrics now (``{"val_loss": 0.42}``).
        :param reference_metrics: its metrics when it was trained.
        :param drift_score: how far the data moved (e.g. from :mod:`treadle.engine.drift`).
        :param last_retrain_at: when the model was last retrained (aware datetime or ISO 8601);
            read it from the registry or the job history.
        :param now: the time to compare with (default: now, UTC).
        :returns: a decision, truthy when retraining is due, carrying its reasons.
        """
        reasons = []
        degradation = self.degradation(current_metrics, reference_metrics)
        is_degraded = degradation is not None and degradation > self.degradation_threshold
        if degradation is None:
            reasons.append(
                f"{self.monitor_metric} missing from current or reference metrics; "
                f"degradation not checked"
            )
        elif is_degraded:
            reasons.append(
                f"{self.monitor_metric} degraded by {degradation:.1%} "
                f"({reference_metrics[self.monitor_metric]:.4g} -> "
                f"{current_metrics[self.monitor_metric]:.4g}), above the "
                f"{self.degradation_threshold:.1%} threshold"
            )
        else:
            reasons.append(
                f"{self.monitor_metric} changed by {degradation:+.1%}, within the "
                f"{self.degradation_threshold:.1%} threshold"
            )
        is_drifted = drift_score is not None and drift_score >= self.drift_threshold
        if is_drifted:
            reasons.append(f"drift score {drift_score:.3g} >= threshold {self.drift_threshold:.3g}")
        elif drift_score is not None:
            reasons.append(
                f"drift score {drift_score:.3g} below threshold {self.drift_threshold:.3g}"
            )
        is_too_soon = False
        if last_retrain_at is not None and (is_degraded or is_drifted):
            last = _aware(last_retrain_at)
            elapsed = (now or datetime.now(UTC)) - last
            if elapsed < timedelta(days=self.min_days_between_retrains):
                is_too_soon = True
                reasons.append(
                    f"too soon: last retrain {elapsed.total_seconds() / 86400:.1f} days ago, "
                    f"minimum {self.min_days_between_retrains:g} days"
                )
        return RetrainingDecision(
            should_retrain=(is_degraded or is_drifted) and not is_too_soon,
            reasons=tuple(reasons),
            monitor_metric=self.monitor_metric,
            degradation=degradation,
            drift_score=drift_score,
            is_too_soon=is_too_soon,
        )


def _aware(moment: datetime | str) -> datetime:
    value = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    if value.tzinfo is None:
        msg = f"last_retrain_at must carry a time zone (e.g. '+00:00'): {moment!r}"
        raise ConfigError(msg)
    return value
