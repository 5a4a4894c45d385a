"""Semantic segmentation pixel accuracy, streamed over validation batches."""

from __future__ import annotations

from typing import Any

import torch

from treadle_metrics.running import RunningRatio, check_label_shape

__all__ = ["PixelAccuracy"]


class PixelAccuracy:
    """Share of labelled pixels whose arg-max class equals the label.

    ``update(logits, labels, inputs)``: logits ``(batch, classes, height, width)``, float;
    labels ``(batch, height, width)``, long; pixels labelled ``ignore_index`` are not counted.
    ``compute()`` gives ``pixel_accuracy``.
    """

    def __init__(self, ignore_index: int = -100) -> None:
        self.ignore_index = ignore_index
        self._correct = RunningRatio()

    def update(self, logits: torch.Tensor, labels: torch.Tensor, inputs: Any = None) -> None:
        check_label_shape(
            "pixel_accuracy",
            logits,
            labels,
            "logits (batch, classes, height, width), labels (batch, height, width)",
        )
        counted = labels != self.ignore_index
        hits = (logits.argmax(dim=1) == labels) & counted
        self._correct.add(hits.sum(), counted.sum())

    def compute(self) -> dict[str, float]:
        return {"pixel_accuracy": self._correct.ratio()}
