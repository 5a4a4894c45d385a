"""Conformance checks for named data sets, treadle's and any plugin's.

Call :func:`check_dataset` with the data set as registered (a class or an instance)::

    from treadle.testing.datasets import check_dataset
    from acme_iris import Iris


    def test_iris_conforms():
        report = check_dataset(Iris, name="iris")
        assert report.details["sizes"] == (120, 30)

The rules:

``describes itself``
    ``description``, ``source`` and ``licence`` are non-empty strings; ``task_types`` and
    ``modalities`` non-empty sequences of strings; ``requirements`` a sequence of pip
    requirement lines.
``default task``
    ``default_task(training_config)`` returns a ``TaskSpec`` whose task type is the first of
    ``task_types`` and whose modality is one of ``modalities``.
``loads``
    ``load(task, tokenizer=..., validation_split=0.2, seed=0)`` returns ``(train, val)``:
    map-style datasets with ``len()``, neither empty.
``seeded split``
    The same seed gives the same split again, and ``validation_split=0`` gives ``val``
    ``None`` and every sample in ``train``.
``collates``
    The task's collator (from the ``collators`` registry) makes a batch with ``labels`` of
    the first samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from treadle.testing.collators import same_samples
from treadle.testing.report import ConformanceReport, Rule, RuleRunner

if TYPE_CHECKING:
    from treadle.config import TrainingConfig
    from treadle.plugins import PluginManager
    from treadle.task import TaskSpec

__all__ = ["RULES", "check_dataset"]

#: The rules :func:`check_dataset` enforces, in order.
RULES = (
    Rule("describes itself", "description, source, licence, task types, modalities, requirements"),
    Rule("default task", "default_task gives a TaskSpec of its first task type and a modality"),
    Rule("loads", "load(...) returns (train, val), sized and not empty"),
    Rule("seeded split", "the same seed gives the same split; validation_split=0 keeps all"),
    Rule("collates", "the task's collator makes a batch with labels of its samples"),
)

_SPLIT = 0.2


def check_dataset(
    dataset: Any,
    *,
    name: str = "conformance",
    training_config: TrainingConfig | None = None,
    task_spec: TaskSpec | None = None,
    options: Mapping[str, Any] | None = None,
    plugin_manager: PluginManager | None = None,
) -> ConformanceReport:
    """Run the rules above on ``dataset`` (a registered class is built with no arguments, as
    the registry builds it).

    :param training_config: given to ``default_task`` (default ``TrainingConfig()``).
    :param task_spec: the task to load with instead of the default one (needed when
        ``default_task`` refuses the config with ``ConfigError``, as the contract allows;
        without it the loading rules are then skipped).
    :param options: extra keyword options for ``load``.
    :param plugin_manager: where the task's collator is looked up (default: global manager).
    :returns: the report; ``details``: ``task`` (its name, type and modality) and ``sizes``,
        ``(len(train), len(val))``.
    :raises ConformanceError: a rule is broken; the message names it.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    from treadle.collators import get_collator
    from treadle.config import TrainingConfig
    from treadle.data import ByteTokenizer
    from treadle.errors import ConfigError
    from treadle.task import TaskSpec

    subject = f"{name} ({getattr(dataset, '__qualname__', type(dataset).__qualname__)})"
    rules = RuleRunner("datasets", subject, RULES)
    if isinstance(dataset, type):
        dataset = dataset()
    for attribute in ("description", "source", "licence"):
        value = getattr(dataset, attribute, None)
        if not isinstance(value, str) or not value.strip():
            rules.fail("describes itself", f"{attribute} is {value!r}; give a non-empty string")
    for attribute in ("task_types", "modalities"):
        value = getattr(dataset, attribute, None)
        if (
            isinstance(value, str)
            or not isinstance(value, Sequence)
            or not value
            or not all(isinstance(item, str) for item in value)
        ):
            rules.fail("describes itself", f"{attribute} is {value!r}; give a tuple of strings")
    requirements = getattr(dataset, "requirements", None)
    if isinstance(requirements, str) or not isinstance(requirements, Sequence):
        rules.fail("describes itself", f"requirements is {requirements!r}; give a tuple (or ())")
    for line in requirements:
        try:
            Requirement(line)
        except (InvalidRequirement, TypeError) as err:
            rules.fail("describes itself", f"requirements holds {line!r}: {err}")
    rules.passes("describes itself")

    config = training_config if training_config is not None else TrainingConfig()
    try:
        task = dataset.default_task(config)
    except ConfigError as err:  # the contract's way to say "no task without more config"
        rules.skip("default task", f"default_task refuses this config: {err}")
        if task_spec is None:
            for rule in ("loads", "seeded split", "collates"):
                rules.skip(rule, "no task: default_task refuses, and no task_spec was given")
            return rules.report()
    except Exception as err:
        raise rules.error(
            "default task",
            f"default_task raised {type(err).__name__}: {err}; raise ConfigError with the fix "
            f"when a config gives it no task",
        ) from err
    else:
        if not isinstance(task, TaskSpec):
            rules.fail("default task", f"default_task returned {task!r}, not a TaskSpec")
        if task.task_type != dataset.task_types[0] or task.modality not in dataset.modalities:
            rules.fail(
                "default task",
                f"default_task gave {task.task_type} on {task.modality}; its own task type is "
                f"the first of task_types {tuple(dataset.task_types)}, on one of "
                f"{tuple(dataset.modalities)}",
            )
        rules.passes("default task")
    if task_spec is not None:
        task = task_spec

    extra = dict(options or {})

    def load(split: float, seed: int) -> tuple[Any, Any]:
        try:
            loaded = dataset.load(
                task, tokenizer=ByteTokenizer(), validation_split=split, seed=seed, **extra
            )
        except Exception as err:
            raise rules.error(
                "loads",
                f"load(validation_split={split}, seed={seed}) raised {type(err).__name__}: {err}",
            ) from err
        if not isinstance(loaded, tuple) or len(loaded) != 2:
            rules.fail("loads", f"load returned {type(loaded).__name__}, not (train, val)")
        return loaded

    train, val = load(_SPLIT, 0)
    for side, part in (("train", train), ("val", val)):
        try:
            size = len(part)
            first = part[0] if size else None
        except Exception as err:
            raise rules.error(
                "loads",
                f"{side} is not a map-style dataset with len(): {type(err).__name__}: {err}",
            ) from err
        if not size or first is None:
            rules.fail("loads", f"{side} is empty with validation_split={_SPLIT}")
    rules.passes("loads")

    again_train, again_val = load(_SPLIT, 0)
    if not _same_split(train, again_train) or not _same_split(val, again_val):
        rules.fail("seeded split", "the same seed gave another split")
    whole, none = load(0.0, 0)
    if none is not None and len(none) != 0:
        rules.fail("seeded split", f"validation_split=0 gave a val of {len(none)} samples")
    if len(whole) != len(train) + len(val):
        rules.fail(
            "seeded split",
            f"validation_split=0 gave {len(whole)} samples, the split {len(train)} + {len(val)}",
        )
    rules.passes("seeded split")

    samples = [train[index] for index in range(min(4, len(train)))]
    try:
        batch = get_collator(task, plugin_manager)(samples)
    except Exception as err:
        raise rules.error(
            "collates",
            f"the {task.collator_name!r} collator of its task raised {type(err).__name__}: {err}",
        ) from err
    labels = batch.get("labels") if isinstance(batch, Mapping) else None
    if not isinstance(labels, torch.Tensor) or labels.shape[0] != len(samples):
        rules.fail("collates", f"the {task.collator_name!r} collator made no labels of its samples")
    rules.passes("collates")
    rules.details.update(
        task={"name": task.name, "task_type": task.task_type, "modality": task.modality},
        sizes=(len(train), len(val)),
    )
    return rules.report()


def _same_split(first: Any, second: Any, samples: int = 32) -> bool:
    """Same length and the same first ``samples`` samples."""
    if len(first) != len(second):
        return False
    return all(same_samples(first[i], second[i]) for i in range(min(samples, len(first))))
