"""Gradient accumulation: windows of batches, how each batch's loss is weighed, when the
optimizer steps, clipping, and the statistics of all that.

Batches are grouped into windows of ``accumulation_steps``; the optimizer steps at the end of
each window. When the epoch's batch count is not a multiple of the window, its last window is
shorter and still steps, weighed so that every optimizer step sees the mean over the batches
(or items) that really went into it. The :class:`~treadle.engine.TrainingLoop` and hand-written
loops use the same :class:`GradientAccumulator`.
"""

from __future__ import annotations

import itertools
import math
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import attrs
import torch

from treadle.engine.gradient_monitor import gradient_norms

__all__ = ["AccumulationStats", "GradientAccumulator", "Items"]

#: A count of the items that count in a batch (tokens, samples): what a loss strategy's
#: ``count_items`` returns, a number or a 0-d tensor (kept on the device).
Items = int | float | torch.Tensor

_Batch = TypeVar("_Batch")

# clip_grad_norm_ divides by (norm + 1e-6); per-parameter clipping uses the same guard so the
# two modes agree when a model has a single parameter.
_CLIP_EPSILON = 1e-6


@attrs.frozen(kw_only=True)
class AccumulationStats:
    """Where accumulation stands after the latest optimizer step.

    :ivar global_step: backward passes recorded with :meth:`GradientAccumulator.record_loss`.
    :ivar effective_step: optimizer updates so far (calls of ``clip_gradients``).
    :ivar accumulated_loss: sum of the losses recorded in the latest finished window.
    :ivar norm_before_clip: total gradient L2 norm before the latest clipping.
    :ivar norm_after_clip: total gradient L2 norm after it.
    :ivar num_parameters: trainable parameters (elements) of the model last clipped.
    """

    global_step: int
    effective_step: int
    accumulated_loss: float
    norm_before_clip: float
    norm_after_clip: float
    num_parameters: int


