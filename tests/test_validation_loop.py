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


class _Table(torch.nn.Module):
    """Logits looked up per input token from a random table."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(vocab, vocab)

    def forward(self, input_ids: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
        return self.table(input_ids)  # type: ignore[no-any-return]


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


def test_epoch_loss_counts_the_tokens_the_loss_counts_without_a_mask() -> None:
    """Batches without attention_mask: padding (pad id 0) is left out of both the loss and
    the item count that weighs each batch, so the epoch loss is the mean over real tokens."""
    torch.manual_seed(0)
    vocab = 10
    batches = [
        {"input_ids": torch.tensor([[3, 4, 5, 6, 7, 8]])},  # 5 target tokens
        {"input_ids": torch.tensor([[3, 4, 0, 0, 0, 0]])},  # 1 target token, 4 padding
    ]
    for batch in batches:
        batch["labels"] = batch["input_ids"]
    model = _Table(vocab)  # logits differ per token, so how batches are weighed matters
    loop = ValidationLoop(get_loss_strategy("language_modeling"), pad_token_id=0)
    result = loop.run_epoch(0, model, batches, "cpu")
    with torch.no_grad():
        logits = torch.cat([model(b["input_ids"])[:, :-1].reshape(-1, vocab) for b in batches])
    targets = torch.cat([b["labels"][:, 1:].reshape(-1) for b in batches])
    expected = torch.nn.functional.cross_entropy(logits, targets.masked_fill(targets == 0, -100))
    assert result.loss == pytest.approx(float(expected), rel=1e-6)
