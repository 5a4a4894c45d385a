"""Gradient health: norms before clipping, NaN/inf counts, rate-limited warnings, critical actions.

:class:`GradientMonitor` is called on every training step and works only every
``check_interval`` calls; a check computes all per-parameter norms in one fused call and
synchronizes with the device once. :func:`check_gradient_health` is the same check, standalone.

Every threshold applies to the *total* gradient norm: the L2 norm over all parameters' gradients,
the quantity ``torch.nn.utils.clip_grad_norm_`` clips. With the defaults (warning at 1.0, clipping
at ``max_gradient_norm=1.0``) a warning therefore means "clipping engaged".
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import attrs
import torch

from treadle.errors import TreadleError

__all__ = [
    "CRITICAL_ACTIONS",
    "GradientExplosionError",
    "GradientHealth",
    "GradientMonitor",
    "check_gradient_health",
    "gradient_norms",
]

logger = logging.getLogger(__name__)

CriticalAction = Literal["warn", "skip", "stop"]
CRITICAL_ACTIONS: tuple[str, ...] = ("warn", "skip", "stop")

#: Decade bins of per-parameter norms kept when ``log_distribution`` is on: 1e-10 ... 1e4.
HISTOGRAM_LOG10_EDGES: tuple[float, ...] = tuple(float(power) for power in range(-10, 5))


class GradientExplosionError(TreadleError, RuntimeError):
    """The gradient norm crossed ``norm_threshold_critical`` with ``critical_action='stop'``."""


@attrs.frozen(kw_only=True)
class GradientHealth:
    """One gradient check.

    :ivar max_norm: largest per-parameter gradient L2 norm.
    :ivar min_norm: smallest per-parameter norm among parameters whose gradient is not zero
        (0.0 when every gradient is zero).
    :ivar mean_norm: mean per-parameter norm.
    :ivar total_norm: L2 norm over all gradients, before clipping; what the thresholds compare.
    :ivar has_exploding_gradients: ``total_norm`` above the warning threshold, or not finite.
    :ivar has_vanishing_gradients: ``total_norm`` below the vanishing threshold.
    :ivar num_zero_gradients: parameters whose gradient is exactly zero.
    :ivar num_nan_gradients: parameters whose gradient holds a NaN.
    :ivar num_inf_gradients: parameters whose gradient holds an infinity (and no NaN).
    :ivar is_critical: ``total_norm`` above the critical threshold, or not finite.
    :ivar skip_optimizer_step: the caller should skip this optimizer step (``critical_action``
        is ``'skip'`` and the check is critical).
    :ivar step: the step the check ran at.
    :ivar timestamp: ISO 8601, UTC.
    """

    max_norm: float
    min_norm: float
    mean_norm: float
    total_norm: float
    has_exploding_gradients: bool
    has_vanishing_gradients: bool
    num_zero_gradients: int
    num_nan_gradients: int = 0
    num_inf_gradients: int = 0
    is_critical: bool = False
    skip_optimizer_step: bool = False
    step: int = 0
    timestamp: str = attrs.field(factory=lambda: datetime.now(UTC).isoformat())

    @property
    def is_finite(self) -> bool:
        """No NaN or infinite gradient."""
        return self.num_nan_gradients == 0 and self.num_inf_gradients == 0


def _gradients(model_or_parameters: torch.nn.Module | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    parameters = (
        model_or_parameters.parameters()
        if isinstance(model_or_parameters, torch.nn.Module)
        else model_or_parameters
    )
    return [parameter.grad for parameter in parameters if parameter.grad is not None]


def gradient_norms(gradients: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-tensor L2 norms of ``gradients`` as one float32 vector on the first one's device.

    One fused ``torch._foreach_norm`` call (what ``clip_grad_norm_`` uses); no device sync.
    """
    if not gradients:
        return torch.zeros(0)
    norms = torch._foreach_norm(list(gradients))
    try:
        stacked = torch.stack(norms)
    except RuntimeError:  # gradients on several devices
        device = gradients[0].device
        stacked = torch.stack([norm.to(device) for norm in norms])
    return stacked if stacked.dtype is torch.float32 else stacked.float()


