"""Streaming validation metrics equal a full-batch computation over ragged batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F

import treadle_metrics.plugin
from treadle.testing import check_hookimpls, isolated_plugin_manager
from treadle_metrics.classification import Accuracy
from treadle_metrics.language import Perplexity, TokenAccuracy
from treadle_metrics.segmentation import PixelAccuracy

RAGGED = (3, 7, 1, 12, 5)  # 28 samples in batches of unequal size


def ragged(*tensors: torch.Tensor) -> Iterator[tuple[torch.Tensor, ...]]:
    start = 0
    for size in RAGGED:
        yield tuple(tensor[start : start + size] for tensor in tensors)
        start += size


def lm_data(vocab: int = 11, length: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(sum(RAGGED), length, vocab, generator=generator) * 3
    labels = torch.randint(0, vocab, (sum(RAGGED), length), generator=generator)
    labels[torch.rand(labels.shape, generator=generator) < 0.2] = -100  # padding
    return logits, labels


def streamed(metric: object, logits: torch.Tensor, labels: torch.Tensor, inputs: object) -> dict:
    for batch_logits, batch_labels in ragged(logits, labels):
        metric.update(batch_logits, batch_labels, inputs)  # type: ignore[attr-defined]
    return metric.compute()  # type: ignore[attr-defined, no-any-return]


def test_accuracy_equals_the_full_batch_accuracy() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(sum(RAGGED), 4, generator=generator)
    labels = torch.randint(0, 4, (sum(RAGGED),), generator=generator)
    labels[::5] = -100
    kept = labels != -100
    expected = (logits.argmax(-1)[kept] == labels[kept]).double().mean().item()
    assert streamed(Accuracy(), logits, labels, None) == {"accuracy": pytest.approx(expected)}


def test_perplexity_is_exp_of_the_mean_token_nll_with_the_lm_shift() -> None:
    logits, labels = lm_data()
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1))
    expected = torch.exp(nll).item()
    result = streamed(Perplexity(), logits, labels, {"attention_mask": None})
    assert result["perplexity"] == pytest.approx(expected, rel=1e-6)


def test_token_accuracy_compares_the_prediction_at_t_with_the_label_at_t_plus_1() -> None:
    logits, labels = lm_data()
    predictions, targets = logits[:, :-1].argmax(-1), labels[:, 1:]
    kept = targets != -100
    expected = (predictions[kept] == targets[kept]).double().mean().item()
    result = streamed(TokenAccuracy(), logits, labels, None)
    assert result["token_accuracy"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("make_metric", "inputs"),
    [
        (lambda: Perplexity(shift_labels=False), None),
        (Perplexity, {"decoder_input_ids": torch.zeros(1)}),
        (Perplexity, {"shift_labels": False}),
    ],
)
def test_sequence_to_sequence_labels_are_not_shifted(
    make_metric: Callable[[], Perplexity], inputs: object
) -> None:
    logits, labels = lm_data()
    expected = torch.exp(F.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1))).item()
    result = streamed(make_metric(), logits, labels, inputs)
    assert result["perplexity"] == pytest.approx(expected, rel=1e-6)


def test_unshifted_token_accuracy_compares_aligned_positions() -> None:
    logits, labels = lm_data()
    kept = labels != -100
    expected = (logits.argmax(-1)[kept] == labels[kept]).double().mean().item()
    result = streamed(TokenAccuracy(shift_labels=False), logits, labels, None)
    assert result["token_accuracy"] == pytest.approx(expected)


def test_pixel_accuracy_equals_the_full_batch_pixel_accuracy() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(sum(RAGGED), 3, 6, 5, generator=generator)
    labels = torch.randint(0, 3, (sum(RAGGED), 6, 5), generator=generator)
    labels[:, 0, :] = -100
    kept = labels != -100
    expected = (logits.argmax(1)[kept] == labels[kept]).double().mean().item()
    result = streamed(PixelAccuracy(), logits, labels, None)
    assert result["pixel_accuracy"] == pytest.approx(expected)


@pytest.mark.parametrize("make_metric", [Accuracy, Perplexity, TokenAccuracy, PixelAccuracy])
def test_metrics_keep_running_sums_only(make_metric: Callable[[], object]) -> None:
    metric = make_metric()
    shapes = {
        Accuracy: ((64, 10), (64,)),
        Perplexity: ((8, 16, 10), (8, 16)),
        TokenAccuracy: ((8, 16, 10), (8, 16)),
        PixelAccuracy: ((4, 10, 8, 8), (4, 8, 8)),
    }[make_metric]  # type: ignore[index]
    for _ in range(3):
        metric.update(torch.randn(shapes[0]), torch.randint(0, 10, shapes[1]), None)  # type: ignore[attr-defined]

    def tensors(value: object) -> Iterator[torch.Tensor]:
        if isinstance(value, torch.Tensor):
            yield value
        elif hasattr(value, "__dict__"):
            for item in vars(value).values():
                yield from tensors(item)

    held = list(tensors(metric))
    assert held
    assert all(tensor.numel() == 1 for tensor in held)


def test_no_counted_item_gives_nan() -> None:
    metric = Accuracy()
    metric.update(torch.randn(2, 3), torch.tensor([-100, -100]), None)
    assert torch.isnan(torch.tensor(metric.compute()["accuracy"]))


@pytest.mark.parametrize(
    ("metric", "logits", "labels", "message"),
    [
        (Accuracy(), torch.randn(4, 3), torch.zeros(4, 3), "'accuracy' expects logits"),
        (Perplexity(), torch.randn(4, 10), torch.zeros(4), r"\(batch, seq_len, vocab\)"),
        (PixelAccuracy(), torch.randn(2, 3, 4, 4), torch.zeros(2, 4), r"got logits \(2, 3, 4, 4\)"),
    ],
)
def test_wrong_shapes_are_refused_naming_metric_and_shapes(
    metric: object, logits: torch.Tensor, labels: torch.Tensor, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        metric.update(logits, labels.long(), None)  # type: ignore[attr-defined]


def test_the_plugin_registers_every_metric_as_a_class() -> None:
    assert check_hookimpls(treadle_metrics.plugin) == []
    registry = isolated_plugin_manager(("metrics", treadle_metrics.plugin)).registry("metrics")
    assert registry.names() == ["accuracy", "perplexity", "pixel_accuracy", "token_accuracy"]
    assert isinstance(registry.create("token_accuracy"), TokenAccuracy)
    assert registry.create("perplexity", shift_labels=False).shift_labels is False