class GradientAccumulator:
    """Groups batches into accumulation windows, weighs each batch's loss for its window,
    decides when the optimizer steps, clips gradients, and keeps statistics of it all.

    :param accumulation_steps: batches accumulated per optimizer step (N).
    :param max_gradient_norm: clip to this L2 norm; ``None`` measures the norm without clipping.
    :param clip_by_global_norm: clip the norm over all parameters together
        (``torch.nn.utils.clip_grad_norm_``); ``False`` clips each parameter's gradient to
        the limit on its own.

    The :class:`~treadle.engine.TrainingLoop` drives it by items: :meth:`windows` groups the
    batches, :meth:`weigh` weighs every batch's loss by its share of the window's items, and
    :meth:`end_window` clips and counts at each optimizer step. A hand-written loop drives it
    by batch position, with ``batch_index`` counted from 0 in each epoch::

        accumulator.set_epoch_length(len(loader))
        for batch_index, batch in enumerate(loader):
            loss = compute_loss(batch) * accumulator.loss_scale(batch_index)
            loss.backward()
            accumulator.record_loss(loss)
            if accumulator.should_update_optimizer(batch_index):
                accumulator.clip_gradients(model)
                optimizer.step()
                optimizer.zero_grad()
    """

    def __init__(
        self,
        accumulation_steps: int = 1,
        max_gradient_norm: float | None = 1.0,
        clip_by_global_norm: bool = True,
    ) -> None:
        if isinstance(accumulation_steps, bool) or not isinstance(accumulation_steps, int):
            msg = f"accumulation_steps must be an int >= 1: {accumulation_steps!r}"
            raise TypeError(msg)
        if accumulation_steps < 1:
            msg = f"accumulation_steps must be >= 1: {accumulation_steps}"
            raise ValueError(msg)
        if max_gradient_norm is not None and not (
            math.isfinite(max_gradient_norm) and max_gradient_norm > 0
        ):
            msg = f"max_gradient_norm must be a finite number > 0, or None: {max_gradient_norm}"
            raise ValueError(msg)
        self.accumulation_steps = accumulation_steps
        self.max_gradient_norm = max_gradient_norm
        self.clip_by_global_norm = clip_by_global_norm
        self.epoch_length: int | None = None
        self._backward_count = 0
        self._effective_step = 0
        # the open window's losses and item counts, and the last finished window's: kept by
        # reference, summed only when the statistics are read (no work per batch)
        self._window_losses: list[torch.Tensor] = []
        self._window_counts: list[Items | None] = []
        self._window_items: Items | None = None
        self._finished_losses: list[torch.Tensor] = []
        self._finished_counts: list[Items | None] = []
        self._finished_items: Items | None = None
        self._norm_before: torch.Tensor | None = None
        self._norm_after: torch.Tensor | None = None
        #: with global clipping the norm after is derived on reading, from this limit
        self._clipped_to: float | None = None
        self._num_parameters = 0
        self._model: weakref.ref[torch.nn.Module] | None = None
        self._parameters: list[torch.Tensor] = []
        self._own_clip: Callable[[float], Any] | None = None

    # -- the schedule ----------------------------------------------------------------------

    def set_epoch_length(self, num_batches: int | None) -> None:
        """Tell the accumulator how many batches this epoch has (``None``: unknown).

        With it, the last batch steps the optimizer even when it does not close a full
        window, and :meth:`loss_scale` gives the short last window ``1 / remainder``.
        """
        if num_batches is not None and num_batches < 1:
            msg = f"an epoch needs at least one batch: set_epoch_length({num_batches})"
            raise ValueError(msg)
        self.epoch_length = num_batches

    def should_update_optimizer(self, step: int, is_last_batch: bool = False) -> bool:
        """Whether the optimizer steps after batch ``step`` (counted from 0 in the epoch).

        True at the end of every window of ``accumulation_steps`` batches, and on the epoch's
        last batch: pass ``is_last_batch=True`` or call :meth:`set_epoch_length` first.
        """
        if (step + 1) % self.accumulation_steps == 0 or is_last_batch:
            return True
        return self.epoch_length is not None and step + 1 >= self.epoch_length

    def window_size(self, step: int) -> int:
        """How many batches the window holding batch ``step`` contains.

        ``accumulation_steps``, except for the short last window of an epoch whose length was
        given to :meth:`set_epoch_length`.
        """
        steps = self.accumulation_steps
        if self.epoch_length is None:
            return steps
        window_start = step - step % steps
        return max(1, min(steps, self.epoch_length - window_start))

    def loss_scale(self, step: int) -> float:
        """The factor for batch ``step``'s mean loss: ``1 / window_size(step)``.

        Scaling each batch's mean loss by it makes the accumulated gradient the mean over the
        window's batches: one batch of 32 and four accumulated batches of 8 give the same
        gradients. A loss already divided by ``num_items_in_batch`` for the whole optimizer step
        must not be scaled again.
        """
        return 1.0 / self.window_size(step)

    def get_effective_step(self, global_step: int) -> int:
        """Optimizer steps finished before batch ``global_step`` (counted from 0 over the run).

        ``global_step // accumulation_steps``; with an epoch length set, every epoch's short
        last window counts as one step too.
        """
        steps = self.accumulation_steps
        length = self.epoch_length
        if length is None:
            return global_step // steps
        epochs, within = divmod(global_step, length)
        return epochs * math.ceil(length / steps) + within // steps

    # -- windows by items: the training loop's side ----------------------------------------

    def windows(self, batches: Iterable[_Batch]) -> Iterator[list[_Batch]]:
        """``batches`` grouped into accumulation windows, one optimizer step each: lists of
        ``accumulation_steps`` batches, the last one shorter when the batches run out."""
        iterator = iter(batches)
        if self.accumulation_steps == 1:
            for batch in iterator:
                yield [batch]
            return
        while window := list(itertools.islice(iterator, self.accumulation_steps)):
            yield window

    def weigh(
        self,
        loss: torch.Tensor,
        items: Items | None,
        window_items: Items | None,
        *,
        divided_by_window: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weigh one micro-batch's loss for its window, so that the window's summed gradients
        are those of one batch holding all its items; counts one backward pass.

        :param loss: the micro-batch's scalar loss, attached to the graph.
        :param items: the items that count in this micro-batch (``count_items``, else its
            samples); ``None`` with ``window_items``.
        :param window_items: the items of the whole window (of every rank's window, in a
            distributed run); ``None`` when there is nothing to weigh: a window of one batch
            on one process.
        :param divided_by_window: the loss strategy already divided this batch's summed loss
            by ``window_items`` (it was given them as ``num_items_in_batch``), so the loss is
            its share as it is; otherwise it is the batch's mean, weighed here by
            ``items / window_items``.
        :returns: ``(loss to back-propagate, the batch's own mean loss)``; the second is
            detached, for reports and the epoch's mean.
        """
        self._backward_count += 1
        self._window_items = window_items
        if window_items is None:
            share, reported = loss, loss.detach()
        elif items is None:
            msg = "GradientAccumulator.weigh: a batch weighed against window_items needs its items"
            raise TypeError(msg)
        elif divided_by_window:
            # undo the window's division for the report: this batch's own mean
            share = loss
            reported = loss.detach() * (window_items / items) if items else loss.detach()
        else:
            share, reported = loss * (items / window_items), loss.detach()
        self._window_losses.append(reported)
        self._window_counts.append(items)
        return share, reported

    def end_window(
        self, model: torch.nn.Module | Iterable[torch.Tensor], max_norm: float | None
    ) -> torch.Tensor | None:
        """Close the window at its optimizer step: count the step and clip the accumulated
        gradients to ``max_norm``, by global norm or per parameter as this accumulator was
        made. ``max_norm=None`` leaves the gradients alone and measures nothing.

        :returns: the total L2 norm before clipping, a 0-d tensor on the gradients' device
            (no device sync), or ``None`` when nothing was clipped.
        """
        self._effective_step += 1
        # swap, not copy: the finished window's lists are reused for the next open one
        self._finished_losses, self._window_losses = self._window_losses, self._finished_losses
        self._finished_counts, self._window_counts = self._window_counts, self._finished_counts
        self._finished_items = self._window_items
        self._window_losses.clear()
        self._window_counts.clear()
        if max_norm is None:
            return None
        return self._clip(model, max_norm)

    @property
    def window_losses(self) -> list[torch.Tensor]:
        """The losses of the window the latest :meth:`end_window` closed, as :meth:`weigh`
        reported them (each batch's own loss, detached). Valid until the next window closes."""
        return self._finished_losses

    def gradient_norm(self, model: torch.nn.Module | Iterable[torch.Tensor]) -> torch.Tensor:
        """The total L2 norm of the gradients as they are now: a 0-d tensor on their device
        (no device sync), nothing clipped or counted. 0 when no parameter has a gradient."""
        parameters = model.parameters() if isinstance(model, torch.nn.Module) else model
        gradients = [parameter.grad for parameter in parameters if parameter.grad is not None]
        if not gradients:
            return torch.zeros(())
        norm: torch.Tensor = torch.linalg.vector_norm(gradient_norms(gradients))
        return norm

    # -- windows by position: a hand-written loop's side -----------------------------------

    def record_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """Count one backward pass and keep its (scaled) loss for the window's sum.

        :returns: the loss, detached (what is kept).
        """
        self._backward_count += 1
        self._window_items = None
        detached = loss.detach()
        self._window_losses.append(detached)
        self._window_counts.append(None)
        return detached

    def clip_gradients(self, model: torch.nn.Module | Iterable[torch.Tensor]) -> torch.Tensor:
        """Clip the accumulated gradients before ``optimizer.step()``; counts one optimizer step.

        Call it at every optimizer step, also with ``max_gradient_norm=None`` (then it only
        measures). A module with its own ``clip_grad_norm_`` (FSDP) clips itself.

        :returns: the total L2 norm before clipping, a 0-d tensor on the gradients' device
            (no device sync); :meth:`get_statistics` holds it and the norm after.
        """
        self._finish_window()
        if isinstance(model, torch.nn.Module):
            self._remember(model)  # a hand-written loop's model may change between calls
        return self._clip(model, self.max_gradient_norm)

    # -- shared by both sides ----------------------------------------------------------------

    def _finish_window(self) -> None:
        self._effective_step += 1
        # swap, not copy: the finished window's lists are reused for the next open one
        self._finished_losses, self._window_losses = self._window_losses, self._finished_losses
        self._finished_counts, self._window_counts = self._window_counts, self._finished_counts
        self._finished_items = self._window_items
        self._window_losses.clear()
        self._window_counts.clear()

    def _clip(
        self, model: torch.nn.Module | Iterable[torch.Tensor], max_norm: float | None
    ) -> torch.Tensor:
        """Clip to ``max_norm`` (``None``: measure only); the total norm before."""
        parameters: list[torch.Tensor]
        if isinstance(model, torch.nn.Module):
            if self._model is None or self._model() is not model:
                self._remember(model)
            if max_norm is not None and self.clip_by_global_norm:
                own_clip = self._own_clip
                norm = (
                    torch.as_tensor(own_clip(max_norm))
                    if own_clip is not None
                    else torch.nn.utils.clip_grad_norm_(self._parameters, max_norm, foreach=True)
                )
                # the norm after is derived when read: computing it here costs ~15 us a step
                self._norm_before, self._norm_after, self._clipped_to = norm, None, max_norm
                return norm
            parameters = self._parameters
        else:
            parameters = list(model)
            self._num_parameters = sum(p.numel() for p in parameters if p.requires_grad)
        gradients = [parameter.grad for parameter in parameters if parameter.grad is not None]
        self._clipped_to = None
        if not gradients:
            self._norm_before = self._norm_after = torch.zeros(())
        elif max_norm is None:
            self._norm_before = self._norm_after = torch.linalg.vector_norm(
                gradient_norms(gradients)
            )
        elif self.clip_by_global_norm:
            return self._clipped_globally(
                torch.nn.utils.clip_grad_norm_(parameters, max_norm, foreach=True), max_norm
            )
        else:
            self._norm_before, self._norm_after = _clip_each(gradients, max_norm)
        return self._norm_before

    def _clipped_globally(self, norm: torch.Tensor, max_norm: float) -> torch.Tensor:
        # the norm after is derived when read: computing it here costs ~15 us a step
        self._norm_before, self._norm_after, self._clipped_to = norm, None, max_norm
        return norm

    @property
    def watched_parameters(self) -> list[torch.Tensor]:
        """The parameters of the model last looked up (:meth:`watch`, or the latest clipping
        of a module); empty before either."""
        return self._parameters

    def watch(self, model: torch.nn.Module) -> None:
        """Look ``model``'s parameters up now, for the clipping of the steps that follow.

        The list is kept between steps, since walking a module tree is not free
        (``model.parameters()`` of a three-layer MLP: ~75k instructions, a sixth of a tiny
        step); the :class:`~treadle.engine.TrainingLoop` calls this at the start of every
        epoch, and a model not seen before is looked up on its first clipping anyway.
        """
        self._remember(model)

    def _remember(self, model: torch.nn.Module) -> None:
        """What is looked up once per model (and per :meth:`watch`), not at every step."""
        self._model = weakref.ref(model)
        self._parameters = list(model.parameters())
        self._num_parameters = sum(p.numel() for p in self._parameters if p.requires_grad)
        # FSDP (1) clips its shards itself; looked up once: a missing attribute on a Module
        # goes through its __getattr__, which costs a microsecond
        self._own_clip = getattr(model, "clip_grad_norm_", None)

    # -- reading back ----------------------------------------------------------------------

    def get_stats(self) -> AccumulationStats:
        """The :class:`AccumulationStats` after the latest optimizer step (syncs the device).

        ``accumulated_loss`` is the sum of the latest finished window's losses as they were
        back-propagated: weighed by :meth:`weigh`, that is the window's mean loss.
        """
        norm_before = _as_float(self._norm_before)
        if self._clipped_to is not None:
            limit = self._clipped_to
            norm_after = norm_before * min(1.0, limit / (norm_before + _CLIP_EPSILON))
        else:
            norm_after = _as_float(self._norm_after)
        return AccumulationStats(
            global_step=self._backward_count,
            effective_step=self._effective_step,
            accumulated_loss=self._finished_loss(),
            norm_before_clip=norm_before,
            norm_after_clip=norm_after,
            num_parameters=self._num_parameters,
        )

    def _finished_loss(self) -> float:
        losses = [float(loss.item()) for loss in self._finished_losses]
        total = self._finished_items
        if total is None:
            return math.fsum(losses)
        counts = [float(count) for count in self._finished_counts]  # type: ignore[arg-type]
        return math.fsum(loss * count for loss, count in zip(losses, counts, strict=True)) / float(
            total
        )

    def get_statistics(self) -> dict[str, Any]:
        """The latest figures as a dict: ``norm_before``, ``norm_after``, ``global_step``,
        ``effective_step``, ``accumulated_loss``, ``num_parameters``, ``accumulation_steps``
        and ``clipped`` (whether the latest clipping changed the gradients)."""
        stats = self.get_stats()
        return {
            "norm_before": stats.norm_before_clip,
            "norm_after": stats.norm_after_clip,
            "global_step": stats.global_step,
            "effective_step": stats.effective_step,
            "accumulated_loss": stats.accumulated_loss,
            "num_parameters": stats.num_parameters,
            "accumulation_steps": self.accumulation_steps,
            "clipped": stats.norm_after_clip < stats.norm_before_clip,
        }

    def state_dict(self) -> dict[str, int]:
        """The counters, as plain ints for a checkpoint."""
        return {"global_step": self._backward_count, "effective_step": self._effective_step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the counters saved by :meth:`state_dict`."""
        self._backward_count = int(state["global_step"])
        self._effective_step = int(state["effective_step"])


def _clip_each(gradients: list[torch.Tensor], max_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale each gradient to at most ``max_norm``; the total norms before and after."""
    norms = gradient_norms(gradients)
    factors = torch.clamp(max_norm / (norms + _CLIP_EPSILON), max=1.0)
    scales = [
        factor.to(gradient.device, gradient.dtype)
        for factor, gradient in zip(factors.unbind(), gradients, strict=True)
    ]
    torch._foreach_mul_(gradients, scales)
    return torch.linalg.vector_norm(norms), torch.linalg.vector_norm(norms * factors)


def _as_float(value: torch.Tensor | None) -> float:
    return 0.0 if value is None else float(value.item())
