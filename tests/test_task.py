"""TaskSpec: the spec's constructors and factories, defaults per task type, serialization."""

from __future__ import annotations

from pathlib import Path

import pytest

from treadle.errors import ConfigError
from treadle.task import TASK_DEFAULTS, TaskSpec


def test_the_spec_constructor_examples_work() -> None:
    lm = TaskSpec(
        name="wikitext-lm",
        modality="text",
        task_type="language_modeling",
        preprocessing_config={"truncate_length": 512, "stride": 256},
    )
    assert lm.loss_name == "language_modeling"
    assert lm.collator_name == "language_modeling"
    imdb = TaskSpec(
        name="imdb-sentiment",
        modality="text",
        task_type="classification",
        num_classes=2,
        class_names=["negative", "positive"],
    )
    assert imdb.class_names == ("negative", "positive")
    vision = TaskSpec(
        name="imagenet-classification",
        modality="vision",
        task_type="image_classification",
        num_classes=1000,
    )
    assert vision.loss_name == "vision"


@pytest.mark.parametrize(
    "spec",
    [
        TaskSpec.language_modeling(name="wikitext"),
        TaskSpec.classification(name="imdb", num_classes=2),
        TaskSpec.vision_tiny(),
        TaskSpec.sequence_to_sequence(name="translate", max_source_len=32, max_target_len=16),
    ],
    ids=["lm", "classification", "vision_tiny", "seq2seq"],
)
def test_factories_round_trip_through_files(spec: TaskSpec, tmp_path: Path) -> None:
    assert TaskSpec.from_dict(spec.to_dict()) == spec
    assert TaskSpec.load(spec.save(tmp_path / "task.json")) == spec


def test_vision_tiny_describes_8x8_grey_digits() -> None:
    spec = TaskSpec.vision_tiny()
    assert spec.num_classes == 10
    assert spec.preprocessing_config["image_size"] == [8, 8]
    assert spec.metric_names == ("accuracy",)


def test_sequence_to_sequence_does_not_shift_labels() -> None:
    spec = TaskSpec.sequence_to_sequence()
    assert spec.loss_options == {"shift_labels": False}
    assert spec.collator_name == "sequence_to_sequence"


def test_explicit_plugin_names_override_the_task_type_defaults() -> None:
    spec = TaskSpec.classification(name="x", num_classes=3, loss="focal", metrics=["f1"])
    assert spec.loss_name == "focal"
    assert spec.metric_names == ("f1",)
    assert spec.collator_name == TASK_DEFAULTS["classification"]["collator"]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"modality": "smell"}, "'modality' must be one of"),
        ({"task_type": "ranking"}, "'task_type' 'ranking' has no defaults"),
        ({"task_type": "classification"}, "'num_classes' is required"),
        ({"task_type": "classification", "num_classes": 0}, "'num_classes' must be >= 1"),
        (
            {"task_type": "classification", "num_classes": 2, "class_names": ["a"]},
            "'class_names' has 1 names for 2 classes",
        ),
        ({"name": ""}, "'name' must not be empty"),
    ],
)
def test_invalid_task_specs_are_refused(kwargs: dict[str, object], expected: str) -> None:
    values = {"name": "t", "modality": "text", "task_type": "language_modeling", **kwargs}
    with pytest.raises(ConfigError, match=expected):
        TaskSpec(**values)  # type: ignore[arg-type]


def test_a_task_type_from_a_plugin_works_when_loss_and_collator_are_named() -> None:
    spec = TaskSpec(
        name="rank", modality="text", task_type="ranking", loss="pairwise", collator="pairs"
    )
    assert (spec.loss_name, spec.collator_name, spec.metric_names) == ("pairwise", "pairs", ())


def test_unknown_keys_in_a_task_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "task.json"
    path.write_text(
        '{"name": "x", "modality": "text", "task_type": "language_modeling", "num_clases": 2}',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="did you mean 'num_classes'"):
        TaskSpec.load(path)
