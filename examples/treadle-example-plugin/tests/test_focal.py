"""The focal loss: what it computes, beyond the contract the conformance kit checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from treadle_example.focal import FocalLoss


def test_gamma_zero_is_cross_entropy() -> None:
    logits, labels = torch.randn(8, 3), torch.randint(0, 3, (8,))
    loss = FocalLoss(gamma=0.0).compute_loss(logits, labels)
    assert torch.allclose(loss, F.cross_entropy(logits, labels))


def test_a_negative_gamma_is_refused() -> None:
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1.0)
