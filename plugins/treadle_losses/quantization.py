"""Quantization-safe loss: float32 loss over fake-quantized logits with a clipped
straight-through estimator, as quantization-aware training does."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from treadle.protocols import LossStrategy
from treadle_losses.inner import InnerLoss

__all__ = ["SUPPORTED_BITS", "QuantizationSafeLoss", "fake_quantize"]

#: Bit widths QuantizationSafeLoss simulates.
SUPPORTED_BITS = (8, 4)


class QuantizationSafeLoss:
    """The task's loss, computed in float32 on logits passed through simulated
    ``bits``-bit quantization.

    Each logit vector (the last dimension: one sample's, or one token's, class scores) is
    quantized on its own grid, so a batch quantizes exactly as its micro-batches do:

    - ``symmetric``: levels ``-q..q`` with ``q = 2**(bits-1) - 1`` over ``[-r, r]``, ``r`` the
      vector's largest magnitude;
    - affine (``symmetric=False``): ``2**bits`` levels over ``[min, max]`` of the vector.

    With ``clip_value`` the range is also bounded to ``[-clip_value, clip_value]`` (a
    calibrated output range). The forward pass uses the rounded values; the backward pass is a
    straight-through estimator clipped to the range: the gradient passes unchanged for logits
    inside it and is zero for logits outside, which only ``clip_value`` produces.

    The logits are cast to float32 first and the loss is float32 whatever the model's dtype.
    Non-finite logits or a non-finite loss raise ``ValueError`` naming the step (``logits``
    given to the loss, or the ``loss`` after quantization) and the call number.

    :param bits: 8 or 4.
    :param symmetric: symmetric (zero maps to zero) or affine quantization.
    :param clip_value: bound of the quantization range, > 0, or None.
    :param base: the task loss: a registered name, a strategy instance, or None for
        classification (2-D logits) or causal language modeling (3-D logits).
    :param base_options: options for the named or default task loss.
    """

    def __init__(
        self,
        bits: int = 8,
        symmetric: bool = True,
        clip_value: float | None = None,
        base: str | LossStrategy | None = None,
        base_options: Mapping[str, Any] | None = None,
    ) -> None:
        if bits not in SUPPORTED_BITS:
            msg = (
                f"QuantizationSafeLoss supports bits in {', '.join(map(str, SUPPORTED_BITS))}: "
                f"{bits}"
            )
            raise ValueError(msg)
        if clip_value is not None and not (math.isfinite(clip_value) and clip_value > 0):
            msg = f"QuantizationSafeLoss: clip_value must be a finite number > 0: {clip_value}"
            raise ValueError(msg)
        self.bits = bits
        self.symmetric = symmetric
        self.clip_value = clip_value
        self.inner = InnerLoss(base, base_options or {}, "QuantizationSafeLoss")
        self.calls = 0

    def __repr__(self) -> str:
        return (
            f"QuantizationSafeLoss(bits={self.bits}, symmetric={self.symmetric}, "
            f"clip_value={self.clip_value}, base={self.inner!r})"
        )

    def validate_inputs(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """The task loss's checks."""
        self.inner.for_logits(logits).validate_inputs(logits, labels)

    def compute_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, inputs: Mapping[str, Any] | None = None
    ) -> torch.Tensor:
        """The task loss of the fake-quantized float32 logits, as a float32 scalar.

        :raises ValueError: shapes don't fit, or a step produced non-finite values.
        """
        self.calls += 1
        strategy = self.inner.for_logits(logits)
        strategy.validate_inputs(logits, labels)
        logits = logits.float()
        self._check_finite(logits, "logits given to the loss")
        quantized = fake_quantize(logits, self.bits, self.symmetric, self.clip_value)
        with torch.autocast(logits.device.type, enabled=False):
            loss: torch.Tensor = strategy.compute_loss(quantized, labels, inputs).float()
        self._check_finite(loss, "loss computed from the quantized logits")
        return loss

    def count_items(
        self, labels: torch.Tensor, inputs: Mapping[str, Any] | None = None
    ) -> int | float:
        """The task loss's ``count_items`` (the batch size if it has none)."""
        return self.inner.count_items(labels, inputs)

    def _check_finite(self, values: torch.Tensor, step: str) -> None:
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            msg = (
                f"QuantizationSafeLoss: the {step} hold {bad} non-finite value(s) (NaN or inf) "
                f"at call {self.calls} of compute_loss ({self.bits}-bit, "
                f"{'symmetric' if self.symmetric else 'affine'}). Lower the learning rate, clip "
                f"gradients, or check the model for overflow in reduced precision."
            )
            raise ValueError(msg)


def fake_quantize(
    values: torch.Tensor, bits: int, symmetric: bool, clip_value: float | None = None
) -> torch.Tensor:
    """``values`` rounded to a ``bits``-bit grid per vector of the last dimension, with a
    straight-through gradient that is zero outside the quantization range.

    :param values: float32, any shape; each ``values[..., :]`` gets its own range.
    """
    with torch.no_grad():
        if symmetric:
            high = values.abs().amax(dim=-1, keepdim=True)
            if clip_value is not None:
                high = high.clamp(max=clip_value)
            low = -high
            levels = 2 ** (bits - 1) - 1
            scale = (high / levels).clamp(min=torch.finfo(values.dtype).tiny)
        else:
            low = values.amin(dim=-1, keepdim=True)
            high = values.amax(dim=-1, keepdim=True)
            if clip_value is not None:
                low = low.clamp(min=-clip_value, max=clip_value)
                high = high.clamp(min=-clip_value, max=clip_value)
            scale = ((high - low) / (2**bits - 1)).clamp(min=torch.finfo(values.dtype).tiny)
    # clamp's gradient is 1 inside [low, high] and 0 outside: the clipped estimator
    clipped = torch.clamp(values, low, high)
    with torch.no_grad():
        if symmetric:
            rounded = torch.round(clipped / scale) * scale
        else:
            rounded = torch.round((clipped - low) / scale) * scale + low
    quantized: torch.Tensor = clipped + (rounded - clipped).detach()
    return quantized
