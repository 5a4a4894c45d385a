"""Non-finite losses and gradients: seen at every optimizer step, kept out of the weights, and a
run that keeps producing them stopped with the reason.

The :class:`~treadle.engine.TrainingLoop` asks a :class:`NonFiniteGuard` about every optimizer
step, after the gradients are clipped (the clip's total norm is the probe: it is NaN or infinite
exactly when some gradient is). How it learns the answer depends on where the numbers live:

- **On the CPU** (``read_now``): reading a 0-d CPU tensor is a memory read, not a device sync, so
  the guard reads the norm and the losses at once and the loop skips the step in Python: no
  update, no scheduler step, exactly as a monitor-requested skip.
- **With an optimizer that takes ``found_inf``** (fused AdamW, Adam and SGD: what a
  ``GradScaler`` uses) and no scaler (``device_flag``): the flag is computed on the device, handed
  to the optimizer, which leaves the parameters and its state untouched when it is set, and read
  at the next sync point the loop already has (a logged step, the end of the epoch). No host
  sync; the learning-rate schedule still advances on a skipped step.
- **With a GradScaler** (fp16): the scaler skips a step whose gradients overflowed, as it always
  did (and as a hand-written GradScaler loop, the schedule advances); the flags are only counted,
  at the same sync points.
- **Otherwise on an accelerator**: the flag is read at once, one sync per step, as ``GradScaler``
  itself does with an optimizer that cannot take ``found_inf``. Build the optimizer with
  ``fused=True`` to avoid it.

A skip is never silent: the first of each run of skipped steps is logged, and after
``max_consecutive_skips`` optimizer steps in a row were skipped (for non-finite values or by the
gradient monitor's ``critical_action='skip'``) the guard gives the reason to stop the run with.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

__all__ = ["DEFAULT_MAX_CONSECUTIVE_SKIPS", "NonFiniteGuard"]

logger = logging.getLogger(__name__)

#: Optimizer steps skipped in a row before the run is stopped. A GradScaler's overflow skips
#: (a few at the start of an fp16 run, each halving the scale) stay far below it.
DEFAULT_MAX_CONSECUTIVE_SKIPS = 20

#: why a step was skipped, for messages
NON_FINITE = "non-finite loss or gradients"
CRITICAL_NORM = "gradient norm above norm_threshold_critical (critical_action='skip')"


class NonFiniteGuard:
    """Watches every optimizer step for a NaN or infinite loss or gradient, counts skipped steps
    and decides when repeated skips stop the run.

    :param max_consecutive_skips: stop after this many optimizer steps in a row were skipped.
    :param raise_at_once: raise :class:`~treadle.engine.gradient_monitor.GradientExplosionError`
        at the first non-finite step instead of skipping it (``critical_action='stop'``).
    :param under_scaler: a ``GradScaler`` is in use: its overflow skips are expected (it lowers
        its scale after each), so the first of a run is logged at INFO, not WARNING.
    """

    def __init__(
        self,
        max_consecutive_skips: int = DEFAULT_MAX_CONSECUTIVE_SKIPS,
        *,
        raise_at_once: bool = False,
        under_scaler: bool = False,
    ) -> None:
        if max_consecutive_skips < 1:
            msg = f"max_consecutive_skips must be >= 1: {max_consecutive_skips}"
            raise ValueError(msg)
        self.max_consecutive_skips = max_consecutive_skips
        self.raise_at_once = raise_at_once
        self._first_skip_level = logging.INFO if under_scaler else logging.WARNING
        #: optimizer steps skipped for non-finite values, and for any reason, over the run
        self.num_non_finite = 0
        self.num_skipped = 0
        self.consecutive_skips = 0
        self._run_started_at: int | None = None
        self._run_reasons: set[str] = set()
        #: deferred steps, in order: (step, device flag or None, host-known skip reason or None)
        self._pending: list[tuple[int, torch.Tensor | None, str | None]] = []

    # -- asking about one step ---------------------------------------------------------------

    @staticmethod
    def finite_on_host(norm: torch.Tensor, loss: float) -> bool:
        """Whether a CPU ``norm`` and a loss already read are both finite: the check of a
        one-batch step on the CPU (a memory read and two comparisons)."""
        return math.isfinite(norm.item()) and math.isfinite(loss)

    @staticmethod
    def read_now(norm: torch.Tensor, losses: Sequence[torch.Tensor]) -> bool:
        """Whether ``norm`` and every loss are finite, read on the host (free on the CPU)."""
        if not math.isfinite(norm.item()):
            return False
        return all(math.isfinite(loss.item()) for loss in losses)

    @staticmethod
    def device_flag(norm: torch.Tensor, losses: Sequence[torch.Tensor]) -> torch.Tensor:
        """``1.0`` where the norm or a loss is not finite, else ``0.0``: a 0-d float32 tensor
        on the norm's device, computed without a host sync (an optimizer's ``found_inf``)."""
        probe = norm
        if losses:
            loss = losses[0] if len(losses) == 1 else torch.stack(list(losses)).sum()
            # 0 * loss is NaN exactly when the loss is not finite
            probe = norm.add(loss.to(norm.device, norm.dtype), alpha=0)
        flag = probe.mul(0).nan_to_num_(nan=1.0)
        return flag if flag.dtype == torch.float32 else flag.float()

    # -- recording ---------------------------------------------------------------------------

    def record(self, step: int, skipped_for: str | None) -> str | None:
        """Record optimizer step ``step``, known on the host: ``skipped_for`` is why it was
        skipped (``None``: it was taken).

        :returns: the reason to stop the run, once ``max_consecutive_skips`` steps in a row
            were skipped; else ``None``.
        """
        if self._pending:
            self._pending.append((step, None, skipped_for))
            return None
        return self._count(step, skipped_for)

    def defer(self, step: int, flag: torch.Tensor, skipped_for: str | None) -> None:
        """Record optimizer step ``step`` whose non-finite flag (from :meth:`device_flag`) is
        read later, by :meth:`flush`; ``skipped_for`` is a skip already known on the host."""
        self._pending.append((step, flag, skipped_for))

    def flush(self) -> str | None:
        """Read the deferred flags (one transfer) and count their steps, in order.

        :returns: the reason to stop, as :meth:`record` does.
        :raises GradientExplosionError: a deferred step was not finite and ``raise_at_once``.
        """
        if not self._pending:
            return None
        pending, self._pending = self._pending, []
        flags = [flag for _, flag, _ in pending if flag is not None]
        values = iter(torch.stack(flags).tolist() if flags else [])
        stop_reason = None
        for step, flag, skipped_for in pending:
            if flag is not None and next(values):
                skipped_for = NON_FINITE
            reason = self._count(step, skipped_for)
            stop_reason = stop_reason or reason
        return stop_reason

    @property
    def is_clear(self) -> bool:
        """No skipped step in the current run and nothing deferred: a taken step changes
        nothing (the loop's fast path skips :meth:`record` then)."""
        return not self.consecutive_skips and not self._pending

    @property
    def has_pending(self) -> bool:
        """Whether some steps wait for :meth:`flush`."""
        return bool(self._pending)

    def _count(self, step: int, skipped_for: str | None) -> str | None:
        if skipped_for is None:
            self.consecutive_skips = 0
            self._run_started_at = None
            self._run_reasons.clear()
            return None
        if skipped_for == NON_FINITE:
            self.num_non_finite += 1
            if self.raise_at_once:
                from treadle.engine.gradient_monitor import GradientExplosionError

                msg = (
                    f"Optimizer step {step} has a non-finite loss or gradient (NaN or inf). "
                    f"Training stopped because critical_action='stop'. Lower the learning rate, "
                    f"clip gradients (max_grad_norm), check the data for NaN or inf, or set "
                    f"critical_action to 'skip' or 'warn'."
                )
                raise GradientExplosionError(msg)
        self.num_skipped += 1
        self.consecutive_skips += 1
        self._run_reasons.add(skipped_for)
        if self._run_started_at is None:
            self._run_started_at = step
            logger.log(
                self._first_skip_level,
                "Optimizer step %d skipped: %s; the weights are unchanged",
                step,
                skipped_for,
            )
        if self.consecutive_skips != self.max_consecutive_skips:
            return None  # not yet, or already given (the loop stops at the first)
        advice = "Lower the learning rate"
        if NON_FINITE in self._run_reasons:
            advice += ", check the data for NaN or inf"
        if CRITICAL_NORM in self._run_reasons:
            advice += ", raise gradient_norm_critical or set gradient_critical_action='warn'"
        reason = (
            f"{self.consecutive_skips} optimizer steps in a row were skipped (steps "
            f"{self._run_started_at}-{step}: {'; '.join(sorted(self._run_reasons))}), so "
            f"training stopped. {advice}."
        )
        logger.error("%s", reason)
        return reason
