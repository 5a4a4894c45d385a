"""The task loss a wrapping strategy (PEFT, quantization) delegates to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from treadle.protocols import LossStrategy
from treadle_losses.classification import ClassificationLoss
from treadle_losses.language_modeling import LanguageModelingLoss

__all__ = ["InnerLoss"]


class InnerLoss:
    """Resolves and holds the strategy a wrapper delegates to.

    :param base: a registered strategy name (looked up in the process-wide registry, so a
        third party's works too), a strategy instance, or None: then classification for
        2-D logits and causal language modeling for 3-D logits, chosen per call.
    :param options: options for the named strategy, or for the default ones.
    :param owner: the wrapper's name, for messages.
    """

    def __init__(
        self, base: str | LossStrategy | None, options: Mapping[str, Any], owner: str
    ) -> None:
        self.owner = owner
        self.options = dict(options)
        self.fixed: LossStrategy | None = None
        if isinstance(base, str):
            from treadle.losses import get_loss_strategy

            self.fixed = get_loss_strategy(base, **self.options)
        elif base is not None:
            if not isinstance(base, LossStrategy):
                msg = (
                    f"{owner}: base must be a loss strategy name or an object with "
                    f"compute_loss and validate_inputs; got {type(base).__qualname__}."
                )
                raise TypeError(msg)
            self.fixed = base
        self._by_rank: dict[int, LossStrategy] = {}

    def __repr__(self) -> str:
        return repr(self.fixed) if self.fixed is not None else "by logits rank"

    def for_logits(self, logits: torch.Tensor) -> LossStrategy:
        """The strategy for these logits."""
        if self.fixed is not None:
            return self.fixed
        strategy = self._by_rank.get(logits.ndim)
        if strategy is None:
            if logits.ndim == 2:
                strategy = ClassificationLoss(**self.options)
            elif logits.ndim == 3:
                strategy = LanguageModelingLoss(**self.options)
            else:
                msg = (
                    f"{self.owner} picks its task loss from the logits' rank (2: classification, "
                    f"3: language modeling) and got logits of shape {tuple(logits.shape)}; "
                    f"name it with base='<registered loss>'."
                )
                raise ValueError(msg)
            self._by_rank[logits.ndim] = strategy
        return strategy

    def for_labels(self, labels: torch.Tensor) -> LossStrategy:
        """The strategy for these labels (for ``count_items``, which sees no logits)."""
        if self.fixed is not None:
            return self.fixed
        # classification labels are (batch,), token labels (batch, seq_len)
        rank = 2 if labels.ndim == 1 else 3
        return self.for_logits(torch.empty((0,) * rank))

    def count_items(self, labels: torch.Tensor, inputs: Mapping[str, Any] | None) -> int | float:
        """The inner strategy's ``count_items``, or the batch size when it has none."""
        strategy = self.for_labels(labels)
        count_items = getattr(strategy, "count_items", None)
        if callable(count_items):
            counted: int | float = count_items(labels, inputs)
            return counted
        return int(labels.shape[0])
