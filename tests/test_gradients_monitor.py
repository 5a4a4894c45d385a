"""GradientMonitor and check_gradient_health: thresholds, NaN/inf counts, warnings, actions."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import pytest
import torch

from treadle.engine.gradient_monitor import (
    GradientExplosionError,
    GradientMonitor,
    check_gradient_health,
)

MONITOR_LOGGER = "treadle.engine.gradient_monitor"


def model_with_gradients(*gradients: list[float]) -> torch.nn.Module:
    """A module whose parameters hold exactly the given gradients."""
    model = torch.nn.Module()
    for index, values in enumerate(gradients):
        parameter = torch.nn.Parameter(torch.zeros(len(values)))
        parameter.grad = torch.tensor(values)
        model.register_parameter(f"weight_{index}", parameter)
    return model


def test_a_check_reports_per_parameter_and_total_norms() -> None:
    model = model_with_gradients([3.0, 0.0], [0.0, 4.0], [0.0, 0.0])
    health = GradientMonitor(check_interval=1, norm_threshold_warning=1.0).check_step(model)
    assert health is not None
    assert (health.max_norm, health.min_norm) == (4.0, 3.0)  # the zero gradient is not "min"
    assert health.mean_norm == pytest.approx(7.0 / 3)
    assert health.total_norm == pytest.approx(5.0)
    assert health.num_zero_gradients == 1
    assert health.has_exploding_gradients
    assert not health.has_vanishing_gradients
    assert not health.is_critical


def test_only_every_nth_call_checks_and_the_others_touch_nothing() -> None:
    monitor = GradientMonitor(check_interval=3)
    model = model_with_gradients([0.1])

    def untouchable() -> Iterator[torch.Tensor]:
        raise AssertionError("a call that does not check must not read the parameters")
        yield  # pragma: no cover

    results = []
    for call in range(7):
        results.append(monitor.check_step(model if call % 3 == 0 else untouchable()))
    assert [result is not None for result in results] == [True, False, False] * 2 + [True]
    assert monitor.get_statistics()["check_count"] == 3


def test_vanishing_gradients_are_flagged_below_the_threshold() -> None:
    health = check_gradient_health(model_with_gradients([1e-9, 1e-9]), threshold_min=1e-7)
    assert health.has_vanishing_gradients
    assert not health.has_exploding_gradients


def test_nan_and_inf_gradients_are_counted_per_parameter_and_are_critical() -> None:
    model = model_with_gradients([math.nan, 1.0], [math.inf, 1.0], [0.5, 0.5])
    health = GradientMonitor(check_interval=1).check_step(model)
    assert health is not None
    assert (health.num_nan_gradients, health.num_inf_gradients) == (1, 1)
    assert not health.is_finite
    assert health.is_critical
    assert health.has_exploding_gradients


@pytest.mark.parametrize(
    ("total_norm", "exploding", "critical"),
    [(0.5, False, False), (5.0, True, False), (50.0, True, True)],
)
def test_thresholds_read_the_total_norm_given_by_the_caller(
    total_norm: float, exploding: bool, critical: bool
) -> None:
    monitor = GradientMonitor(
        check_interval=1, norm_threshold_warning=1, norm_threshold_critical=10
    )
    health = monitor.check_step(model_with_gradients([0.1]), total_norm=torch.tensor(total_norm))
    assert health is not None
    assert health.total_norm == pytest.approx(total_norm)
    assert (health.has_exploding_gradients, health.is_critical) == (exploding, critical)


def test_warn_action_lets_the_step_through() -> None:
    monitor = GradientMonitor(check_interval=1, critical_action="warn")
    health = monitor.check_step(model_with_gradients([100.0]))
    assert health is not None
    assert health.is_critical
    assert not health.skip_optimizer_step


def test_skip_action_tells_the_caller_to_skip_the_optimizer_step() -> None:
    monitor = GradientMonitor(check_interval=1, critical_action="skip")
    critical = monitor.check_step(model_with_gradients([100.0]))
    fine = monitor.check_step(model_with_gradients([0.5]))
    assert critical is not None
    assert fine is not None
    assert critical.skip_optimizer_step
    assert not fine.skip_optimizer_step
    assert monitor.get_statistics()["num_skipped_steps"] == 1


def test_stop_action_raises_naming_the_step_and_the_norm() -> None:
    monitor = GradientMonitor(
        check_interval=1, norm_threshold_critical=10.0, critical_action="stop"
    )
    with pytest.raises(GradientExplosionError, match=r"step 7 .*total norm 100 .*critical=10"):
        monitor.check_step(model_with_gradients([60.0, 80.0]), step=7)


def test_stop_action_on_nan_gradients_says_so() -> None:
    monitor = GradientMonitor(check_interval=1, critical_action="stop")
    with pytest.raises(GradientExplosionError, match=r"1 parameter.*NaN"):
        monitor.check_step(model_with_gradients([math.nan]), step=3)


def test_warnings_are_rate_limited_to_a_summary_per_n_checks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    monitor = GradientMonitor(check_interval=1, summary_every=10, norm_threshold_critical=1e6)
    model = model_with_gradients([3.0])
    with caplog.at_level(logging.WARNING, logger=MONITOR_LOGGER):
        for step in range(25):
            monitor.check_step(model, step=step)
        monitor.flush_warnings()
    messages = [record.getMessage() for record in caplog.records]
    # the first at once, then one line per 10 checks, then the pending rest at the end
    assert len(messages) == 4
    assert "step 0" in messages[0]
    assert "in 10 of the last 10 checks" in messages[1]
    assert "in 4 of the last 4 checks" in messages[3]
    assert monitor.get_statistics()["num_exploding"] == 25


def test_healthy_checks_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    monitor = GradientMonitor(check_interval=1, summary_every=2)
    with caplog.at_level(logging.WARNING, logger=MONITOR_LOGGER):
        for _ in range(5):
            monitor.check_step(model_with_gradients([0.1]))
        monitor.flush_warnings()
    assert caplog.records == []


def test_statistics_keep_histories_and_a_norm_histogram() -> None:
    monitor = GradientMonitor(check_interval=1, norm_threshold_critical=1e6)
    for scale in (0.1, 1.0, 10.0):
        monitor.check_step(model_with_gradients([scale], [scale * 2]))
    stats = monitor.get_statistics()
    assert stats["check_count"] == 3
    assert stats["max_norm_history"] == pytest.approx([0.2, 2.0, 20.0])
    assert stats["mean_norm_history"] == pytest.approx([0.15, 1.5, 15.0])
    assert sum(stats["norm_histogram"]["counts"]) == 6
    assert len(stats["norm_histogram"]["counts"]) == len(stats["norm_histogram"]["log10_edges"]) + 1


def test_a_model_without_gradients_is_a_zero_check() -> None:
    model = torch.nn.Linear(2, 2)
    health = check_gradient_health(model)
    assert health.total_norm == 0.0
    assert health.has_vanishing_gradients


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"check_interval": 0}, "check_interval"),
        (
            {"norm_threshold_warning": 5.0, "norm_threshold_critical": 1.0},
            "norm_threshold_critical",
        ),
        ({"critical_action": "explode"}, "critical_action"),
    ],
)
def test_bad_settings_are_refused_naming_the_parameter(
    options: dict[str, object], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        GradientMonitor(**options)  # type: ignore[arg-type]
