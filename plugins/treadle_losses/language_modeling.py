"""Causal language modeling loss: next-token cross-entropy over the tokens that count."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from treadle.losses import num_items_of, reduce_loss
from treadle_losses.shapes import describe, is_floating, is_integer, shape_error

__all__ = ["LanguageModelingLoss"]

_EXPECTED = "logits (batch, seq_len, vocab_size) float and labels (batch, seq_len) integer"


class LanguageModelingLoss:
    """Cross-entropy of each next token, summed over the tokens that count.

    With ``shift_labels`` (causal LM, ``labels=input_ids`` as the spec shows) the logits at
    position ``t`` are scored against the label at ``t + 1``; sequence-to-sequence tasks set it
    false, their labels being already aligned with the decoder's logits.

    A target token counts unless it is ``ignore_index`` (-100) or padding. Padding is what the
    ``attention_mask`` marks 0 when the inputs carry one (causal mode only: in
    sequence-to-sequence mode the batch's mask belongs to the encoder); without a mask, tokens
    equal to ``pad_token_id`` are padding. So when the pad id equals the EOS id, the mask
    decides and real EOS tokens still count.

    The loss is the sum over counted tokens divided by ``num_items_in_batch`` when the inputs
    carry it, else by the number counted (a mean). A batch with nothing to count raises
    ``ValueError`` rather than returning NaN (on the CPU; on an accelerator its loss is NaN,
    which the Trainer's finite check skips and reports, instead of a host sync per batch).

    :param shift_labels: score logits at ``t`` against labels at ``t + 1``.
    :param ignore_index: label value that never counts.
    :param pad_token_id: padding id used when the inputs give none.
    """

    def __init__(
        self,
        shift_labels: bool = True,
        ignore_index: int = -100,
        pad_token_id: int | None = None,
    ) -> None:
        self.shift_labels = shift_labels
        self.ignore_index = ignore_index
        self.pad_token_id = pad_token_id

    def __repr__(self) -> str:
        return (
            f"LanguageModelingLoss(shift_labels={self.shift_labels}, "
            f"ignore_index={self.ignore_index}, pad_token_id={self.pad_token_id})"
        )

    def validate_inputs(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Raise ``ValueError`` unless logits are ``(batch, seq_len, vocab_size)`` float and
        labels ``(batch, seq_len)`` integer."""
        problem = None
        if logits.ndim != 3:
            problem = f"logits have {logits.ndim} dimensions, not 3"
        elif labels.ndim != 2:
            problem = f"labels have {labels.ndim} dimensions, not 2"
        elif logits.shape[:2] != labels.shape:
            problem = "batch and sequence sizes of logits and labels differ"
        elif not is_floating(logits):
            problem = "logits must be a floating-point tensor"
        elif not is_integer(labels):
            problem = "labels must hold integer token ids (torch.long)"
        if problem is not None:
            raise shape_error("LanguageModelingLoss", _EXPECTED, logits, labels, problem)

    def compute_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, inputs: Mapping[str, Any] | None = None
    ) -> torch.Tensor:
        """The summed next-token loss over counted tokens, divided as described above.

        :param logits: ``(batch, seq_len, vocab_size)``, float.
        :param labels: ``(batch, seq_len)``, long: the input ids, or -100 where nothing counts.
        :param inputs: a :class:`~treadle.losses.LossInputs`: ``attention_mask``,
            ``pad_token_id``, ``num_items_in_batch``.
        :raises ValueError: shapes or dtypes don't fit, or no token counts.
        """
        self.validate_inputs(logits, labels)
        if self.shift_labels:
            logits = logits[:, :-1]
        targets, counts = self._targets(labels, inputs)
        vocab_size = logits.shape[-1]
        flat_logits = logits.reshape(-1, vocab_size).float()
        flat_targets = targets.masked_fill(~counts, self.ignore_index).reshape(-1)
        if num_items_of(inputs) is None:
            # the mean over counted tokens is F.cross_entropy's own: no count to divide by,
            # so no host sync to check it against zero (a hand-written loop's loss, exactly)
            loss = F.cross_entropy(flat_logits, flat_targets, ignore_index=self.ignore_index)
            if labels.is_cpu and math.isnan(loss.item()) and not bool(counts.any()):
                # 0/0: nothing counts. On an accelerator this stays NaN rather than costing
                # a sync per batch; the Trainer skips that step and reports it
                reduce_loss(loss, 0, None, strategy="LanguageModelingLoss")  # raises
            return loss
        loss_sum = F.cross_entropy(
            flat_logits, flat_targets, ignore_index=self.ignore_index, reduction="sum"
        )
        return reduce_loss(loss_sum, counts.sum(), inputs, strategy="LanguageModelingLoss")

    def count_items(self, labels: torch.Tensor, inputs: Mapping[str, Any] | None = None) -> int:
        """The target tokens that count in this batch (after the shift and the masking): what
        the Trainer sums over an optimizer step into ``num_items_in_batch``."""
        _, counts = self._targets(labels, inputs)
        return int(counts.sum())

    def _targets(
        self, labels: torch.Tensor, inputs: Mapping[str, Any] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The target ids aligned with the logits, and where they count (bool, same shape)."""
        inputs = inputs or {}
        pad_token_id = inputs.get("pad_token_id")
        if pad_token_id is None:
            pad_token_id = self.pad_token_id
        mask = inputs.get("attention_mask") if self.shift_labels else None
        if mask is not None and mask.shape != labels.shape:
            msg = (
                f"LanguageModelingLoss expects attention_mask shaped like labels "
                f"{tuple(labels.shape)}; got attention_mask {describe(mask)}."
            )
            raise ValueError(msg)
        targets = labels
        if self.shift_labels:
            targets = labels[:, 1:]
            mask = mask[:, 1:] if mask is not None else None
        counts = targets != self.ignore_index
        if mask is not None:
            counts = counts & (mask != 0)
        elif pad_token_id is not None:
            counts = counts & (targets != pad_token_id)
        return targets, counts
