"""TaskSpec: what a task is (modality, type, labels, preprocessing) and which plugins serve it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from treadle.config.convert import read_config_file, structure, unstructure, write_json
from treadle.errors import ConfigError

__all__ = ["TASK_DEFAULTS", "TaskSpec"]

#: For each task type: the registered loss, collator and metric names it uses unless the
#: TaskSpec names others. Names only: the core knows no plugin's code.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "language_modeling": {
        "loss": "language_modeling",
        "collator": "language_modeling",
        "metrics": ("perplexity", "token_accuracy"),
    },
    "classification": {
        "loss": "classification",
        "collator": "classification",
        "metrics": ("accuracy",),
    },
    "image_classification": {
        "loss": "vision",
        "collator": "vision",
        "metrics": ("accuracy",),
    },
    "multilabel_classification": {
        "loss": "vision",
        "collator": "vision",
        "metrics": (),
    },
    "semantic_segmentation": {
        "loss": "vision",
        "collator": "vision",
        "metrics": ("pixel_accuracy",),
    },
    "sequence_to_sequence": {
        "loss": "language_modeling",
        "collator": "sequence_to_sequence",
        "metrics": ("perplexity", "token_accuracy"),
    },
}

MODALITIES = ("text", "vision", "audio", "tabular", "multimodal")


def _tuple_or_none(value: Any) -> tuple[Any, ...] | None:
    return None if value is None else tuple(value)


@attrs.frozen(kw_only=True)
class TaskSpec:
    """What a task is, for data loading, loss computation and metrics.

    :ivar name: the task's name (``"wikitext-lm"``).
    :ivar modality: ``text``, ``vision``, ``audio``, ``tabular`` or ``multimodal``.
    :ivar task_type: a key of :data:`TASK_DEFAULTS` or any type a plugin serves when
        ``loss`` and ``collator`` are given.
    :ivar num_classes: number of classes, for classification tasks.
    :ivar class_names: one name per class.
    :ivar preprocessing_config: task-specific preprocessing (``truncate_length``, ``stride``,
        ``image_size``, ``mean``, ``std``, ``resize``...), read by collators and data modules.
    :ivar max_seq_len: text length the collator pads or truncates to.
    :ivar pad_token_id: id of the padding token, excluded from losses.
    :ivar loss: registered loss strategy name; default from the task type.
    :ivar loss_options: options for the loss strategy's constructor.
    :ivar collator: registered collator name; default from the task type.
    :ivar metrics: registered metric names computed in validation; default from the task type.
    :ivar text_column: field holding the text in data files.
    :ivar label_column: field holding the label in data files.
    """

    name: str
    modality: str
    task_type: str
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = attrs.field(default=None, converter=_tuple_or_none)
    preprocessing_config: dict[str, Any] = attrs.field(factory=dict)
    max_seq_len: int | None = None
    pad_token_id: int = 0
    loss: str | None = None
    loss_options: dict[str, Any] = attrs.field(factory=dict)
    collator: str | None = None
    metrics: tuple[str, ...] | None = attrs.field(default=None, converter=_tuple_or_none)
    text_column: str = "text"
    label_column: str = "label"

    def __attrs_post_init__(self) -> None:
        problems = []
        if not self.name:
            problems.append("'name' must not be empty")
        if self.modality not in MODALITIES:
            problems.append(
                f"'modality' must be one of {', '.join(map(repr, MODALITIES))}: {self.modality!r}"
            )
        if self.task_type not in TASK_DEFAULTS and (self.loss is None or self.collator is None):
            problems.append(
                f"'task_type' {self.task_type!r} has no defaults; known types: "
                f"{', '.join(TASK_DEFAULTS)}. For another type, name 'loss' and 'collator'."
            )
        if self.num_classes is not None and self.num_classes < 1:
            problems.append(f"'num_classes' must be >= 1: {self.num_classes}")
        if "classification" in self.task_type and self.num_classes is None:
            problems.append(f"'num_classes' is required for task type {self.task_type!r}")
        if (
            self.class_names is not None
            and self.num_classes is not None
            and len(self.class_names) != self.num_classes
        ):
            problems.append(
                f"'class_names' has {len(self.class_names)} names for {self.num_classes} classes"
            )
        if self.max_seq_len is not None and self.max_seq_len < 1:
            problems.append(f"'max_seq_len' must be >= 1: {self.max_seq_len}")
        if problems:
            error = ConfigError(f"invalid TaskSpec {self.name!r}:\n  " + "\n  ".join(problems))
            error.problems = problems
            raise error

    # -- what serves this task ---------------------------------------------------------------

    @property
    def loss_name(self) -> str:
        """The registered loss strategy this task uses."""
        return self.loss or str(TASK_DEFAULTS[self.task_type]["loss"])

    @property
    def collator_name(self) -> str:
        """The registered collator this task uses."""
        return self.collator or str(TASK_DEFAULTS[self.task_type]["collator"])

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The registered metrics computed in validation."""
        if self.metrics is not None:
            return self.metrics
        return tuple(TASK_DEFAULTS.get(self.task_type, {}).get("metrics", ()))

    # -- factories ---------------------------------------------------------------------------

    @classmethod
    def language_modeling(
        cls, name: str = "language_modeling", *, max_seq_len: int = 128, **options: Any
    ) -> TaskSpec:
        """Causal language modeling on text: next-token loss, padding excluded."""
        return cls(
            name=name,
            modality="text",
            task_type="language_modeling",
            max_seq_len=max_seq_len,
            **options,
        )

    @classmethod
    def classification(
        cls,
        name: str = "classification",
        *,
        num_classes: int,
        class_names: tuple[str, ...] | list[str] | None = None,
        modality: str = "text",
        **options: Any,
    ) -> TaskSpec:
        """Single-label classification (text by default)."""
        return cls(
            name=name,
            modality=modality,
            task_type="classification",
            num_classes=num_classes,
            class_names=class_names,
            **options,
        )

    @classmethod
    def vision_tiny(cls, name: str = "vision_tiny", **options: Any) -> TaskSpec:
        """10-class classification of 1x8x8 grey images (scikit-learn's digits fit it): a
        small preset for tests and examples."""
        preprocessing = {
            "image_size": [8, 8],
            "num_channels": 1,
            "mean": [0.5],
            "std": [0.5],
            "resize": "pad",
        }
        preprocessing.update(options.pop("preprocessing_config", {}))
        return cls(
            name=name,
            modality="vision",
            task_type="image_classification",
            num_classes=10,
            class_names=tuple(str(digit) for digit in range(10)),
            preprocessing_config=preprocessing,
            **options,
        )

    @classmethod
    def sequence_to_sequence(
        cls,
        name: str = "sequence_to_sequence",
        *,
        max_source_len: int = 128,
        max_target_len: int = 128,
        **options: Any,
    ) -> TaskSpec:
        """Sequence to sequence: source and target padded independently, decoder labels
        aligned with decoder inputs (no shift in the loss)."""
        preprocessing = {"max_source_len": max_source_len, "max_target_len": max_target_len}
        preprocessing.update(options.pop("preprocessing_config", {}))
        loss_options = {"shift_labels": False, **options.pop("loss_options", {})}
        return cls(
            name=name,
            modality="text",
            task_type="sequence_to_sequence",
            max_seq_len=max_source_len,
            preprocessing_config=preprocessing,
            loss_options=loss_options,
            **options,
        )

    # -- serialization -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; ``TaskSpec.from_dict(spec.to_dict()) == spec``."""
        data: dict[str, Any] = unstructure(self)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> TaskSpec:
        """Build from plain data; unknown keys and wrong types raise :class:`ConfigError`."""
        return structure(data, cls, source=source)

    def save(self, path: str | Path) -> Path:
        """Write as JSON and return the path."""
        target = Path(path)
        write_json(self.to_dict(), target)
        return target

    @classmethod
    def load(cls, path: str | Path) -> TaskSpec:
        """Read a TaskSpec JSON (or TOML) file."""
        return cls.from_dict(read_config_file(path), source=str(path))