@attrs.frozen
class _NormSummary:
    total: float
    max: float
    min_nonzero: float
    mean: float
    num_zero: int
    num_nan: int
    num_inf: int


def _summarize(norms: torch.Tensor, total_norm: torch.Tensor | float | None) -> _NormSummary:
    """Every figure of a check from the per-parameter norms, read with a single ``tolist`` and
    reduced on the host: a handful of numbers per parameter tensor costs less there than the
    seven small kernels that would reduce them on the device."""
    if norms.numel() == 0:
        return _NormSummary(0.0, 0.0, 0.0, 0.0, 0, 0, 0)
    values: list[float] = norms.tolist()
    num_nan = sum(1 for value in values if value != value)
    num_inf = sum(1 for value in values if value in (math.inf, -math.inf))
    nonzero = [value for value in values if value != 0.0]
    if total_norm is None:
        # NaN wins over inf, as torch.linalg.vector_norm has it (math.hypot prefers inf)
        total = math.nan if num_nan else math.hypot(*values)
    else:
        total = float(total_norm)
    return _NormSummary(
        total=total,
        max=math.nan if num_nan else max(values),
        min_nonzero=min(nonzero) if nonzero and not num_nan else (math.nan if num_nan else 0.0),
        mean=math.fsum(values) / len(values),
        num_zero=len(values) - len(nonzero),
        num_nan=num_nan,
        num_inf=num_inf,
    )


def check_gradient_health(
    model: torch.nn.Module | Iterable[torch.Tensor],
    threshold_max: float = 1.0,
    threshold_min: float = 1e-7,
) -> GradientHealth:
    """Check the current gradients of ``model`` once, outside any monitoring loop.

    :param model: a module, or an iterable of parameters.
    :param threshold_max: exploding when the total gradient norm is above it (or not finite).
    :param threshold_min: vanishing when the total gradient norm is below it.
    :returns: the :class:`GradientHealth`; parameters without ``.grad`` are left out.
    """
    summary = _summarize(gradient_norms(_gradients(model)), None)
    return _health(summary, threshold_max, threshold_min, math.inf, step=0)


def _health(
    summary: _NormSummary,
    warning: float,
    vanishing: float,
    critical: float,
    *,
    step: int,
    skip_if_critical: bool = False,
) -> GradientHealth:
    is_finite = math.isfinite(summary.total)
    is_critical = not is_finite or summary.total > critical
    return GradientHealth(
        max_norm=summary.max,
        min_norm=summary.min_nonzero,
        mean_norm=summary.mean,
        total_norm=summary.total,
        has_exploding_gradients=not is_finite or summary.total > warning,
        has_vanishing_gradients=is_finite and summary.total < vanishing,
        num_zero_gradients=summary.num_zero,
        num_nan_gradients=summary.num_nan,
        num_inf_gradients=summary.num_inf,
        is_critical=is_critical,
        skip_optimizer_step=skip_if_critical and is_critical,
        step=step,
    )


@attrs.define
class _WarningWindow:
    """Warnings collected between two summary lines."""

    count: int = 0
    worst_norm: float = 0.0
    worst_step: int = 0
    critical: int = 0
    skipped: int = 0

    def add(self, health: GradientHealth) -> None:
        self.count += 1
        self.critical += health.is_critical
        self.skipped += health.skip_optimizer_step
        norm = health.total_norm
        if not math.isfinite(norm) or (math.isfinite(self.worst_norm) and norm > self.worst_norm):
            self.worst_norm, self.worst_step = norm, health.step


