"""The five built-in loss strategies: hand computations, masking, errors, the conformance kit,
``ModelOutput.from_raw`` and the registry face."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from treadle.errors import UnknownNameError
from treadle.losses import LossStrategyRegistry, ModelOutput, get_loss_strategy
from treadle.testing.losses import check_loss_strategy

# -- conformance: every built-in, every layout it takes --------------------------------------

CONFORMANCE = [
    ("classification", "classification", {}),
    ("classification", "classification", {"label_smoothing": 0.1}),
    ("language_modeling", "language_modeling", {}),
    ("peft", "classification", {}),
    ("peft", "language_modeling", {}),
    ("quantization_safe", "classification", {"bits": 8}),
    ("quantization_safe", "language_modeling", {"bits": 4, "symmetric": False}),
    ("vision", "classification", {"task": "classification"}),
    ("vision", "multilabel", {"task": "multilabel"}),
    ("vision", "segmentation", {"task": "segmentation"}),
]


@pytest.mark.parametrize(("name", "layout", "options"), CONFORMANCE)
def test_builtin_passes_the_conformance_kit(
    name: str, layout: Any, options: dict[str, Any]
) -> None:
    report = check_loss_strategy(lambda: get_loss_strategy(name, **options), layout)
    assert report.details["accumulation"] == "num_items_in_batch"
    assert report.details["all_masked"] == "error"
    assert report.details["max_gradient_difference"] < 1e-5
    assert "accumulation invariance" in report.passed


def test_the_kit_catches_a_loss_that_means_per_micro_batch() -> None:
    """A loss that ignores num_items_in_batch (the pre-fix HF behaviour) must fail the kit."""

    class MeanPerBatch:
        def validate_inputs(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
            get_loss_strategy("language_modeling").validate_inputs(logits, labels)

        def compute_loss(
            self, logits: torch.Tensor, labels: torch.Tensor, inputs: Any = None
        ) -> torch.Tensor:
            inner = get_loss_strategy("language_modeling")
            rest = {k: v for k, v in (inputs or {}).items() if k != "num_items_in_batch"}
            return inner.compute_loss(logits, labels, rest)

        def count_items(self, labels: torch.Tensor, inputs: Any = None) -> int:
            return int(get_loss_strategy("language_modeling").count_items(labels, inputs))

    with pytest.raises(AssertionError, match="num_items"):
        check_loss_strategy(MeanPerBatch, "language_modeling")


# -- language modeling ----------------------------------------------------------------------


def _lm_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=generator, requires_grad=True)
    labels = torch.tensor([[4, 5, 6, 7, 2], [8, 9, 2, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    return logits, labels, mask


def test_language_modeling_shifts_and_skips_padding_like_a_hand_computation() -> None:
    logits, labels, mask = _lm_batch()
    loss = get_loss_strategy("language_modeling").compute_loss(
        logits, labels, {"attention_mask": mask, "pad_token_id": 0}
    )
    targets = labels[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 11), targets.reshape(-1))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad is not None
    # the padded positions' logits (whose next tokens are padding) get no gradient
    assert torch.all(logits.grad[1, 2:] == 0)
    assert torch.all(logits.grad[:, -1] == 0)


def test_language_modeling_without_mask_excludes_the_pad_id() -> None:
    logits, labels, _ = _lm_batch()
    loss = get_loss_strategy("language_modeling").compute_loss(logits, labels, {"pad_token_id": 0})
    targets = labels[:, 1:].masked_fill(labels[:, 1:] == 0, -100)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 11), targets.reshape(-1))
    torch.testing.assert_close(loss, expected)


def test_when_pad_equals_eos_the_mask_decides_so_real_eos_counts() -> None:
    logits, _, mask = _lm_batch()
    eos = 2
    labels = torch.tensor([[4, 5, 6, 7, eos], [8, 9, eos, eos, eos]])  # pad id == eos id
    strategy = get_loss_strategy("language_modeling")
    inputs = {"attention_mask": mask, "pad_token_id": eos}
    assert strategy.count_items(labels, inputs) == 4 + 2  # both real EOS tokens count
    loss = strategy.compute_loss(logits, labels, inputs)
    targets = labels[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 11), targets.reshape(-1))
    torch.testing.assert_close(loss, expected)


def test_language_modeling_sum_over_num_items() -> None:
    logits, labels, mask = _lm_batch()
    strategy = get_loss_strategy("language_modeling")
    inputs: dict[str, Any] = {"attention_mask": mask}
    mean = strategy.compute_loss(logits, labels, inputs)
    counted = strategy.count_items(labels, inputs)
    summed = strategy.compute_loss(logits, labels, {**inputs, "num_items_in_batch": 100})
    torch.testing.assert_close(summed, mean * counted / 100)


def test_all_padding_batch_is_a_clear_error_not_nan() -> None:
    logits = torch.randn(2, 4, 7)
    labels = torch.full((2, 4), -100)
    with pytest.raises(ValueError, match="padding"):
        get_loss_strategy("language_modeling").compute_loss(logits, labels)


def test_language_modeling_shape_error_names_shapes_and_dtypes() -> None:
    with pytest.raises(ValueError, match=r"\(2, 5, 11\) torch.float32.*\(2, 4\) torch.int64"):
        get_loss_strategy("language_modeling").validate_inputs(
            torch.randn(2, 5, 11), torch.zeros(2, 4, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="integer"):
        get_loss_strategy("language_modeling").validate_inputs(
            torch.randn(2, 5, 11), torch.zeros(2, 5)
        )


def test_sequence_to_sequence_mode_does_not_shift() -> None:
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, 2, -100], [3, 4, 0]])
    loss = get_loss_strategy("language_modeling", shift_labels=False).compute_loss(logits, labels)
    expected = F.cross_entropy(logits.reshape(-1, 5), labels.reshape(-1))
    torch.testing.assert_close(loss, expected)


# -- classification ----------------------------------------------------------------------------


def test_classification_matches_cross_entropy_with_weights_and_smoothing() -> None:
    logits = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 1, 0])
    weights = torch.tensor([1.0, 2.0, 0.5, 3.0])
    strategy = get_loss_strategy("classification", label_smoothing=0.1)
    loss = strategy.compute_loss(logits, labels, {"class_weights": weights})
    expected = F.cross_entropy(logits, labels, weight=weights, label_smoothing=0.1)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()


def test_classification_refuses_out_of_range_and_multi_label_with_the_values() -> None:
    strategy = get_loss_strategy("classification")
    with pytest.raises(ValueError, match="7"):
        strategy.compute_loss(torch.randn(3, 4), torch.tensor([0, 7, 1]))
    with pytest.raises(ValueError, match="argmax"):
        strategy.compute_loss(torch.randn(3, 4), torch.tensor([[0, 1, 0, 0]] * 3))


def test_classification_skips_an_ignore_index_that_is_also_a_class_id() -> None:
    """ignore_index=0 with labels holding 0: those samples do not count. (They did while a
    batch whose labels were all in range took a path without ignore_index.)"""
    torch.manual_seed(0)
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 1, 2, 0])
    loss = get_loss_strategy("classification", ignore_index=0).compute_loss(logits, labels)
    assert torch.equal(loss, F.cross_entropy(logits, labels, ignore_index=0))


def test_classification_equals_a_hand_written_cross_entropy_bit_for_bit() -> None:
    torch.manual_seed(0)
    logits = torch.randn(32, 10, requires_grad=True)
    labels = torch.randint(0, 10, (32,))
    labels[3] = -100
    loss = get_loss_strategy("classification").compute_loss(logits, labels)
    assert torch.equal(loss, F.cross_entropy(logits, labels))


def test_classification_checks_every_batch_not_only_the_first() -> None:
    """The class ids are left to the CPU kernel's own check (no extra pass, no sync): a bad id
    in a later batch still gets the message with its position and value, and a batch whose
    labels are all ignored is still refused rather than NaN."""
    strategy = get_loss_strategy("classification")
    strategy.compute_loss(torch.randn(3, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"out of range at \(position: value\) 1: 9\."):
        strategy.compute_loss(torch.randn(3, 4), torch.tensor([0, 9, 1]))
    with pytest.raises(ValueError, match=r"out of range at \(position: value\) 2: -3\."):
        strategy.compute_loss(torch.randn(3, 4), torch.tensor([0, 1, -3]))
    with pytest.raises(ValueError, match="padding, masked or ignored"):
        strategy.compute_loss(torch.randn(3, 4), torch.full((3,), -100))
    with pytest.raises(ValueError, match="padding, masked or ignored"):
        strategy.compute_loss(
            torch.randn(3, 4), torch.full((3,), -100), {"class_weights": torch.ones(4)}
        )
    nan_logits = torch.full((3, 4), math.nan)
    assert math.isnan(float(strategy.compute_loss(nan_logits, torch.tensor([0, 1, 2]))))


def test_the_device_check_of_class_ids_names_the_range() -> None:
    """On an accelerator the ids are checked by an asynchronous device assertion; on the CPU
    the same call raises at once, which is how its message is tested here."""
    from treadle_losses.classification import assert_class_ids_async

    assert_class_ids_async(torch.tensor([0, 3, -100]), 4, -100, "ClassificationLoss")
    with pytest.raises(RuntimeError, match=r"ClassificationLoss: labels must be class ids in"):
        assert_class_ids_async(torch.tensor([0, 4]), 4, -100, "ClassificationLoss")


# -- PEFT -----------------------------------------------------------------------------------


class _LoraLinear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.base = torch.nn.Linear(4, 3)
        self.lora_A = torch.nn.Linear(4, 2, bias=False)
        self.lora_B = torch.nn.Linear(2, 3, bias=False)
        self.scaling = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scaling * self.lora_B(self.lora_A(x))


def test_peft_trains_adapters_only_and_scales_the_branch() -> None:
    model = _LoraLinear()
    strategy = get_loss_strategy("peft", adapter_scale=0.5)
    strategy.prepare_model(model)  # type: ignore[attr-defined]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"lora_A.weight", "lora_B.weight"}
    assert model.scaling == 0.5
    strategy.prepare_model(model)  # type: ignore[attr-defined]
    assert model.scaling == 0.5  # preparing twice does not compound
    loss = strategy.compute_loss(model(torch.randn(5, 4)), torch.tensor([0, 1, 2, 0, 1]))
    loss.backward()
    assert model.base.weight.grad is None
    assert model.lora_A.weight.grad is not None


def test_peft_refuses_a_model_without_adapters_and_catches_unfrozen_base() -> None:
    strategy = get_loss_strategy("peft")
    with pytest.raises(ValueError, match="lora_"):
        strategy.prepare_model(torch.nn.Linear(4, 3))  # type: ignore[attr-defined]
    model = _LoraLinear()
    strategy.prepare_model(model)  # type: ignore[attr-defined]
    model.base.weight.requires_grad_(True)
    with pytest.raises(RuntimeError, match=r"base\.weight"):
        strategy.compute_loss(model(torch.randn(2, 4)), torch.tensor([0, 1]))


# -- quantization ------------------------------------------------------------------------------


def test_quantization_safe_computes_in_float32_for_half_logits() -> None:
    logits = torch.randn(4, 5).to(torch.bfloat16).requires_grad_(True)
    labels = torch.tensor([0, 1, 2, 3])
    loss = get_loss_strategy("quantization_safe", bits=8).compute_loss(logits, labels)
    assert loss.dtype == torch.float32
    loss.backward()
    assert logits.grad is not None


def test_quantization_is_close_to_plain_loss_at_8_bits_and_coarser_at_4() -> None:
    torch.manual_seed(0)
    logits = torch.randn(64, 10)
    labels = torch.randint(0, 10, (64,))
    plain = F.cross_entropy(logits, labels)
    at8 = get_loss_strategy("quantization_safe", bits=8).compute_loss(logits, labels)
    at4 = get_loss_strategy("quantization_safe", bits=4).compute_loss(logits, labels)
    assert abs(float(at8 - plain)) < abs(float(at4 - plain)) + 1e-6
    assert abs(float(at8 - plain)) < 0.05


def test_quantization_rejects_other_bit_widths_and_non_finite_logits() -> None:
    with pytest.raises(ValueError, match="bits"):
        get_loss_strategy("quantization_safe", bits=3)
    logits = torch.randn(2, 3)
    logits[0, 1] = math.nan
    with pytest.raises(ValueError, match=r"non-finite|NaN|nan"):
        get_loss_strategy("quantization_safe").compute_loss(logits, torch.tensor([0, 1]))


# -- vision ------------------------------------------------------------------------------------


def test_vision_segmentation_matches_cross_entropy_with_ignore_index() -> None:
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    labels[0, 0, :] = -100
    loss = get_loss_strategy("vision", task="segmentation").compute_loss(logits, labels)
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels, ignore_index=-100))


def test_vision_multilabel_matches_bce() -> None:
    logits = torch.randn(4, 5)
    targets = torch.randint(0, 2, (4, 5)).float()
    loss = get_loss_strategy("vision", task="multilabel").compute_loss(logits, targets)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits, targets))


def test_vision_unknown_task_lists_the_supported_ones() -> None:
    with pytest.raises(ValueError, match="segmentation"):
        get_loss_strategy("vision", task="detection")


# -- ModelOutput -------------------------------------------------------------------------------


def test_model_output_from_every_shape_a_model_returns() -> None:
    logits = torch.randn(2, 3)
    loss = torch.tensor(0.5)
    assert ModelOutput.from_raw(logits).logits is logits
    assert ModelOutput.from_raw((logits, "hidden")).logits is logits
    parsed = ModelOutput.from_raw({"logits": logits, "loss": loss, "hidden": 1})
    assert parsed.loss is loss
    assert parsed.extra == {"hidden": 1}
    hf_like = SimpleNamespace(logits=logits, loss=loss)
    assert ModelOutput.from_raw(hf_like).loss is loss


def test_model_output_errors_name_what_was_returned() -> None:
    with pytest.raises(TypeError, match="without 'logits'"):
        ModelOutput.from_raw({"scores": torch.randn(1)})
    with pytest.raises(TypeError, match="int"):
        ModelOutput.from_raw(3)


# -- registry face -----------------------------------------------------------------------------


def test_registry_lists_the_five_and_their_plugin() -> None:
    registry = LossStrategyRegistry()
    for name in ("classification", "language_modeling", "peft", "quantization_safe", "vision"):
        assert name in registry
        assert registry.entry(name).provenance.plugin == "losses"


def test_runtime_registration_and_unknown_name(plugin_manager: Any) -> None:
    registry = LossStrategyRegistry(plugin_manager)
    registry.register("weighted-ce", get_loss_strategy("classification"))
    assert "weighted-ce" in registry.names()
    with pytest.raises(UnknownNameError, match="weighted-ce"):
        registry.get("nope")
