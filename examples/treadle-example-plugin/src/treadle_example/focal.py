"""Focal loss (Lin et al., 2017): cross-entropy that down-weights well-classified examples."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class FocalLoss:
    """``-(1 - p_t)^gamma * log(p_t)``, averaged over the samples that count.

    :param gamma: focusing strength, >= 0; 0 gives plain cross-entropy.
    :param ignore_index: label value excluded from the loss.

    Labels equal to ``ignore_index`` are skipped; when the inputs carry ``num_items_in_batch``
    (the count over a whole accumulated optimizer step), the loss is the sum divided by it, so
    accumulated micro-batches give the gradients of one large batch.
    """

    def __init__(self, gamma: float = 2.0, ignore_index: int = -100) -> None:
        if gamma < 0:
            msg = f"gamma must be >= 0: {gamma}"
            raise ValueError(msg)
        self.gamma = gamma
        self.ignore_index = ignore_index

    def validate_inputs(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
            msg = (
                f"focal loss expects logits (batch, num_classes) and labels (batch,); got "
                f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)}"
            )
            raise ValueError(msg)
        if not logits.dtype.is_floating_point:
            msg = f"focal loss expects floating-point logits, got {logits.dtype}"
            raise ValueError(msg)
        if labels.dtype not in (torch.int64, torch.int32):
            msg = f"focal loss expects integer labels, got {labels.dtype}"
            raise ValueError(msg)

    def compute_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, inputs: Any = None
    ) -> torch.Tensor:
        self.validate_inputs(logits, labels)
        keep = labels != self.ignore_index
        log_probs = F.log_softmax(logits.float(), dim=-1)
        safe_labels = labels.masked_fill(~keep, 0).long()
        log_p_t = log_probs.gather(1, safe_labels.unsqueeze(1)).squeeze(1)
        p_t = log_p_t.exp()
        per_sample = -((1.0 - p_t) ** self.gamma) * log_p_t * keep
        num_items = _num_items(inputs)
        if num_items is None:
            num_items = int(keep.sum())
        if num_items == 0:
            msg = "focal loss: every label in the batch is ignore_index; nothing to learn from"
            raise ValueError(msg)
        return per_sample.sum() / num_items

    def count_items(self, labels: torch.Tensor, inputs: Any = None) -> int:
        """The samples that count (labels other than ``ignore_index``): the Trainer sums this
        over an optimizer step into ``num_items_in_batch``."""
        return int((labels != self.ignore_index).sum())


def _num_items(inputs: Any) -> int | None:
    if inputs is None:
        return None
    value = inputs.get("num_items_in_batch") if isinstance(inputs, dict) else None
    if value is None:
        value = getattr(inputs, "num_items_in_batch", None)
    return None if value is None else int(value)