class GradientMonitor:
    """Watches gradient norms during training; cheap on the steps it does not check.

    :param check_interval: check on every N-th call of :meth:`check_step` (the first call checks).
    :param norm_threshold_warning: a check whose total norm is above it counts as exploding and
        is reported in the rate-limited warning summary.
    :param norm_threshold_critical: a check above it (or with NaN/inf gradients) triggers
        ``critical_action``.
    :param log_distribution: keep a histogram of per-parameter norms (decade bins) in
        :meth:`get_statistics`.
    :param critical_action: ``'warn'`` (log it), ``'skip'`` (the returned health says
        ``skip_optimizer_step``; the caller skips ``optimizer.step()``) or ``'stop'`` (raise
        :class:`GradientExplosionError` naming the step and the norm).
    :param norm_threshold_vanishing: a check whose total norm is below it counts as vanishing.
    :param summary_every: log at most one warning summary per this many checks (the first
        warning of a run is logged at once).
    :param history_size: checks kept in the norm histories.
    """

    def __init__(
        self,
        check_interval: int = 10,
        norm_threshold_warning: float = 1.0,
        norm_threshold_critical: float = 10.0,
        log_distribution: bool = True,
        critical_action: CriticalAction | str = "warn",
        *,
        norm_threshold_vanishing: float = 1e-7,
        summary_every: int = 10,
        history_size: int = 10_000,
    ) -> None:
        problems = []
        if check_interval < 1:
            problems.append(f"check_interval must be >= 1: {check_interval}")
        if not norm_threshold_warning > 0:
            problems.append(f"norm_threshold_warning must be > 0: {norm_threshold_warning}")
        if not norm_threshold_critical >= norm_threshold_warning:
            problems.append(
                f"norm_threshold_critical ({norm_threshold_critical}) must be >= "
                f"norm_threshold_warning ({norm_threshold_warning})"
            )
        if critical_action not in CRITICAL_ACTIONS:
            problems.append(
                f"critical_action must be one of {', '.join(CRITICAL_ACTIONS)}: {critical_action!r}"
            )
        if summary_every < 1:
            problems.append(f"summary_every must be >= 1: {summary_every}")
        if problems:
            msg = "GradientMonitor: " + "; ".join(problems) + "."
            raise ValueError(msg)
        self.check_interval = check_interval
        self.norm_threshold_warning = norm_threshold_warning
        self.norm_threshold_critical = norm_threshold_critical
        self.norm_threshold_vanishing = norm_threshold_vanishing
        self.log_distribution = log_distribution
        self.critical_action = critical_action
        self.summary_every = summary_every
        self._calls = 0
        self._check_count = 0
        self._checks_since_summary = 0
        self._num_exploding = 0
        self._num_vanishing = 0
        self._num_critical = 0
        self._num_skipped = 0
        self._has_warned = False
        self._window = _WarningWindow()
        self._total_norms: deque[float] = deque(maxlen=history_size)
        self._max_norms: deque[float] = deque(maxlen=history_size)
        self._mean_norms: deque[float] = deque(maxlen=history_size)
        self._histogram = torch.zeros(len(HISTOGRAM_LOG10_EDGES) + 1, dtype=torch.long)
        self.last_health: GradientHealth | None = None

    def is_check_step(self) -> bool:
        """Whether the next :meth:`check_step` call will check."""
        return self._calls % self.check_interval == 0

    def check_step(
        self,
        model: torch.nn.Module | Iterable[torch.Tensor],
        *,
        step: int | None = None,
        total_norm: torch.Tensor | float | None = None,
    ) -> GradientHealth | None:
        """Count one training step; on every ``check_interval``-th call, check the gradients.

        Call it after ``backward`` and *before* clipping, so the norm is the one the model
        produced. A call that does not check does no tensor work and returns ``None``.

        :param model: the module, or an iterable of its parameters.
        :param step: the step to name in messages and in the health (default: calls so far).
        :param total_norm: the total norm when the caller already has it (a 0-d tensor is
            fine); per-parameter figures still come from ``model``'s gradients.
        :returns: the :class:`GradientHealth` of this check, or ``None``.
        :raises GradientExplosionError: the check is critical and ``critical_action='stop'``.
        """
        calls = self._calls
        self._calls = calls + 1
        if calls % self.check_interval:
            return None
        norms = gradient_norms(_gradients(model))
        health = _health(
            _summarize(norms, total_norm),
            self.norm_threshold_warning,
            self.norm_threshold_vanishing,
            self.norm_threshold_critical,
            step=calls if step is None else step,
            skip_if_critical=self.critical_action == "skip",
        )
        self._record(health, norms)
        return health

    def _record(self, health: GradientHealth, norms: torch.Tensor) -> None:
        self.last_health = health
        self._check_count += 1
        self._checks_since_summary += 1
        self._total_norms.append(health.total_norm)
        self._max_norms.append(health.max_norm)
        self._mean_norms.append(health.mean_norm)
        if self.log_distribution and norms.numel():
            self._add_to_histogram(norms)
        self._num_vanishing += health.has_vanishing_gradients
        if health.is_critical:
            self._num_critical += 1
            self._num_skipped += health.skip_optimizer_step
            if self.critical_action == "stop":
                raise GradientExplosionError(self._stop_message(health))
        if health.has_exploding_gradients:
            self._num_exploding += 1
            self._window.add(health)
            if not self._has_warned:
                self._has_warned = True
                self._log_first_warning(health)
                self._window = _WarningWindow()
                self._checks_since_summary = 0
        if self._checks_since_summary >= self.summary_every:
            self._log_summary()

    def _add_to_histogram(self, norms: torch.Tensor) -> None:
        finite = norms[torch.isfinite(norms) & (norms > 0)].cpu()
        edges = torch.tensor(HISTOGRAM_LOG10_EDGES, dtype=torch.float32)
        bins = torch.bucketize(torch.log10(finite), edges)
        self._histogram += torch.bincount(bins, minlength=len(self._histogram))

    def _stop_message(self, health: GradientHealth) -> str:
        what = (
            f"{health.num_nan_gradients} parameter(s) with NaN and {health.num_inf_gradients} "
            f"with infinite gradients"
            if not health.is_finite or not math.isfinite(health.total_norm)
            else f"total norm {health.total_norm:.4g} above norm_threshold_critical="
            f"{self.norm_threshold_critical:g}"
        )
        return (
            f"Gradient check at step {health.step} is critical: {what} (total norm "
            f"{health.total_norm:.4g}). Training stopped because critical_action='stop'. "
            f"Lower the learning rate, clip gradients (max_grad_norm), use a GradScaler under "
            f"fp16, or set critical_action to 'skip' or 'warn'."
        )

    def _log_first_warning(self, health: GradientHealth) -> None:
        logger.warning(
            "Gradient norm %.4g at step %d is above %g%s; further warnings are summarized "
            "every %d checks",
            health.total_norm,
            health.step,
            self.norm_threshold_warning,
            " (critical: the optimizer step is skipped)" if health.skip_optimizer_step else "",
            self.summary_every,
        )

    def _log_summary(self) -> None:
        window = self._window
        if window.count:
            logger.warning(
                "Gradient norm above %g in %d of the last %d checks (worst %.4g at step %d)%s%s",
                self.norm_threshold_warning,
                window.count,
                self._checks_since_summary,
                window.worst_norm,
                window.worst_step,
                f"; {window.critical} critical (above {self.norm_threshold_critical:g} or not "
                f"finite)"
                if window.critical
                else "",
                f"; {window.skipped} optimizer steps skipped" if window.skipped else "",
            )
        self._window = _WarningWindow()
        self._checks_since_summary = 0

    def flush_warnings(self) -> None:
        """Log the pending warning summary now (the Trainer calls it at the end of a run)."""
        self._log_summary()

    def get_statistics(self) -> dict[str, Any]:
        """Norm histories and counts over the run.

        Keys: ``mean_norm_history``, ``max_norm_history``, ``total_norm_history`` (one float per
        check, the newest ``history_size``), ``check_count``, ``num_exploding``,
        ``num_vanishing``, ``num_critical``, ``num_skipped_steps``, and, with
        ``log_distribution``, ``norm_histogram``: ``{"log10_edges": [...], "counts": [...]}``
        of every per-parameter norm checked (bin 0 is below the first edge, the last bin above
        the last edge).
        """
        statistics: dict[str, Any] = {
            "mean_norm_history": list(self._mean_norms),
            "max_norm_history": list(self._max_norms),
            "total_norm_history": list(self._total_norms),
            "check_count": self._check_count,
            "num_exploding": self._num_exploding,
            "num_vanishing": self._num_vanishing,
            "num_critical": self._num_critical,
            "num_skipped_steps": self._num_skipped,
        }
        if self.log_distribution:
            statistics["norm_histogram"] = {
                "log10_edges": list(HISTOGRAM_LOG10_EDGES),
                "counts": self._histogram.tolist(),
            }
        return statistics
