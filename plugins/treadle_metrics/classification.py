"""Classification accuracy, streamed over validation batches."""

from __future__ import annotations

from typing import Any

import torch

from treadle_metrics.running import RunningRatio, check_label_shape

__all__ = ["Accuracy"]


class Accuracy:
    """Share of samples whose arg-max class equals the label.

    ``update(logits, labels, inputs)``: logits ``(batch, classes)``, float; labels ``(batch,)``,
    long; labels equal to ``ignore_index`` are not counted. ``compute()`` gives ``accuracy``.
    """

    def __init__(self, ignore_index: int = -100) -> None:
        self.ignore_index = ignore_index
        self._correct = RunningRatio()

    def update(self, logits: torch.Tensor, labels: torch.Tensor, inputs: Any = None) -> None:
        check_label_shape("accuracy", logits, labels, "logits (batch, classes), labels (batch,)")
        counted = labels != self.ignore_index
        hits = (logits.argmax(dim=-1) == labels) & counted
        self._correct.add(hits.sum(), counted.sum())

    def compute(self) -> dict[str, float]:
        return {"accuracy": self._correct.ratio()}
