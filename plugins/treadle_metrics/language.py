"""Causal and sequence-to-sequence language-model metrics: perplexity and token accuracy.

For causal language modelling the logits at position ``t`` predict the label at ``t + 1``,
exactly as the language-modelling loss shifts them. Sequence-to-sequence labels are already
aligned with the decoder's logits and are not shifted. ``shift_labels=None`` (the default)
decides per batch: ``inputs["shift_labels"]`` when given, else no shift when the batch has
``decoder_input_ids``, else shift.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from treadle_metrics.running import RunningRatio, check_label_shape

__all__ = ["Perplexity", "TokenAccuracy", "aligned"]

_EXPECTED = "logits (batch, seq_len, vocab), labels (batch, seq_len)"


def _should_shift(option: bool | None, inputs: Any) -> bool:
    if option is not None:
        return option
    if isinstance(inputs, Mapping):
        flag = inputs.get("shift_labels")
        if flag is not None:
            return bool(flag)
        if "decoder_input_ids" in inputs:
            return False
    return True


def aligned(
    metric: str, logits: torch.Tensor, labels: torch.Tensor, shift: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, labels)`` flattened to ``(tokens, vocab)`` and ``(tokens,)``, shifted so each
    logit row faces the label it predicts when ``shift``."""
    check_label_shape(metric, logits, labels, _EXPECTED, min_label_dims=2)
    if shift:
        logits, labels = logits[..., :-1, :], labels[..., 1:]
    return logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)


class Perplexity:
    """``exp`` of the mean negative log-likelihood per counted token (labels != ``ignore_index``).

    :param shift_labels: ``True`` for causal LMs, ``False`` for sequence-to-sequence, ``None``
        to decide per batch (see the module docstring).
    """

    def __init__(self, shift_labels: bool | None = None, ignore_index: int = -100) -> None:
        self.shift_labels = shift_labels
        self.ignore_index = ignore_index
        self._nll = RunningRatio()

    def update(self, logits: torch.Tensor, labels: torch.Tensor, inputs: Any = None) -> None:
        flat_logits, flat_labels = aligned(
            "perplexity", logits, labels, _should_shift(self.shift_labels, inputs)
        )
        nll = F.cross_entropy(
            flat_logits.float(), flat_labels, ignore_index=self.ignore_index, reduction="sum"
        )
        self._nll.add(nll, (flat_labels != self.ignore_index).sum())

    def compute(self) -> dict[str, float]:
        mean_nll = self._nll.ratio()
        try:
            return {"perplexity": math.exp(mean_nll)}
        except OverflowError:
            return {"perplexity": math.inf}


class TokenAccuracy:
    """Share of counted tokens whose arg-max prediction equals the label.

    :param shift_labels: as for :class:`Perplexity`.
    """

    def __init__(self, shift_labels: bool | None = None, ignore_index: int = -100) -> None:
        self.shift_labels = shift_labels
        self.ignore_index = ignore_index
        self._correct = RunningRatio()

    def update(self, logits: torch.Tensor, labels: torch.Tensor, inputs: Any = None) -> None:
        flat_logits, flat_labels = aligned(
            "token_accuracy", logits, labels, _should_shift(self.shift_labels, inputs)
        )
        counted = flat_labels != self.ignore_index
        hits = (flat_logits.argmax(dim=-1) == flat_labels) & counted
        self._correct.add(hits.sum(), counted.sum())

    def compute(self) -> dict[str, float]:
        return {"token_accuracy": self._correct.ratio()}
