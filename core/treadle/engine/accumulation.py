"""Gradient accumulation: when to step the optimizer, how to scale the loss, and clipping.

Batches are grouped into windows of ``accumulation_steps``; the optimizer steps at the end of
each window. When the epoch's batch count is not a multiple of the window, its last window is
shorter and still steps: its batches are scaled by ``1 / remainder`` (see
:meth:`GradientAccumulator.loss_scale`), so every optimizer step sees the mean over the batches
that really went into it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import attrs
import torch

from treadle.engine.gradient_monitor import gradient_norms

__all__ = ["AccumulationStats", "GradientAccumulator"]

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


def _parameters(model: torch.nn.Module | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(model, torch.nn.Module):
        return list(model.parameters())
    return list(model)


class GradientAccumulator:
    """Decides when the optimizer steps, scales the loss per window, and clips gradients.

    :param accumulation_steps: batches accumulated per optimizer step (N).
    :param max_gradient_norm: clip to this L2 norm; ``None`` measures the norm without clipping.
    :param clip_by_global_norm: clip the norm over all parameters together
        (``torch.nn.utils.clip_grad_norm_``); ``False`` clips each parameter's gradient to
        ``max_gradient_norm`` on its own.

    Typical use, with ``batch_index`` counted from 0 in each epoch::

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
        self._window_loss: torch.Tensor | None = None
        self._finished_window_loss: torch.Tensor | None = None
        self._norm_before: torch.Tensor | None = None
        self._norm_after: torch.Tensor | None = None
        self._num_parameters = 0
        self._counted_model: int | None = None

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

    # -- per-step bookkeeping --------------------------------------------------------------

    def record_loss(self, loss: torch.Tensor) -> None:
        """Count one backward pass and add its (scaled) loss to the window's sum, on device."""
        detached = loss.detach()
        self._window_loss = detached if self._window_loss is None else self._window_loss + detached
        self._backward_count += 1

    def clip_gradients(self, model: torch.nn.Module | Iterable[torch.Tensor]) -> torch.Tensor:
        """Clip the accumulated gradients before ``optimizer.step()``; counts one optimizer step.

        Call it at every optimizer step, also with ``max_gradient_norm=None`` (then it only
        measures). A module with its own ``clip_grad_norm_`` (FSDP) clips itself.

        :returns: the total L2 norm before clipping, a 0-d tensor on the gradients' device
            (no device sync); :meth:`get_statistics` holds it and the norm after.
        """
        parameters = _parameters(model)
        gradients = [parameter.grad for parameter in parameters if parameter.grad is not None]
        if self._counted_model != id(model):
            self._counted_model = id(model)
            self._num_parameters = sum(p.numel() for p in parameters if p.requires_grad)
        self._effective_step += 1
        self._finished_window_loss, self._window_loss = self._window_loss, None
        max_norm = self.max_gradient_norm
        norm: torch.Tensor
        if not gradients:
            zero = torch.zeros(())
            self._norm_before = self._norm_after = zero
            return zero
        if max_norm is None:
            norm = torch.linalg.vector_norm(gradient_norms(gradients))
            self._norm_before = self._norm_after = norm
        elif self.clip_by_global_norm:
            own_clip = getattr(model, "clip_grad_norm_", None)
            if own_clip is not None:
                norm = torch.as_tensor(own_clip(max_norm))
            else:
                norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm, foreach=True)
            self._norm_before = norm
            self._norm_after = norm * torch.clamp(max_norm / (norm + _CLIP_EPSILON), max=1.0)
        else:
            norm, self._norm_after = _clip_each(gradients, max_norm)
            self._norm_before = norm
        return norm

    # -- reading back ----------------------------------------------------------------------

    def get_stats(self) -> AccumulationStats:
        """The :class:`AccumulationStats` after the latest optimizer step (syncs the device)."""
        return AccumulationStats(
            global_step=self._backward_count,
            effective_step=self._effective_step,
            accumulated_loss=_as_float(self._finished_window_loss),
            norm_before_clip=_as_float(self._norm_before),
            norm_after_clip=_as_float(self._norm_after),
            num_parameters=self._num_parameters,
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
