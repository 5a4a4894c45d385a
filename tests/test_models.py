"""The built-in models plugin: tiny_gpt, mlp_classifier and small_cnn, built through the
``models`` registry from a TrainingConfig and a TaskSpec."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn import functional

import treadle_models.plugin
from treadle.config import TrainingConfig, TrainingConfigBuilder
from treadle.errors import ConfigError
from treadle.plugins import PluginManager, get_plugin_manager, make_plugin_manager
from treadle.task import TaskSpec
from treadle_models import MLPClassifier, SmallCNN, TinyGPT, fitting_models

VOCAB = 61
LENGTH = 12


@pytest.fixture
def plugin_manager() -> PluginManager:
    manager = make_plugin_manager(load_entry_points=False)
    manager.register(treadle_models.plugin, name="models")
    return manager


def _config(**overrides: Any) -> TrainingConfig:
    sizes: dict[str, Any] = {
        "vocab_size": VOCAB,
        "d_model": 16,
        "num_layers": 2,
        "num_heads": 2,
        "d_ff": 32,
        "max_seq_len": LENGTH,
        "dropout": 0.0,
    }
    sizes.update(overrides)
    return TrainingConfigBuilder.quick_prototype().with_model(**sizes).build()


def _build(
    manager: PluginManager, model_type: str, task: TaskSpec, **overrides: Any
) -> torch.nn.Module:
    torch.manual_seed(0)
    factory = manager.registry("models").get(model_type)
    model: torch.nn.Module = factory(_config(model_type=model_type, **overrides), task)
    return model


def _gpt(manager: PluginManager, **overrides: Any) -> TinyGPT:
    model = _build(manager, "tiny_gpt", TaskSpec.language_modeling(max_seq_len=LENGTH), **overrides)
    assert isinstance(model, TinyGPT)
    return model.eval()


def _text_task(num_classes: int = 3, **options: Any) -> TaskSpec:
    return TaskSpec.classification("topics", num_classes=num_classes, max_seq_len=LENGTH, **options)


def _tabular_task(num_features: int | None = 5) -> TaskSpec:
    preprocessing = {} if num_features is None else {"num_features": num_features}
    return TaskSpec.classification(
        "rows", num_classes=4, modality="tabular", preprocessing_config=preprocessing
    )


def _image_task(size: int, channels: int, num_classes: int = 7) -> TaskSpec:
    return TaskSpec(
        name="pictures",
        modality="vision",
        task_type="image_classification",
        num_classes=num_classes,
        preprocessing_config={"image_size": [size, size], "num_channels": channels},
    )


def _ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


# -- registration ------------------------------------------------------------------------------


def test_the_installed_plugin_registers_the_three_models_under_its_entry_point() -> None:
    models = get_plugin_manager().registry("models")

    for name in ("tiny_gpt", "mlp_classifier", "small_cnn"):
        assert name in models


@pytest.mark.parametrize(
    ("model_type", "task", "model_class"),
    [
        ("tiny_gpt", TaskSpec.language_modeling(max_seq_len=LENGTH), TinyGPT),
        ("mlp_classifier", _text_task(), MLPClassifier),
        ("small_cnn", TaskSpec.vision_tiny(), SmallCNN),
    ],
)
def test_each_factory_builds_its_model_from_config_and_task(
    plugin_manager: PluginManager, model_type: str, task: TaskSpec, model_class: type
) -> None:
    assert isinstance(_build(plugin_manager, model_type, task), model_class)


def test_the_same_seed_builds_the_same_weights(plugin_manager: PluginManager) -> None:
    first, second = _gpt(plugin_manager), _gpt(plugin_manager)

    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    ("model_type", "task", "fitting"),
    [
        ("small_cnn", TaskSpec.language_modeling(max_seq_len=LENGTH), "tiny_gpt"),
        ("tiny_gpt", _text_task(), "mlp_classifier"),
        ("mlp_classifier", TaskSpec.vision_tiny(), "small_cnn"),
        ("tiny_gpt", TaskSpec.vision_tiny(), "small_cnn"),
    ],
)
def test_a_model_on_the_wrong_task_names_the_task_and_the_models_that_fit(
    plugin_manager: PluginManager, model_type: str, task: TaskSpec, fitting: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _build(plugin_manager, model_type, task)

    message = str(caught.value)
    assert f"model_type {model_type!r} does not fit task {task.name!r}" in message
    assert f"task_type {task.task_type!r}" in message
    assert f"Built-in models for this task: {fitting}" in message


def test_a_task_no_built_in_serves_says_to_register_a_factory(
    plugin_manager: PluginManager,
) -> None:
    task = TaskSpec.sequence_to_sequence(max_source_len=LENGTH, max_target_len=LENGTH)

    assert fitting_models(task) == []
    with pytest.raises(ConfigError, match=r"No built-in model serves this task.*register"):
        _build(plugin_manager, "tiny_gpt", task)


# -- tiny_gpt ---------------------------------------------------------------------------------


def test_tiny_gpt_gives_logits_per_token_over_the_vocabulary(plugin_manager: PluginManager) -> None:
    model = _gpt(plugin_manager)

    ids = _ids(3, 7)
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids))

    assert logits.shape == (3, 7, VOCAB)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_tiny_gpt_ties_its_lm_head_to_the_token_embedding(plugin_manager: PluginManager) -> None:
    model = _gpt(plugin_manager)

    assert model.lm_head.weight is model.token_embedding.weight


def test_tiny_gpt_parameter_count_matches_its_sizes(plugin_manager: PluginManager) -> None:
    model = _gpt(plugin_manager)
    d, f, layers = 16, 32, 2
    per_block = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * f + f) + (f * d + d)
    expected = VOCAB * d + LENGTH * d + layers * per_block + 2 * d  # head tied: not counted

    assert sum(parameter.numel() for parameter in model.parameters()) == expected


def test_tiny_gpt_is_initialized_as_gpt2(plugin_manager: PluginManager) -> None:
    model = _gpt(plugin_manager, d_model=64, d_ff=256, num_layers=8, num_heads=4, vocab_size=2000)
    parameters = dict(model.named_parameters())

    def std(name: str) -> float:
        return float(parameters[name].detach().std())

    assert std("token_embedding.weight") == pytest.approx(0.02, rel=0.05)
    assert std("blocks.0.mlp.0.weight") == pytest.approx(0.02, rel=0.05)
    residual = 0.02 / (2 * 8) ** 0.5
    assert std("blocks.0.attention.out_proj.weight") == pytest.approx(residual, rel=0.1)
    assert std("blocks.7.mlp.2.weight") == pytest.approx(residual, rel=0.1)
    assert not parameters["blocks.0.attention.qkv.bias"].any()
    assert torch.equal(parameters["final_norm.weight"], torch.ones(64))


def test_tiny_gpt_is_causal_a_later_token_never_changes_earlier_logits(
    plugin_manager: PluginManager,
) -> None:
    model = _gpt(plugin_manager)
    ids = _ids(2, LENGTH)
    changed = ids.clone()
    changed[:, 6] = (changed[:, 6] + 1) % VOCAB

    with torch.no_grad():
        before, after = model(ids), model(changed)
        masked_before = model(ids, torch.ones_like(ids))
        masked_after = model(changed, torch.ones_like(ids))

    assert torch.equal(before[:, :6], after[:, :6])
    assert torch.equal(masked_before[:, :6], masked_after[:, :6])
    assert not torch.allclose(before[:, 6:], after[:, 6:])


def test_right_padding_leaves_the_real_tokens_logits_as_without_padding(
    plugin_manager: PluginManager,
) -> None:
    model = _gpt(plugin_manager)
    short = _ids(1, 5)
    padded = torch.cat([short, torch.zeros(1, LENGTH - 5, dtype=torch.long)], dim=1)
    mask = torch.zeros_like(padded)
    mask[:, :5] = 1

    with torch.no_grad():
        alone = model(short)
        with_mask = model(padded, mask)

    assert torch.allclose(with_mask[:, :5], alone, atol=1e-6)
    assert torch.isfinite(with_mask).all()


def test_a_masked_key_does_not_influence_any_other_position(
    plugin_manager: PluginManager,
) -> None:
    model = _gpt(plugin_manager)
    ids = _ids(1, LENGTH)
    mask = torch.ones_like(ids)
    mask[:, 3] = 0
    changed = ids.clone()
    changed[:, 3] = (changed[:, 3] + 7) % VOCAB

    with torch.no_grad():
        before, after = model(ids, mask), model(changed, mask)
        unmasked_before, unmasked_after = model(ids), model(changed)

    others = [position for position in range(LENGTH) if position != 3]
    assert torch.allclose(before[:, others], after[:, others], atol=1e-6)
    # without the mask the change reaches the later positions: the mask is what hides it
    assert not torch.allclose(unmasked_before[:, 4:], unmasked_after[:, 4:])


@pytest.mark.parametrize("layout", ["left", "all"])
def test_left_padding_or_an_all_padding_row_gives_no_nan(
    plugin_manager: PluginManager, layout: str
) -> None:
    model = _gpt(plugin_manager)
    ids = _ids(2, LENGTH)
    mask = torch.ones_like(ids)
    if layout == "left":
        mask[0, :4] = 0
    else:
        mask[0] = 0

    with torch.no_grad():
        logits = model(ids, mask)

    assert torch.isfinite(logits).all()


def test_tiny_gpt_gradients_reach_every_parameter(plugin_manager: PluginManager) -> None:
    model = _gpt(plugin_manager).train()
    ids = _ids(4, LENGTH)
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0

    logits = model(ids, mask)
    loss = functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    torch.autograd.backward(loss)

    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_tiny_gpt_learns_a_repeated_sequence(plugin_manager: PluginManager) -> None:
    model = _gpt(plugin_manager).train()
    ids = torch.arange(LENGTH).remainder(5).add(1).repeat(4, 1)

    def step() -> float:
        logits = model(ids, torch.ones_like(ids))
        loss = functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
        model.zero_grad()
        torch.autograd.backward(loss)
        with torch.no_grad():  # plain gradient descent: torch.optim would import torch._dynamo
            for parameter in model.parameters():
                assert parameter.grad is not None
                parameter.sub_(0.3 * parameter.grad)
        return float(loss.detach())

    first = step()
    for _ in range(24):
        last = step()

    assert last < first / 4


def test_tiny_gpt_refuses_a_sequence_longer_than_max_seq_len(
    plugin_manager: PluginManager,
) -> None:
    model = _gpt(plugin_manager)

    with pytest.raises(ValueError, match=r"sequence of 13 tokens but its max_seq_len is 12"):
        model(_ids(1, LENGTH + 1))


def test_tiny_gpt_refuses_input_that_is_not_batch_by_length(
    plugin_manager: PluginManager,
) -> None:
    with pytest.raises(ValueError, match=r"shape \(batch, seq_len\), got \(12,\)"):
        _gpt(plugin_manager)(_ids(1, LENGTH)[0])


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ({"d_model": 30, "num_heads": 4}, r"d_model \(30\) must be divisible by num_heads \(4\)"),
        ({"num_layers": 0}, "num_layers must be >= 1: 0"),
        ({"dropout": 1.0}, r"dropout must lie in \[0, 1\): 1.0"),
    ],
)
def test_tiny_gpt_refuses_sizes_that_do_not_fit(sizes: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {
        "vocab_size": VOCAB,
        "d_model": 16,
        "num_layers": 1,
        "num_heads": 2,
        "d_ff": 32,
        "max_seq_len": LENGTH,
    }

    with pytest.raises(ValueError, match=message):
        TinyGPT(**{**arguments, **sizes})


def test_tiny_gpt_refuses_a_task_longer_than_the_config(plugin_manager: PluginManager) -> None:
    task = TaskSpec.language_modeling("long", max_seq_len=LENGTH * 2)

    with pytest.raises(ConfigError, match=r"sequences of 24 tokens.*max_seq_len is 12"):
        _build(plugin_manager, "tiny_gpt", task)


def test_tiny_gpt_sizes_are_checked_by_its_factory_not_by_the_config(
    plugin_manager: PluginManager,
) -> None:
    """Issue 18: TrainingConfig takes d_model 32 with 12 heads (a custom model may use them);
    the tiny_gpt factory refuses them, naming itself and the fix, before any weights exist."""
    task = TaskSpec.language_modeling(max_seq_len=LENGTH)

    with pytest.raises(ConfigError, match=r"tiny_gpt: .*d_model \(32\) must be divisible by "):
        _build(plugin_manager, "tiny_gpt", task, d_model=32, num_heads=12)
    mlp = _build(plugin_manager, "mlp_classifier", _text_task(), d_model=32, num_heads=12)
    assert isinstance(mlp, MLPClassifier), "heads mean nothing to an MLP: its sizes are fine"


def test_a_pad_id_outside_the_vocabulary_is_refused(plugin_manager: PluginManager) -> None:
    task = TaskSpec.language_modeling(max_seq_len=LENGTH, pad_token_id=VOCAB)

    with pytest.raises(ConfigError, match=r"pad_token_id 61 .* outside the vocabulary"):
        _build(plugin_manager, "tiny_gpt", task)


def test_generate_appends_tokens_reproducibly(plugin_manager: PluginManager) -> None:
    model = _gpt(plugin_manager).train()
    prompt = _ids(2, 4)

    first = model.generate(prompt, 12, generator=torch.Generator().manual_seed(1))
    second = model.generate(prompt, 12, generator=torch.Generator().manual_seed(1))

    assert first.shape == (2, 16)  # longer than max_seq_len: the context is cut
    assert torch.equal(first[:, :4], prompt)
    assert torch.equal(first, second)
    assert ((first >= 0) & (first < VOCAB)).all()
    assert model.training  # mode restored


def test_generate_with_top_k_one_is_greedy(plugin_manager: PluginManager) -> None:
    model = _gpt(plugin_manager)
    prompt = _ids(1, 3)

    tokens = model.generate(prompt, 3, temperature=0.5, top_k=1)

    expected = prompt
    with torch.no_grad():
        for _ in range(3):
            expected = torch.cat([expected, model(expected)[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(tokens, expected)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"temperature": 0.0}, "temperature must be a finite number > 0"),
        ({"top_k": 0}, "top_k must be >= 1"),
        ({"max_new_tokens": -1}, "max_new_tokens must be >= 0"),
    ],
)
def test_generate_refuses_bad_arguments(
    plugin_manager: PluginManager, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _gpt(plugin_manager).generate(_ids(1, 3), **{"max_new_tokens": 2, **arguments})


def test_tiny_gpt_traces_with_dynamic_batch_and_length(plugin_manager: PluginManager) -> None:
    model = _gpt(plugin_manager)
    ids = _ids(2, LENGTH)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.13 deprecates TorchScript
        traced = torch.jit.trace(  # type: ignore[no-untyped-call]
            model, (ids, torch.ones_like(ids)), check_trace=False
        )

    other = _ids(3, 7, seed=1)
    mask = torch.ones_like(other)
    mask[0, 3:] = 0
    with torch.no_grad():
        assert torch.allclose(traced(other, mask), model(other, mask), atol=1e-5)


@pytest.mark.slow
def test_tiny_gpt_exports_to_onnx_and_runs_in_onnxruntime(
    plugin_manager: PluginManager, tmp_path: Path
) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = _gpt(plugin_manager)
    ids = _ids(2, LENGTH)
    path = tmp_path / "tiny_gpt.onnx"
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (ids, torch.ones_like(ids)),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_shapes=(axes, axes),
            external_data=False,
            dynamo=True,
            verbose=False,
        )

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    other = _ids(3, 7, seed=1)
    mask = torch.ones_like(other)
    mask[0, 3:] = 0
    feeds = {"input_ids": other.numpy(), "attention_mask": mask.numpy()}
    produced = torch.from_numpy(session.run(None, feeds)[0])
    with torch.no_grad():
        assert torch.allclose(produced, model(other, mask), atol=1e-5)


# -- mlp_classifier ---------------------------------------------------------------------------


def _mlp(manager: PluginManager, task: TaskSpec | None = None) -> MLPClassifier:
    model = _build(manager, "mlp_classifier", task or _text_task())
    assert isinstance(model, MLPClassifier)
    return model.eval()


def test_mlp_classifier_gives_one_row_of_class_logits_per_text(
    plugin_manager: PluginManager,
) -> None:
    model = _mlp(plugin_manager)
    ids = _ids(5, 9)

    assert model(input_ids=ids, attention_mask=torch.ones_like(ids)).shape == (5, 3)
    assert model(input_ids=ids).shape == (5, 3)


def test_mlp_classifier_averages_only_the_unpadded_tokens(plugin_manager: PluginManager) -> None:
    model = _mlp(plugin_manager)
    short = _ids(1, 4)
    padded = torch.cat([short, _ids(1, 5, seed=3)], dim=1)  # padding holding arbitrary ids
    mask = torch.cat([torch.ones(1, 4), torch.zeros(1, 5)], dim=1).long()

    with torch.no_grad():
        assert torch.allclose(model(input_ids=padded, attention_mask=mask), model(input_ids=short))
        empty = model(input_ids=padded, attention_mask=torch.zeros_like(mask))
    assert torch.isfinite(empty).all()


def test_mlp_classifier_parameter_count_matches_its_sizes(plugin_manager: PluginManager) -> None:
    model = _mlp(plugin_manager)
    hidden, classes = 16, 3

    expected = VOCAB * hidden + (hidden * hidden + hidden) + (hidden * classes + classes)
    assert sum(parameter.numel() for parameter in model.parameters()) == expected


def test_mlp_classifier_takes_tabular_features(plugin_manager: PluginManager) -> None:
    model = _mlp(plugin_manager, _tabular_task(num_features=5)).train()
    features = torch.randn(6, 5)

    logits = model(features=features)
    torch.autograd.backward(functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3, 0, 1])))

    assert logits.shape == (6, 4)
    assert model.embedding is None
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_mlp_classifier_joins_text_and_features_when_the_task_has_both(
    plugin_manager: PluginManager,
) -> None:
    model = _mlp(plugin_manager, _text_task(preprocessing_config={"num_features": 2}))
    ids = _ids(3, 6)

    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), features=torch.randn(3, 2))

    assert logits.shape == (3, 3)
    with pytest.raises(ValueError, match=r"features of shape \(batch, 2\): got nothing"):
        model(input_ids=ids)


def test_mlp_classifier_gradients_reach_every_parameter(plugin_manager: PluginManager) -> None:
    model = _mlp(plugin_manager).train()
    ids = _ids(4, 8)

    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    torch.autograd.backward(functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])))

    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_mlp_classifier_refuses_inputs_it_was_not_built_for(
    plugin_manager: PluginManager,
) -> None:
    text_model = _mlp(plugin_manager)
    tabular_model = _mlp(plugin_manager, _tabular_task(num_features=5))

    with pytest.raises(ValueError, match=r"built for text only.*num_features"):
        text_model(input_ids=_ids(1, 3), features=torch.randn(1, 5))
    with pytest.raises(ValueError, match="built for text: pass input_ids"):
        text_model(features=torch.randn(1, 5))
    with pytest.raises(ValueError, match="built for tabular features only"):
        tabular_model(input_ids=_ids(1, 3))
    with pytest.raises(ValueError, match=r"\(batch, 5\): got shape \(2, 4\)"):
        tabular_model(features=torch.randn(2, 4))


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (_tabular_task(num_features=None), r"set preprocessing_config\['num_features'\]"),
        (_tabular_task(num_features=0), r"'num_features'\] .* must be an integer >= 1: 0"),
    ],
)
def test_mlp_classifier_needs_the_width_of_tabular_features(
    plugin_manager: PluginManager, task: TaskSpec, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _build(plugin_manager, "mlp_classifier", task)


# -- small_cnn --------------------------------------------------------------------------------


def _cnn(manager: PluginManager, task: TaskSpec | None = None) -> SmallCNN:
    model = _build(manager, "small_cnn", task or TaskSpec.vision_tiny())
    assert isinstance(model, SmallCNN)
    return model.eval()


def test_small_cnn_classifies_vision_tiny_digits_with_a_few_thousand_parameters(
    plugin_manager: PluginManager,
) -> None:
    model = _cnn(plugin_manager)

    logits = model(pixel_values=torch.randn(4, 1, 8, 8))

    assert logits.shape == (4, 10)
    assert model.in_channels == 1
    assert 3_000 <= sum(parameter.numel() for parameter in model.parameters()) <= 8_000


@pytest.mark.parametrize(("size", "channels"), [(32, 3), (5, 2), (1, 1), (64, 4)])
def test_small_cnn_takes_other_image_sizes_and_channel_counts(
    plugin_manager: PluginManager, size: int, channels: int
) -> None:
    model = _cnn(plugin_manager, _image_task(size, channels))

    assert model(pixel_values=torch.randn(2, channels, size, size)).shape == (2, 7)


def test_small_cnn_reads_the_channels_from_the_normalization_when_not_given(
    plugin_manager: PluginManager,
) -> None:
    task = TaskSpec(
        name="rgb",
        modality="vision",
        task_type="image_classification",
        num_classes=2,
        preprocessing_config={"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]},
    )

    assert _cnn(plugin_manager, task).in_channels == 3


def test_small_cnn_gradients_reach_every_parameter(plugin_manager: PluginManager) -> None:
    model = _cnn(plugin_manager).train()

    logits = model(pixel_values=torch.randn(8, 1, 8, 8))
    torch.autograd.backward(functional.cross_entropy(logits, torch.arange(8)))

    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_small_cnn_refuses_images_with_other_channels(plugin_manager: PluginManager) -> None:
    model = _cnn(plugin_manager)

    with pytest.raises(ValueError, match=r"\(batch, 1, height, width\), got \(2, 3, 8, 8\)"):
        model(pixel_values=torch.randn(2, 3, 8, 8))


def test_small_cnn_refuses_a_bad_channel_count(plugin_manager: PluginManager) -> None:
    with pytest.raises(ConfigError, match=r"'num_channels'\] .* must be an integer >= 1: 0"):
        _build(plugin_manager, "small_cnn", _image_task(8, 0))


def test_small_cnn_traces_with_a_dynamic_batch(plugin_manager: PluginManager) -> None:
    model = _cnn(plugin_manager)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(  # type: ignore[no-untyped-call]
            model, (torch.randn(2, 1, 8, 8),), check_trace=False
        )

    images = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(traced(images), model(images), atol=1e-5)
