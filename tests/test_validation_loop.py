"""ValidationLoop: metrics align token labels as the loss does."""

from __future__ import annotations

import pytest
import torch

from treadle.engine.loops import ValidationLoop
from treadle.losses import get_loss_strategy
from treadle.plugins import get_registry


class _Echo(torch.nn.Module):
    """Logits that predict each label at its own position: perfect for aligned labels."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.scale = torch.nn.Parameter(torch.tensor(20.0))

    def forward(self, input_ids: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.nn.functional.one_hot(input_ids, self.vocab).float()


@pytest.mark.parametrize(("shift", "expected"), [(False, 1.0), (True, 0.0)])
def test_token_metrics_follow_the_loss_shift(shift: bool, expected: float) -> None:
    labels = torch.tensor([[3, 4, 5, 6], [7, 8, 9, 3]])
    batch = {"input_ids": labels, "labels": labels}
    loop = ValidationLoop(
        get_loss_strategy("language_modeling", shift_labels=shift),
        metrics=[get_registry("metrics").get("token_accuracy")],
    )
    result = loop.run_epoch(0, _Echo(10), [batch], "cpu")
    assert result.metrics["token_accuracy"] == pytest.approx(expected)
