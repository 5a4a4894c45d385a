"""The epoch engines: TrainingLoop (forward, loss, backward, accumulate, step) and ValidationLoop
(loss and streaming metrics), each returning an :class:`EpochResult`.

Both are usable on their own, as the API reference shows; the :class:`~treadle.engine.Trainer`
builds them with its dispatcher, precision and counters. The per-batch path makes no registry
lookups, no ``.item()`` calls except where a callback asked for a number, and calls a lifecycle
hook only when something listens.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import torch

from treadle.control import TrainerControl
from treadle.engine.nonfinite import (
    CRITICAL_NORM,
    DEFAULT_MAX_CONSECUTIVE_SKIPS,
    NON_FINITE,
    NonFiniteGuard,
)
from treadle.engine.view import RunState

if TYPE_CHECKING:
    from treadle.engine.accumulation import GradientAccumulator, Items
    from treadle.engine.dispatch import LifecycleDispatch
    from treadle.engine.distributed import DistributedContext
    from treadle.engine.gradient_monitor import GradientMonitor
    from treadle.engine.precision import Precision
    from treadle.protocols import LossStrategy, StreamingMetric, TrainerView

__all__ = ["EpochProgress", "EpochResult", "TrainingLoop", "ValidationLoop"]

logger = logging.getLogger(__name__)

#: where no autocast applies and no gradient synchronization is held back (reusable)
_NO_CONTEXT = contextlib.nullcontext()

MetricsCallback = Callable[[float, int], None]
Batch = Mapping[str, Any]


@attrs.frozen(kw_only=True)
class EpochResult:
    """What one training or validation epoch produced.

    :ivar epoch: the epoch, from 0.
    :ivar loss: mean loss of the epoch (training: mean of batch losses; validation: mean over
        every counted item, so a short last batch weighs what it holds).
    :ivar metrics: further metrics, unprefixed (``accuracy``, ``perplexity``, ...).
    :ivar epoch_duration_seconds: wall time of the epoch (a resumed epoch counts both parts).
    :ivar num_samples: samples seen.
    :ivar num_batches: batches seen.
    :ivar learning_rate: learning rate of the first parameter group at the end of the epoch.
    :ivar global_step: optimizer steps since the run began, at the end of the epoch.
    :ivar completed: ``False`` when a stop request ended the epoch before its data did.
    :ivar gradient_norm: the last gradient norm before clipping, if one was measured.
    """

    epoch: int
    loss: float
    metrics: dict[str, float] = attrs.field(factory=dict)
    epoch_duration_seconds: float = 0.0
    num_samples: int = 0
    num_batches: int = 0
    learning_rate: float = 0.0
    global_step: int = 0
    completed: bool = True
    gradient_norm: float | None = None


@attrs.define(kw_only=True)
class EpochProgress:
    """How far a training epoch has got: saved in mid-epoch checkpoints and handed back to
    :meth:`TrainingLoop.run_epoch` to continue the epoch where it stopped.

    :ivar batches: batches consumed (always a whole number of accumulation windows when
        saved, since checkpoints are written at optimizer-step boundaries).
    :ivar samples: samples consumed.
    :ivar loss_sum: sum of the batch losses so far, a 0-d float64 tensor (kept on the device
        until the epoch ends).
    :ivar seconds: time spent in the epoch before this part of it.
    """

    batches: int = 0
    samples: int = 0
    _loss_sum: torch.Tensor = attrs.field(
        factory=lambda: torch.zeros((), dtype=torch.float64), alias="loss_sum"
    )
    seconds: float = 0.0
    #: on the CPU the loop adds batch losses here, as a Python float: the same float64
    #: additions as a tensor's, at 2k instructions a batch instead of 15k
    _host_loss_sum: float | None = attrs.field(default=None, init=False, repr=False, eq=False)

    @property
    def loss_sum(self) -> torch.Tensor:
        if self._host_loss_sum is not None:
            self._loss_sum = torch.tensor(self._host_loss_sum, dtype=torch.float64)
            self._host_loss_sum = None
        return self._loss_sum

    @loss_sum.setter
    def loss_sum(self, value: torch.Tensor) -> None:
        self._loss_sum = value
        self._host_loss_sum = None

    def add_loss(self, value: float) -> None:
        """Add one batch's loss, read on the host (a CPU run)."""
        total = self._host_loss_sum
        if total is None:
            total = float(self._loss_sum.item())
        self._host_loss_sum = total + value

    def to_state(self) -> dict[str, Any]:
        """Plain values for a checkpoint."""
        return {
            "batches": self.batches,
            "samples": self.samples,
            "loss_sum": self.loss_sum.detach().to("cpu", copy=True),
            "seconds": self.seconds,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> EpochProgress:
        return cls(
            batches=int(state["batches"]),
            samples=int(state["samples"]),
            loss_sum=torch.as_tensor(state["loss_sum"], dtype=torch.float64).clone(),
            seconds=float(state["seconds"]),
        )


def _to_device(batch: Batch, device: torch.device) -> dict[str, Any]:
    return {
        key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
        for key, value in batch.items()
    }


def _check_batch(batch: object, where: str) -> None:
    if not isinstance(batch, Mapping) or "labels" not in batch:
        kind = type(batch).__name__
        keys = f" with keys {sorted(batch)}" if isinstance(batch, Mapping) else ""
        msg = (
            f"{where} yielded a {kind}{keys}; treadle needs each batch as a mapping of tensors "
            f"holding 'labels' (what the task's collator builds). Pass a Dataset to let the "
            f"Trainer collate, or give your DataLoader the task's collator."
        )
        raise TypeError(msg)


def _parse_logits(raw: object) -> torch.Tensor:
    """Logits from a model's output: a tensor as is; tuples, dicts and output objects
    through :meth:`treadle.losses.ModelOutput.from_raw`."""
    from treadle.losses import ModelOutput

    logits: torch.Tensor = ModelOutput.from_raw(raw).logits
    return logits


def _learning_rate(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


class TrainingLoop:
    """Runs training epochs: forward, loss, backward, gradient accumulation, clipping, the
    optimizer and scheduler steps.

    :param gradient_accumulator: groups the batches into windows of its
        ``accumulation_steps`` (an epoch whose batch count is not a multiple of it steps on
        the remainder), weighs each batch's loss for its window, clips at every optimizer
        step and keeps the statistics (:meth:`~treadle.engine.GradientAccumulator.get_stats`).
    :param gradient_monitor: asked every optimizer step, before clipping (``None``: no
        checks); a health that says ``skip_optimizer_step`` skips that step.
    :param loss_strategy: the task's loss. With accumulation, a strategy that has
        ``count_items(labels, inputs)`` gets ``num_items_in_batch`` (the items of the whole
        window) so the summed micro-batch losses equal one big batch's; others have each
        micro-batch's mean loss weighted by its share of the window's samples.
    :param gradient_clip_norm: clip gradients to this norm at every optimizer step (``None``:
        no clipping, no norm measured), by global norm or per parameter as the accumulator
        was made (``clip_by_global_norm``). This, not the accumulator's own
        ``max_gradient_norm``, is the limit the loop clips to.
    :param dispatch: lifecycle hooks to call (the Trainer's); ``None`` calls none.
    :param view: the trainer view handed to hooks (needed with ``dispatch``).
    :param control: the control object hooks steer with.
    :param state: run counters (epoch, global step) shared with the view.
    :param precision: autocast and scaler choice; ``None`` is full precision.
    :param scaler: the fp16 gradient scaler, when ``precision`` needs one.
    :param pad_token_id: passed to the loss in ``LossInputs``.
    :param log_every_n_steps: ``metrics_callback`` is called every this many optimizer steps.
    :param distributed: the run's :class:`~treadle.engine.distributed.DistributedContext`
        (the model handed to :meth:`run_epoch` is then its DDP or FSDP module): the window's
        item count is summed over the ranks, the loss is scaled so that DDP's averaging gives
        the gradient of one process over the global batch, gradients are synchronized only on
        a window's last micro-batch, and the epoch's loss is the mean over every rank's
        batches.
    :param max_consecutive_skips: every optimizer step is checked for a NaN or infinite loss or
        gradient and skipped when it has one (see :mod:`treadle.engine.nonfinite`); after this
        many steps in a row were skipped (for that, or by the monitor's
        ``critical_action='skip'``) the epoch ends with ``control.request_stop(reason)``.

    :ivar non_finite_guard: the :class:`~treadle.engine.nonfinite.NonFiniteGuard` counting the
        skipped steps (``num_skipped``, ``num_non_finite``).
    """

    def __init__(
        self,
        gradient_accumulator: GradientAccumulator,
        gradient_monitor: GradientMonitor | None,
        loss_strategy: LossStrategy,
        gradient_clip_norm: float | None = 1.0,
        *,
        dispatch: LifecycleDispatch | None = None,
        view: TrainerView | None = None,
        control: TrainerControl | None = None,
        state: RunState | None = None,
        precision: Precision | None = None,
        scaler: torch.amp.GradScaler | None = None,
        pad_token_id: int | None = None,
        log_every_n_steps: int = 1,
        distributed: DistributedContext | None = None,
        max_consecutive_skips: int = DEFAULT_MAX_CONSECUTIVE_SKIPS,
    ) -> None:
        if dispatch is not None and view is None:
            msg = "TrainingLoop needs the trainer view its hooks receive: pass view="
            raise ValueError(msg)
        self.gradient_accumulator = gradient_accumulator
        self.gradient_monitor = gradient_monitor
        self.loss_strategy = loss_strategy
        self.gradient_clip_norm = gradient_clip_norm
        self.dispatch = dispatch
        self.view = view
        self.control = control if control is not None else TrainerControl()
        self.state = state if state is not None else RunState()
        self.precision = precision
        self.scaler = scaler
        self.pad_token_id = pad_token_id
        self.log_every_n_steps = log_every_n_steps
        self.distributed = distributed
        #: sees a non-finite loss or gradient at every optimizer step (see treadle.engine.nonfinite)
        self.non_finite_guard = NonFiniteGuard(
            max_consecutive_skips,
            raise_at_once=gradient_monitor is not None
            and gradient_monitor.critical_action == "stop",
            under_scaler=scaler is not None,
        )
        #: DDP averages gradients over the ranks; the loss is multiplied back by this
        self._gradient_scale = 1 if distributed is None else distributed.world_size
        count_items = getattr(loss_strategy, "count_items", None)
        self._count_items: Callable[[torch.Tensor, Any], Items] | None = (
            count_items if callable(count_items) else None
        )
        #: windows are weighed by their items when batches accumulate or ranks sum gradients;
        #: a one-batch window on one process back-propagates its loss as it is
        self._weighs_windows = (
            gradient_accumulator.accumulation_steps > 1 or distributed is not None
        )
        #: autocast only where it changes something: a null context still costs two calls
        self._autocasts = precision is not None and precision.dtype is not None
        self._checked_inputs = False
        #: a GradScaler, or an optimizer that takes found_inf: the finite check defers
        self._defers_finite_check = False
        self._on_cpu = True
        #: the batch hooks bound (the dispatcher), or None when none of them is
        self._batch_hooks: LifecycleDispatch | None = None
        #: the last one-batch window's loss, read on the CPU for the finite check
        self._loss_value: float | None = None
        self.last_gradient_norm: torch.Tensor | None = None

    def run_epoch(
        self,
        epoch: int,
        model: torch.nn.Module,
        train_loader: Iterable[Batch],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None,
        device: torch.device | str,
        metrics_callback: MetricsCallback | None = None,
        *,
        progress: EpochProgress | None = None,
        on_optimizer_step: Callable[[EpochProgress], bool] | None = None,
    ) -> EpochResult:
        """Train one epoch (or the rest of one).

        :param train_loader: batches (mappings of tensors with ``labels``); an iterator already
            positioned after consumed batches continues a resumed epoch.
        :param metrics_callback: ``callback(loss, global_step)`` every ``log_every_n_steps``
            optimizer steps, with the last batch loss as a float.
        :param progress: where a resumed epoch stood (batches, samples, loss so far).
        :param on_optimizer_step: called after every optimizer step with the epoch's progress;
            returning ``True`` ends the epoch there (a stop request).
        :returns: the epoch's :class:`EpochResult` (``completed=False`` when stopped early,
            also when repeated non-finite or critical steps stopped it: ``control.stop_reason``
            says why).
        """
        device = torch.device(device)
        progress = progress if progress is not None else EpochProgress()
        progress.loss_sum = progress.loss_sum.to(device)
        started = time.perf_counter() - progress.seconds
        state = self.state
        control = self.control
        guard = self.non_finite_guard
        log_every_n_steps = self.log_every_n_steps
        # a GradScaler skips overflowing steps itself; an optimizer that takes found_inf skips
        # on the device: either way the flags wait for a sync point
        self._defers_finite_check = self.scaler is not None or bool(
            getattr(optimizer, "_step_supports_amp_scaling", False)
        )
        state.epoch = epoch
        model.train()
        completed = True
        last_loss: torch.Tensor | None = None
        # one batch per optimizer step on one process (the common case) takes the short path
        single = not self._weighs_windows
        windows: Iterable[Any] = (
            train_loader if single else self.gradient_accumulator.windows(train_loader)
        )
        run = self._run_single if single else self._run_window
        self._on_cpu = device.type == "cpu"
        dispatch = self.dispatch
        self._batch_hooks = (
            dispatch
            if dispatch is not None
            and any(
                hook is not None
                for hook in (
                    dispatch.on_batch_start,
                    dispatch.on_before_backward,
                    dispatch.on_after_backward,
                    dispatch.on_batch_end,
                )
            )
            else None
        )
        self._loss_value = None
        self.gradient_accumulator.watch(model)
        for window in windows:
            last_loss = run(window, model, device, progress)
            stop_reason = self._optimizer_step(model, optimizer, scheduler, state.global_step)
            state.global_step += 1
            if state.global_step % log_every_n_steps == 0:
                # a sync point the loop already has: deferred finite checks are read here too
                if guard.has_pending:
                    stop_reason = guard.flush() or stop_reason
                if metrics_callback is not None:
                    metrics_callback(float(last_loss.item()), state.global_step)
            if stop_reason is not None:
                control.request_stop(stop_reason)
                completed = False
            if on_optimizer_step is not None and on_optimizer_step(progress):
                completed = False
            if not completed:
                break
        stop_reason = guard.flush()
        if stop_reason is not None:
            control.request_stop(stop_reason)
        progress.seconds = time.perf_counter() - started
        batches = progress.batches
        samples = progress.samples
        if self.distributed is not None:
            # every rank's batches weigh alike: sums and counts, not a mean of rank means
            loss_total, batches, samples = self.distributed.sum_epoch(
                progress.loss_sum, batches, samples
            )
        else:
            loss_total = float(progress.loss_sum.item())
        mean_loss = loss_total / batches if batches else float("nan")
        norm = self.last_gradient_norm
        if norm is not None and hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()  # FSDP: a replicated DTensor
        return EpochResult(
            epoch=epoch,
            loss=mean_loss,
            epoch_duration_seconds=progress.seconds,
            num_samples=samples,
            num_batches=batches,
            learning_rate=_learning_rate(optimizer),
            global_step=state.global_step,
            completed=completed,
            gradient_norm=None if norm is None else float(norm.item()),
        )

    def _run_single(
        self,
        raw_batch: Batch,
        model: torch.nn.Module,
        device: torch.device,
        progress: EpochProgress,
    ) -> torch.Tensor:
        """One batch that is a whole optimizer step on one process: forward, loss, backward.
        What :meth:`_run_window` does for such a window, without its weighing; returns the
        batch's loss, detached. On the CPU the loss is read here (a memory read, not a sync)
        for the epoch's sum and the finite check."""
        if not self._checked_inputs:
            _check_batch(raw_batch, "the training data")
        on_cpu = self._on_cpu
        batch = raw_batch if on_cpu else _to_device(raw_batch, device)
        batch_index = progress.batches
        self.state.batch_index = batch_index
        hooks = self._batch_hooks
        if hooks is not None and hooks.on_batch_start is not None:
            batch = dict(batch)
            hooks.on_batch_start(
                trainer=self.view, batch_index=batch_index, batch=batch, control=self.control
            )
        model_inputs = dict(batch)
        labels = model_inputs.pop("labels")
        loss_inputs: dict[str, Any] = {"pad_token_id": self.pad_token_id}
        if "attention_mask" in batch:
            loss_inputs["attention_mask"] = batch["attention_mask"]
        if self._autocasts:
            assert self.precision is not None
            with self.precision.autocast():
                raw = model(**model_inputs)
                logits = raw if isinstance(raw, torch.Tensor) else _parse_logits(raw)
                loss = self._compute_loss(logits, labels, loss_inputs)
        else:
            raw = model(**model_inputs)
            logits = raw if isinstance(raw, torch.Tensor) else _parse_logits(raw)
            loss = self._compute_loss(logits, labels, loss_inputs)
        reported = self.gradient_accumulator.record_loss(loss)
        if hooks is not None and hooks.on_before_backward is not None:
            replacement = hooks.on_before_backward(
                trainer=self.view, batch_index=batch_index, loss=loss, control=self.control
            )
            if replacement is not None:
                loss = replacement
        if self.scaler is not None:
            self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        else:
            loss.backward()  # type: ignore[no-untyped-call]
        if hooks is not None and hooks.on_after_backward is not None:
            hooks.on_after_backward(
                trainer=self.view, batch_index=batch_index, control=self.control
            )
        if on_cpu:
            value = reported.item()
            self._loss_value = value
            progress.add_loss(value)
        else:
            progress.loss_sum += reported
        progress.batches = batch_index + 1
        progress.samples += labels.shape[0]
        if hooks is not None and hooks.on_batch_end is not None:
            hooks.on_batch_end(
                trainer=self.view, batch_index=batch_index, loss=reported, control=self.control
            )
        return reported

    def _run_window(
        self,
        window: Sequence[Batch],
        model: torch.nn.Module,
        device: torch.device,
        progress: EpochProgress,
    ) -> torch.Tensor:
        """Forward and backward every micro-batch of one accumulation window, each batch's
        loss weighed by its share of the window's items; returns the last batch's own loss,
        detached."""
        dispatch = self.dispatch
        view = self.view
        control = self.control
        state = self.state
        distributed = self.distributed
        weigh = self.gradient_accumulator.weigh
        divided_by_window = self._count_items is not None
        item_counts = [self._items_of(batch) for batch in window]
        window_items: Items = sum(item_counts)
        if distributed is not None:
            # the loss divides by the global batch's items; DDP then averages over ranks
            window_items = distributed.sum_items(window_items)
        last_position = len(window) - 1
        reported: torch.Tensor | None = None
        for position, raw_batch in enumerate(window):
            if not self._checked_inputs:
                _check_batch(raw_batch, "the training data")
            batch = raw_batch if self._on_cpu else _to_device(raw_batch, device)
            batch_index = progress.batches
            state.batch_index = batch_index
            if dispatch is not None and dispatch.on_batch_start is not None:
                batch = dict(batch)
                dispatch.on_batch_start(
                    trainer=view, batch_index=batch_index, batch=batch, control=control
                )
            with (
                _NO_CONTEXT
                if distributed is None
                else distributed.micro_batch(position == last_position)
            ):
                loss = self._forward_loss(model, batch, window_items)
                loss, reported = weigh(
                    loss, item_counts[position], window_items, divided_by_window=divided_by_window
                )
                if dispatch is not None and dispatch.on_before_backward is not None:
                    replacement = dispatch.on_before_backward(
                        trainer=view, batch_index=batch_index, loss=loss, control=control
                    )
                    if replacement is not None:
                        loss = replacement
                if self._gradient_scale != 1:
                    loss = loss * self._gradient_scale
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
                else:
                    loss.backward()  # type: ignore[no-untyped-call]
            if dispatch is not None and dispatch.on_after_backward is not None:
                dispatch.on_after_backward(trainer=view, batch_index=batch_index, control=control)
            progress.loss_sum += reported
            progress.batches = batch_index + 1
            progress.samples += batch["labels"].shape[0]
            if dispatch is not None and dispatch.on_batch_end is not None:
                dispatch.on_batch_end(
                    trainer=view, batch_index=batch_index, loss=reported, control=control
                )
        assert reported is not None  # a window holds at least one batch
        return reported

    def _loss_inputs(self, batch: Batch) -> dict[str, Any]:
        """What the loss sees besides logits and labels; ``count_items`` sees the same, so
        the counts and the loss agree on which items count."""
        loss_inputs: dict[str, Any] = {"pad_token_id": self.pad_token_id}
        if "attention_mask" in batch:
            loss_inputs["attention_mask"] = batch["attention_mask"]
        return loss_inputs

    def _items_of(self, batch: Batch) -> Items:
        labels = batch["labels"]
        if self._count_items is not None:
            return self._count_items(labels, self._loss_inputs(batch))
        return int(labels.shape[0])

    def _forward_loss(
        self, model: torch.nn.Module, batch: Batch, window_items: Items | None
    ) -> torch.Tensor:
        model_inputs = dict(batch)
        labels = model_inputs.pop("labels")
        loss_inputs = self._loss_inputs(batch)
        if window_items is not None and self._count_items is not None:
            loss_inputs["num_items_in_batch"] = window_items
        if self._autocasts:
            assert self.precision is not None
            with self.precision.autocast():
                return self._loss_of(model(**model_inputs), labels, loss_inputs)
        return self._loss_of(model(**model_inputs), labels, loss_inputs)

    def _loss_of(
        self, raw: object, labels: torch.Tensor, loss_inputs: dict[str, Any]
    ) -> torch.Tensor:
        logits = raw if isinstance(raw, torch.Tensor) else _parse_logits(raw)
        return self._compute_loss(logits, labels, loss_inputs)

    def _compute_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, loss_inputs: dict[str, Any]
    ) -> torch.Tensor:
        if not self._checked_inputs:
            self.loss_strategy.validate_inputs(logits, labels)
            self._checked_inputs = True
        loss_inputs["logits"] = logits
        return self.loss_strategy.compute_loss(logits, labels, loss_inputs)

    def _optimizer_step(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None,
        step: int,
    ) -> str | None:
        """Check, clip and step (or skip); the reason to stop the run, if it must stop."""
        scaler = self.scaler
        if scaler is not None:
            scaler.unscale_(optimizer)
        skipped_for: str | None = None
        monitor = self.gradient_monitor
        distributed = self.distributed
        if monitor is not None:
            # before clipping: the monitor judges the norm the model produced
            # the parameters the accumulator looked up this epoch: walking the module tree
            # again costs as much as the check itself
            watched = (
                self.gradient_accumulator.watched_parameters
                if distributed is None
                else distributed.watched_gradients(model)
            )
            health = monitor.check_step(watched, step=step)
            if health is not None:
                skip_step = health.skip_optimizer_step
                if distributed is not None:
                    # sharded gradients give each rank its own figures: skip together
                    skip_step = distributed.any_true(skip_step)
                if skip_step:
                    skipped_for = CRITICAL_NORM
        accumulator = self.gradient_accumulator
        norm = accumulator.end_window(model, self.gradient_clip_norm)
        self.last_gradient_norm = norm
        # the finite check: the clip's total norm is NaN or infinite exactly when a gradient is
        found_inf: torch.Tensor | None = None
        loss_value = self._loss_value
        if loss_value is not None and norm is not None and not self._defers_finite_check:
            # a one-batch window on the CPU: its loss was read already, the norm is a read
            self._loss_value = None
            if not NonFiniteGuard.finite_on_host(norm, loss_value):
                skipped_for = NON_FINITE
        else:
            self._loss_value = None
            checked = self._finite_check(model, norm)
            if isinstance(checked, torch.Tensor):
                found_inf = checked
            elif not checked:
                skipped_for = NON_FINITE
        dispatch = self.dispatch
        if dispatch is not None and dispatch.on_before_optimizer_step is not None:
            dispatch.on_before_optimizer_step(
                trainer=self.view, optimizer=optimizer, control=self.control
            )
        if self.control.should_skip_step or skipped_for is not None:
            # skipped: no update, and the schedule waits for the next real step
            self.control.should_skip_step = False
            if scaler is not None:
                scaler.update()
        else:
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            elif found_inf is not None:
                _step_unless_found_inf(optimizer, found_inf)
            else:
                optimizer.step()
            if scheduler is not None:
                scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        guard = self.non_finite_guard
        if found_inf is not None:
            guard.defer(step, found_inf, skipped_for)
            return None
        if skipped_for is None and guard.is_clear:
            return None  # the usual step: nothing to count
        return guard.record(step, skipped_for)

    def _finite_check(
        self, model: torch.nn.Module, norm: torch.Tensor | None
    ) -> bool | torch.Tensor:
        """Whether this step's gradients and losses are all finite (read now), or the
        optimizer's ``found_inf`` flag for them (read later)."""
        accumulator = self.gradient_accumulator
        distributed = self.distributed
        if norm is None:
            norm = accumulator.gradient_norm(model)
        losses: Sequence[torch.Tensor] = accumulator.window_losses
        if distributed is not None:
            # every rank must decide alike: the norm is the same on all (gradients are
            # synchronized, or the clip reduced it), the loss is this rank's own
            losses = ()
            full_tensor = getattr(norm, "full_tensor", None)
            if full_tensor is not None:
                norm = full_tensor()
        if self._defers_finite_check:
            return NonFiniteGuard.device_flag(norm, losses)
        is_finite = NonFiniteGuard.read_now(norm, losses)
        if distributed is not None and self.gradient_clip_norm is None:
            # unclipped shards were measured locally: a rank's NaN must stop every rank's step
            is_finite = not distributed.any_true(not is_finite)
        return is_finite


def _step_unless_found_inf(optimizer: torch.optim.Optimizer, found_inf: torch.Tensor) -> None:
    """``optimizer.step()`` that leaves parameters and state untouched where ``found_inf`` is
    1: the protocol ``torch.amp.GradScaler`` uses with optimizers that support it."""
    optimizer.grad_scale = None  # type: ignore[attr-defined]
    optimizer.found_inf = found_inf  # type: ignore[attr-defined]
    try:
        optimizer.step()
    finally:
        del optimizer.grad_scale  # type: ignore[attr-defined]
        del optimizer.found_inf  # type: ignore[attr-defined]


class ValidationLoop:
    """Runs validation epochs: loss and streaming metrics, nothing kept per batch.

    :param loss_strategy: the task's loss; the epoch loss is the mean over counted items
        (``count_items`` where the strategy has it, else samples).
    :param metrics: factories of streaming metrics (registered metric classes); a new
        instance of each is made per epoch, fed every batch, and asked for ``compute()``.
    :param precision: autocast choice; ``None`` is full precision.
    :param pad_token_id: passed to the loss and metrics in ``LossInputs``.
    :param distributed: the run's :class:`~treadle.engine.distributed.DistributedContext`:
        each rank validates its shard, then the loss sums, item counts and every metric's
        running sums are summed over the ranks before the means are taken.
    """

    def __init__(
        self,
        loss_strategy: LossStrategy,
        *,
        metrics: Sequence[Callable[[], StreamingMetric]] = (),
        precision: Precision | None = None,
        pad_token_id: int | None = None,
        distributed: DistributedContext | None = None,
    ) -> None:
        self.loss_strategy = loss_strategy
        self.distributed = distributed
        self.metrics = tuple(metrics)
        self.precision = precision
        self.pad_token_id = pad_token_id
        count_items = getattr(loss_strategy, "count_items", None)
        self._count_items: Callable[[torch.Tensor, Any], Any] | None = (
            count_items if callable(count_items) else None
        )
        # metrics align token labels as the loss does (seq2seq losses do not shift)
        shift_labels = getattr(loss_strategy, "shift_labels", None)
        self._base_inputs: dict[str, Any] = {"pad_token_id": pad_token_id}
        if isinstance(shift_labels, bool):
            self._base_inputs["shift_labels"] = shift_labels

    def run_epoch(
        self,
        epoch: int,
        model: torch.nn.Module,
        val_loader: Iterable[Batch],
        device: torch.device | str,
        metrics_callback: MetricsCallback | None = None,
    ) -> EpochResult:
        """Validate once.

        :param metrics_callback: ``callback(loss, epoch)`` once, at the end.
        :returns: loss and metrics (unprefixed) of the epoch.
        """
        device = torch.device(device)
        started = time.perf_counter()
        metrics = [factory() for factory in self.metrics]
        loss_total = torch.zeros((), dtype=torch.float64, device=device)
        items_total: Any = 0
        samples = 0
        batches = 0
        was_training = model.training
        model.eval()
        distributed = self.distributed
        batches_in_step: Iterable[tuple[Batch, bool]] = (
            distributed.lockstep(val_loader)
            if distributed is not None and distributed.parallel == "fsdp"
            else ((batch, True) for batch in val_loader)
        )
        try:
            with torch.inference_mode():
                for raw_batch, counts in batches_in_step:
                    if batches == 0:
                        _check_batch(raw_batch, "the validation data")
                    batch = _to_device(raw_batch, device)
                    model_inputs = dict(batch)
                    labels = model_inputs.pop("labels")
                    loss_inputs: dict[str, Any] = dict(self._base_inputs)
                    if "attention_mask" in batch:
                        loss_inputs["attention_mask"] = batch["attention_mask"]
                    with self.precision.autocast() if self.precision else _NO_CONTEXT:
                        raw = model(**model_inputs)
                        logits = raw if isinstance(raw, torch.Tensor) else _parse_logits(raw)
                        loss_inputs["logits"] = logits
                        loss = self.loss_strategy.compute_loss(logits, labels, loss_inputs)
                    if not counts:
                        continue  # a repeat that kept FSDP's gathers in step: not counted
                    items = (
                        self._count_items(labels, loss_inputs)
                        if self._count_items is not None
                        else int(labels.shape[0])
                    )
                    loss_total += loss.double() * items
                    items_total = items_total + items
                    for metric in metrics:
                        # no float copy of (batch, seq, vocab) logits: metrics upcast as needed
                        metric.update(logits, labels, loss_inputs)
                    samples += int(labels.shape[0])
                    batches += 1
        finally:
            model.train(was_training)
        if distributed is not None:
            loss_total, items_total, samples, batches = distributed.sum_validation(
                loss_total, items_total, samples, batches
            )
            distributed.sync_metrics(metrics)
        counted = float(items_total) if batches else 0.0
        mean_loss = float(loss_total.item()) / counted if counted else float("nan")
        values: dict[str, float] = {}
        for metric in metrics:
            values.update({name: float(value) for name, value in metric.compute().items()})
        if metrics_callback is not None:
            metrics_callback(mean_loss, epoch)
        return EpochResult(
            epoch=epoch,
            loss=mean_loss,
            metrics=values,
            epoch_duration_seconds=time.perf_counter() - started,
            num_samples=samples,
            num_batches=batches,
        )
