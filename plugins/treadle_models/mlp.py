"""MLPClassifier: mean-pooled token embeddings and/or tabular features through an MLP."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLPClassifier"]


class MLPClassifier(nn.Module):
    """A classifier for text (token ids), tabular features, or both.

    Text: ``input_ids`` are embedded (width ``hidden_size``) and averaged over the positions
    where ``attention_mask`` is 1 (over every position without a mask; a row without any
    token gives a zero vector, never NaN). Tabular: ``features`` are used as they are. When
    the model is built for both, the pooled text and the features are concatenated. Then
    ``Linear(hidden_size) -> GELU -> Dropout -> Linear(num_classes)``.

    :param num_classes: output classes.
    :param hidden_size: embedding width and hidden width of the MLP.
    :param vocab_size: number of token ids, to accept ``input_ids``; None for features only.
    :param in_features: width of ``features``, to accept them; None for text only.
    :param dropout: dropout probability in ``[0, 1)`` before the output layer.
    :raises ValueError: neither ``vocab_size`` nor ``in_features`` is given, a size is not
        positive, or ``dropout`` lies outside ``[0, 1)``.
    """

    def __init__(
        self,
        num_classes: int,
        hidden_size: int,
        *,
        vocab_size: int | None = None,
        in_features: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        _check_sizes(num_classes, hidden_size, vocab_size, in_features, dropout)
        self.num_classes = num_classes
        self.hidden_size = hidden_size
        self.vocab_size = vocab_size
        self.in_features = in_features
        self.embedding = None if vocab_size is None else nn.Embedding(vocab_size, hidden_size)
        width = (hidden_size if vocab_size is not None else 0) + (in_features or 0)
        self.hidden = nn.Linear(width, hidden_size)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_size, num_classes)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Class logits.

        :param input_ids: ``(batch, seq_len)`` long; required when built with ``vocab_size``.
        :param attention_mask: ``(batch, seq_len)``, 1 on tokens and 0 on padding.
        :param features: ``(batch, in_features)`` float; required when built with
            ``in_features``.
        :returns: ``(batch, num_classes)`` float logits.
        :raises ValueError: an input the model was built for is missing, one it was not built
            for is given, or a shape does not fit.
        """
        parts = []
        if self.embedding is not None:
            if input_ids is None:
                msg = "MLPClassifier was built for text: pass input_ids (batch, seq_len)"
                raise ValueError(msg)
            parts.append(self._pooled(self.embedding, input_ids, attention_mask))
        elif input_ids is not None:
            msg = (
                "MLPClassifier was built for tabular features only (no vocab_size): pass "
                "features=(batch, in_features), not input_ids"
            )
            raise ValueError(msg)
        if self.in_features is not None:
            if features is None or features.dim() != 2 or features.shape[1] != self.in_features:
                got = "nothing" if features is None else f"shape {tuple(features.shape)}"
                msg = (
                    f"MLPClassifier was built for features of shape (batch, {self.in_features}): "
                    f"got {got}"
                )
                raise ValueError(msg)
            parts.append(features.to(self.hidden.weight.dtype))
        elif features is not None:
            msg = (
                "MLPClassifier was built for text only (no in_features): set the task's "
                "preprocessing_config['num_features'] to accept features"
            )
            raise ValueError(msg)
        joined = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        hidden: torch.Tensor = self.dropout(self.activation(self.hidden(joined)))
        logits: torch.Tensor = self.output(hidden)
        return logits

    @staticmethod
    def _pooled(
        embedding: nn.Embedding, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        if input_ids.dim() != 2:
            msg = (
                f"MLPClassifier expects input_ids of shape (batch, seq_len), got "
                f"{tuple(input_ids.shape)}"
            )
            raise ValueError(msg)
        embedded: torch.Tensor = embedding(input_ids)
        if attention_mask is None:
            return embedded.mean(dim=1)
        weights = (attention_mask != 0).to(embedded.dtype).unsqueeze(-1)
        counts = weights.sum(dim=1).clamp(min=1.0)
        return (embedded * weights).sum(dim=1) / counts


def _check_sizes(
    num_classes: int,
    hidden_size: int,
    vocab_size: int | None,
    in_features: int | None,
    dropout: float,
) -> None:
    sizes = {
        "num_classes": num_classes,
        "hidden_size": hidden_size,
        "vocab_size": vocab_size,
        "in_features": in_features,
    }
    problems = [
        f"{name} must be >= 1: {value}"
        for name, value in sizes.items()
        if value is not None and value < 1
    ]
    if vocab_size is None and in_features is None:
        problems.append("give vocab_size (text input), in_features (tabular input) or both")
    if not 0 <= dropout < 1:
        problems.append(f"dropout must lie in [0, 1): {dropout}")
    if problems:
        msg = "cannot build MLPClassifier: " + "; ".join(problems)
        raise ValueError(msg)
