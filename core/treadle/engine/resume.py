"""Exact resume: what the trainer writes into a checkpoint beside the weights, how it is read
back, early-stopping state, and positioning a loader inside a resumed epoch.

A run resumed from a checkpoint continues bit-identically on the CPU: sampling is a function
of (seed, epoch), the position a count of consumed samples, and every RNG is restored at the
point it was captured: at an epoch boundary before the next epoch's loader iterator is made,
inside an epoch after it (the loader draws its worker seed from the RNG when iterated).
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from treadle.engine.loops import EpochProgress
from treadle.seed import capture_rng_state

if TYPE_CHECKING:
    from treadle.engine.trainer import _Run

__all__ = [
    "TRAINER_STATE_FORMAT",
    "EarlyStopping",
    "ResumePoint",
    "apply_resume",
    "build_trainer_state",
    "plugin_set",
    "position_loader",
]

logger = logging.getLogger(__name__)

#: Version of the ``trainer_state`` layout written into checkpoints.
TRAINER_STATE_FORMAT = 1


@attrs.define(kw_only=True)
class EarlyStopping:
    """Tracks the monitored metric: the best value and epoch, and epochs without improvement.

    A NaN value is never best. ``patience=None`` tracks the best without ever stopping.

    :ivar monitor: metric name (``val_loss``).
    :ivar mode: ``min`` or ``max``.
    :ivar patience: epochs without improvement before stopping.
    :ivar min_delta: an improvement must beat the best by more than this.
    """

    monitor: str
    mode: str = "min"
    patience: int | None = None
    min_delta: float = 0.0
    best_value: float = math.nan
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    should_stop: bool = False
    _warned_missing: bool = False

    def update(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        """Record an epoch's metrics; returns whether it is the new best."""
        value = metrics.get(self.monitor)
        if value is None:
            if not self._warned_missing:
                logger.warning(
                    "early stopping watches %r, which the epoch's metrics lack (have: %s)",
                    self.monitor,
                    ", ".join(sorted(metrics)),
                )
                self._warned_missing = True
            return False
        improved = not math.isnan(value) and (
            math.isnan(self.best_value)
            or (
                value < self.best_value - self.min_delta
                if self.mode == "min"
                else value > self.best_value + self.min_delta
            )
        )
        if improved:
            self.best_value = value
            self.best_epoch = epoch
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        if self.patience is not None and self.epochs_without_improvement >= self.patience:
            self.should_stop = True
        return improved

    @property
    def reason(self) -> str:
        return (
            f"early stopping: {self.monitor} did not improve for "
            f"{self.epochs_without_improvement} epochs (best {self.best_value:.6g} at epoch "
            f"{'-' if self.best_epoch is None else self.best_epoch + 1})"
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "epochs_without_improvement": self.epochs_without_improvement,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_value = float(state["best_value"])
        self.best_epoch = state["best_epoch"]
        self.epochs_without_improvement = int(state["epochs_without_improvement"])


@attrs.frozen(kw_only=True)
class ResumePoint:
    """Where a resumed run picks up.

    :ivar epoch: the epoch the checkpoint was written in.
    :ivar epoch_complete: written after the epoch ended (the run continues with the next).
    :ivar progress: for a mid-epoch checkpoint, how far the epoch had got.
    :ivar rng_state: every RNG as it was when the checkpoint was written.
    :ivar epoch_rng_state: for a mid-epoch checkpoint, every RNG at the epoch's start.
    """

    epoch: int
    epoch_complete: bool
    rng_state: dict[str, Any]
    progress: EpochProgress | None = None
    epoch_rng_state: dict[str, Any] | None = None


def plugin_set(run: _Run) -> list[list[str]]:
    """``[name, distribution, version]`` of every plugin taking part, as plain strings."""
    manager = run.trainer.plugin_manager
    return [
        [info.name, info.distribution or "", info.version or ""]
        for info in manager.plugin_infos()
        if info.status in ("loaded", "registered")
    ]


def build_trainer_state(
    *, run: _Run, epoch: int, progress: EpochProgress | None, plugin_state: dict[str, Any]
) -> dict[str, Any]:
    """The trainer's part of a checkpoint: plain types and tensors only (loaded with
    ``weights_only=True``)."""
    return {
        "format": TRAINER_STATE_FORMAT,
        "epoch": epoch,
        "epoch_complete": progress is None,
        "global_step": run.state.global_step,
        "progress": None if progress is None else progress.to_state(),
        "rng_state": capture_rng_state(),
        "epoch_rng_state": None if progress is None else run.epoch_rng,
        "early_stopping": run.early_stopping.state_dict(),
        "history": [dict(row) for row in run.history],
        "plugin_state": plugin_state,
        "plugins": plugin_set(run),
        "config": run.config.to_dict(),
        "task": run.trainer.task_spec.to_dict(),
        "accumulation_steps": run.accumulation_steps,
        "accumulator": run.parts.accumulator.state_dict(),
        "batch_size": run.config.batch_size,
    }


def apply_resume(run: _Run, loaded: Any) -> None:
    """Restore counters, early stopping, history and plugin state from a loaded checkpoint's
    metadata; the RNG states are restored later, where they were captured."""
    state = getattr(loaded, "trainer_state", None)
    if not state:
        epoch = int(getattr(loaded, "epoch", -1))
        logger.warning(
            "checkpoint %s holds no trainer state: weights and optimizer restored, training "
            "continues with epoch %d (not an exact resume)",
            getattr(loaded, "path", "?"),
            epoch + 1,
        )
        run.start_epoch = epoch + 1
        run.state.global_step = int(getattr(loaded, "global_step", 0) or 0)
        return
    _warn_about_differences(run, state)
    epoch = int(state["epoch"])
    run.state.global_step = int(state["global_step"])
    if "accumulator" in state:  # checkpoints written before it was kept lack it
        run.parts.accumulator.load_state_dict(state["accumulator"])
    run.early_stopping.load_state_dict(state["early_stopping"])
    run.history = [dict(row) for row in state["history"]]
    complete = bool(state["epoch_complete"])
    run.start_epoch = epoch + 1 if complete else epoch
    run.resume_point = ResumePoint(
        epoch=epoch,
        epoch_complete=complete,
        rng_state=state["rng_state"],
        progress=None if complete else EpochProgress.from_state(state["progress"]),
        epoch_rng_state=state.get("epoch_rng_state"),
    )
    logger.info(
        "resumed from %s: epoch %d%s, global step %d",
        getattr(loaded, "path", "checkpoint"),
        epoch,
        " complete" if complete else f" after {state['progress']['batches']} batches",
        run.state.global_step,
    )
    if run.dispatch.on_load_checkpoint is not None:
        run.dispatch.on_load_checkpoint(
            trainer=run.view, plugin_state=dict(state.get("plugin_state") or {})
        )


def _warn_about_differences(run: _Run, state: Mapping[str, Any]) -> None:
    saved = {tuple(row) for row in state.get("plugins", [])}
    current = {tuple(row) for row in plugin_set(run)}
    if saved != current:
        missing = sorted(" ".join(row).strip() for row in saved - current)
        added = sorted(" ".join(row).strip() for row in current - saved)
        logger.warning(
            "resuming with a different set of plugins than the checkpoint was trained with: "
            "missing now: %s; new now: %s",
            ", ".join(missing) or "none",
            ", ".join(added) or "none",
        )
    positions_differ = (
        state.get("accumulation_steps") != run.accumulation_steps
        or state.get("batch_size") != run.config.batch_size
    )
    if not state.get("epoch_complete") and positions_differ:
        logger.warning(
            "the checkpoint was written mid-epoch with batch size %s x %s accumulation; this "
            "run uses %s x %s, so the rest of the epoch is not the same data order",
            state.get("batch_size"),
            state.get("accumulation_steps"),
            run.config.batch_size,
            run.accumulation_steps,
        )


def position_loader(
    loader: Iterable[Any], epoch: int, batches_consumed: int, samples_consumed: int
) -> Iterable[Any]:
    """An iterator over ``loader``'s batches of ``epoch``, after the consumed ones.

    A sampler with ``set_epoch``/``set_start`` (treadle's resumable sampler, or a
    ``DistributedSampler`` for the epoch) is positioned without loading anything; otherwise
    the consumed batches are drawn and dropped.
    """
    sampler = getattr(loader, "sampler", None)
    set_epoch = getattr(sampler, "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)
    set_start = getattr(sampler, "set_start", None)
    if callable(set_start):
        set_start(samples_consumed)
        return iter(loader)
    iterator = iter(loader)
    # drawn now, not lazily: any RNG the data uses is restored right after this
    collections.deque(itertools.islice(iterator, batches_consumed), maxlen=0)
    return iterator
