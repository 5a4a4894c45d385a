"""Model factories ``(training_config, task_spec) -> nn.Module`` and which tasks each fits."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from treadle.errors import ConfigError
from treadle_models.cnn import SmallCNN
from treadle_models.gpt import TinyGPT
from treadle_models.mlp import MLPClassifier

if TYPE_CHECKING:
    from treadle.config import TrainingConfig
    from treadle.task import TaskSpec

__all__ = [
    "MODEL_TASKS",
    "build_mlp_classifier",
    "build_small_cnn",
    "build_tiny_gpt",
    "fitting_models",
]

#: Channels per stage of ``small_cnn``: two stages up to 16 pixels a side, three above (or
#: when the task does not say its image size).
SMALL_IMAGE_CHANNELS = (16, 32)
LARGE_IMAGE_CHANNELS = (16, 32, 64)
_SMALL_IMAGE_SIDE = 16


def _fits_language_modeling(task: TaskSpec) -> bool:
    return task.task_type == "language_modeling" and task.modality == "text"


def _fits_tabular_or_text_classification(task: TaskSpec) -> bool:
    return task.task_type in ("classification", "multilabel_classification") and (
        task.modality in ("text", "tabular")
    )


def _fits_image_classification(task: TaskSpec) -> bool:
    return task.modality == "vision" and task.task_type in (
        "image_classification",
        "multilabel_classification",
        "classification",
    )


#: For each built-in model: what it serves (for error messages) and the test of a task.
MODEL_TASKS: dict[str, tuple[str, Callable[[TaskSpec], bool]]] = {
    "tiny_gpt": (
        "causal language modeling of text (task_type 'language_modeling')",
        _fits_language_modeling,
    ),
    "mlp_classifier": (
        "classification of text or tabular features (task_type 'classification' or "
        "'multilabel_classification', modality 'text' or 'tabular')",
        _fits_tabular_or_text_classification,
    ),
    "small_cnn": (
        "classification of images (modality 'vision', task_type 'image_classification', "
        "'multilabel_classification' or 'classification')",
        _fits_image_classification,
    ),
}


def fitting_models(task_spec: TaskSpec) -> list[str]:
    """The built-in model types that serve ``task_spec``, in registration order."""
    return [name for name, (_, fits) in MODEL_TASKS.items() if fits(task_spec)]


def _require_fit(model_type: str, task_spec: TaskSpec) -> None:
    serves, fits = MODEL_TASKS[model_type]
    if fits(task_spec):
        return
    fitting = fitting_models(task_spec)
    advice = (
        f"Built-in models for this task: {', '.join(fitting)}; set model_type to one of them."
        if fitting
        else "No built-in model serves this task: register a factory for it in a plugin "
        "(treadle_register_models) and set model_type to its name."
    )
    msg = (
        f"model_type {model_type!r} does not fit task {task_spec.name!r} (task_type "
        f"{task_spec.task_type!r}, modality {task_spec.modality!r}): {model_type} serves "
        f"{serves}. {advice}"
    )
    raise ConfigError(msg)


def _require_pad_token(model_type: str, task_spec: TaskSpec, vocab_size: int) -> None:
    if not 0 <= task_spec.pad_token_id < vocab_size:
        msg = (
            f"{model_type}: the pad_token_id {task_spec.pad_token_id} of task "
            f"{task_spec.name!r} lies outside the vocabulary (vocab_size {vocab_size}): "
            f"raise vocab_size or use a pad id below it"
        )
        raise ConfigError(msg)


def _as_config_error(model_type: str, build: Callable[[], Any]) -> Any:
    try:
        return build()
    except ValueError as err:
        msg = f"{model_type}: {err}"
        raise ConfigError(msg) from err


def build_tiny_gpt(training_config: TrainingConfig, task_spec: TaskSpec) -> TinyGPT:
    """A :class:`TinyGPT` sized by the config's ``vocab_size``, ``d_model``, ``num_layers``,
    ``num_heads``, ``d_ff``, ``max_seq_len`` and ``dropout``.

    :raises ConfigError: the task is not language modeling, the task's sequences are longer
        than the config's ``max_seq_len``, its pad id is outside the vocabulary, or the sizes
        do not fit together.
    """
    _require_fit("tiny_gpt", task_spec)
    _require_pad_token("tiny_gpt", task_spec, training_config.vocab_size)
    task_length = task_spec.max_seq_len
    if task_length is not None and task_length > training_config.max_seq_len:
        msg = (
            f"tiny_gpt: task {task_spec.name!r} has sequences of {task_length} tokens "
            f"(TaskSpec.max_seq_len) but the model's max_seq_len is "
            f"{training_config.max_seq_len} (TrainingConfig.max_seq_len): raise the config's "
            f"max_seq_len to at least {task_length} or shorten the task's"
        )
        raise ConfigError(msg)
    model: TinyGPT = _as_config_error(
        "tiny_gpt",
        lambda: TinyGPT(
            vocab_size=training_config.vocab_size,
            d_model=training_config.d_model,
            num_layers=training_config.num_layers,
            num_heads=training_config.num_heads,
            d_ff=training_config.d_ff,
            max_seq_len=training_config.max_seq_len,
            dropout=training_config.dropout,
        ),
    )
    return model


def build_mlp_classifier(training_config: TrainingConfig, task_spec: TaskSpec) -> MLPClassifier:
    """An :class:`MLPClassifier` of hidden width ``d_model`` with the task's classes.

    Text tasks embed ``input_ids`` over ``vocab_size``; a task whose
    ``preprocessing_config["num_features"]`` is set also takes ``features`` of that width
    (tabular tasks must set it).

    :raises ConfigError: the task is not text or tabular classification, a tabular task
        lacks ``num_features``, or it is not a positive integer.
    """
    _require_fit("mlp_classifier", task_spec)
    num_features = task_spec.preprocessing_config.get("num_features")
    if num_features is not None and (
        isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1
    ):
        msg = (
            f"mlp_classifier: preprocessing_config['num_features'] of task {task_spec.name!r} "
            f"must be an integer >= 1: {num_features!r}"
        )
        raise ConfigError(msg)
    if task_spec.modality == "tabular" and num_features is None:
        msg = (
            f"mlp_classifier: tabular task {task_spec.name!r} does not say its width: set "
            f"preprocessing_config['num_features'] to the number of feature columns"
        )
        raise ConfigError(msg)
    vocab_size = training_config.vocab_size if task_spec.modality == "text" else None
    if vocab_size is not None:
        _require_pad_token("mlp_classifier", task_spec, vocab_size)
    assert task_spec.num_classes is not None  # TaskSpec requires it for classification
    num_classes = task_spec.num_classes
    model: MLPClassifier = _as_config_error(
        "mlp_classifier",
        lambda: MLPClassifier(
            num_classes=num_classes,
            hidden_size=training_config.d_model,
            vocab_size=vocab_size,
            in_features=num_features,
            dropout=training_config.dropout,
        ),
    )
    return model


def _image_side(task_spec: TaskSpec) -> int | None:
    size = task_spec.preprocessing_config.get("image_size")
    if isinstance(size, int):
        return size
    if isinstance(size, list | tuple) and size:
        return max(int(side) for side in size)
    return None


def _in_channels(task_spec: TaskSpec) -> int:
    config = task_spec.preprocessing_config
    channels = config.get("num_channels", config.get("channels"))
    if channels is None:
        mean = config.get("mean")
        channels = len(mean) if isinstance(mean, list | tuple) else 3
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        msg = (
            f"small_cnn: preprocessing_config['num_channels'] of task {task_spec.name!r} "
            f"must be an integer >= 1: {channels!r}"
        )
        raise ConfigError(msg)
    return channels


def build_small_cnn(training_config: TrainingConfig, task_spec: TaskSpec) -> SmallCNN:
    """A :class:`SmallCNN` for the task's image channels and classes.

    Input channels come from ``preprocessing_config``: ``num_channels`` (or ``channels``,
    else the length of ``mean``; 3 when none is set). Images up to 16 pixels a side get two
    stages (16, 32 channels), larger or unsized ones three (16, 32, 64). ``dropout`` comes
    from the config; the transformer sizes are not used.

    :raises ConfigError: the task is not image classification, or gives a bad channel count.
    """
    _require_fit("small_cnn", task_spec)
    assert task_spec.num_classes is not None  # TaskSpec requires it for classification
    num_classes = task_spec.num_classes
    in_channels = _in_channels(task_spec)
    side = _image_side(task_spec)
    channels = (
        SMALL_IMAGE_CHANNELS
        if side is not None and side <= _SMALL_IMAGE_SIDE
        else LARGE_IMAGE_CHANNELS
    )
    model: SmallCNN = _as_config_error(
        "small_cnn",
        lambda: SmallCNN(
            in_channels=in_channels,
            num_classes=num_classes,
            channels=channels,
            dropout=training_config.dropout,
        ),
    )
    return model
