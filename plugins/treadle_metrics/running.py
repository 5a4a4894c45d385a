"""Running sums kept on the device between validation batches, read once in ``compute``."""

from __future__ import annotations

import math

import torch

__all__ = ["RunningRatio", "check_label_shape"]


class RunningRatio:
    """A numerator and a denominator summed over batches, as tensors: no device sync per batch."""

    def __init__(self) -> None:
        self.numerator: torch.Tensor | None = None
        self.denominator: torch.Tensor | None = None

    def add(self, numerator: torch.Tensor, denominator: torch.Tensor) -> None:
        """Add one batch's sums (0-d tensors)."""
        numerator = numerator.detach().double()
        denominator = denominator.detach().double()
        if self.numerator is None or self.denominator is None:
            self.numerator, self.denominator = numerator, denominator
        else:
            self.numerator = self.numerator + numerator
            self.denominator = self.denominator + denominator

    def ratio(self) -> float:
        """``numerator / denominator``; NaN before any counted item."""
        if self.numerator is None or self.denominator is None:
            return math.nan
        numerator, denominator = torch.stack([self.numerator, self.denominator]).tolist()
        return numerator / denominator if denominator else math.nan


def check_label_shape(
    metric: str,
    logits: torch.Tensor,
    labels: torch.Tensor,
    expected: str,
    *,
    min_label_dims: int = 1,
) -> None:
    """Raise ``ValueError`` naming the metric and both shapes unless ``labels`` has at least
    ``min_label_dims`` dimensions and ``logits`` one more (the classes)."""
    if logits.ndim != labels.ndim + 1 or labels.ndim < min_label_dims:
        msg = (
            f"Metric {metric!r} expects {expected}; got logits {tuple(logits.shape)} and labels "
            f"{tuple(labels.shape)}."
        )
        raise ValueError(msg)
