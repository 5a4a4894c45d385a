"""Named data sets: the face of the ``datasets`` registry, which plugins fill.

A data set is a plugin registered through ``treadle_register_datasets`` (the built-ins too,
from the ``treadle_datasets`` package), so ``TrainingConfig.dataset``, ``--set dataset=NAME``
and ``UniversalDataModule.load_named(name)`` find a third party's exactly as a built-in::

    from treadle.data import dataset_info, list_datasets, load_named_dataset

    for info in list_datasets():
        print(info.name, info.task_types, info.licence, info.provider)
    train, val = load_named_dataset(name, seed=42)

Each data set satisfies :class:`treadle.protocols.NamedDataset`; see ``docs/data.md``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sized
from typing import TYPE_CHECKING, Any

import attrs

from treadle.errors import DataError
from treadle.protocols import NamedDataset

if TYPE_CHECKING:
    from treadle.data.samples import SizedDataset
    from treadle.plugins import PluginManager
    from treadle.registry import NamedRegistry
    from treadle.task import TaskSpec

__all__ = [
    "DatasetInfo",
    "NamedDataset",
    "check_task_fits",
    "dataset_info",
    "get_dataset",
    "list_datasets",
    "load_named_dataset",
]


@attrs.frozen(kw_only=True)
class DatasetInfo:
    """What a registered data set is, for listings and errors.

    :ivar name: its registered name, for ``TrainingConfig.dataset``.
    :ivar description: what it holds.
    :ivar task_types: the task types it serves (the first is its own).
    :ivar modalities: the modalities of the tasks it serves.
    :ivar source: where the data comes from.
    :ivar licence: the data's licence.
    :ivar requirements: pip requirement lines it needs beyond treadle.
    :ivar provider: the plugin that registered it, with distribution and version.
    """

    name: str
    description: str
    task_types: tuple[str, ...]
    modalities: tuple[str, ...]
    source: str
    licence: str
    requirements: tuple[str, ...]
    provider: str


def _registry(plugin_manager: PluginManager | None) -> NamedRegistry:
    from treadle.plugins import get_registry

    return get_registry("datasets", plugin_manager)


def get_dataset(name: str, plugin_manager: PluginManager | None = None) -> NamedDataset:
    """The data set registered as ``name`` (a registered class is instantiated).

    :raises UnknownNameError: nothing is registered under ``name``; the message lists what is
        and the closest name.
    """
    dataset: NamedDataset = _registry(plugin_manager).create(name)
    return dataset


def dataset_info(name: str, plugin_manager: PluginManager | None = None) -> DatasetInfo:
    """The description of the data set registered as ``name``.

    :raises UnknownNameError: nothing is registered under ``name``.
    """
    registry = _registry(plugin_manager)
    dataset = registry.get(name)
    return DatasetInfo(
        name=name,
        description=dataset.description,
        task_types=tuple(dataset.task_types),
        modalities=tuple(dataset.modalities),
        source=dataset.source,
        licence=dataset.licence,
        requirements=tuple(dataset.requirements),
        provider=str(registry.entry(name).provenance),
    )


def list_datasets(plugin_manager: PluginManager | None = None) -> list[DatasetInfo]:
    """Every registered data set, sorted by name."""
    return [dataset_info(name, plugin_manager) for name in _registry(plugin_manager).names()]


def load_named_dataset(
    name: str,
    *,
    task_spec: TaskSpec | None = None,
    tokenizer: Any = None,
    validation_split: float = 0.1,
    seed: int = 42,
    plugin_manager: PluginManager | None = None,
    **options: Any,
) -> tuple[SizedDataset[Any], SizedDataset[Any]]:
    """The training and validation datasets of the data set registered as ``name``, split
    at random by ``seed``.

    :param task_spec: the task to build samples for; it must be of a type and modality the
        data set serves (default: its ``default_task`` for a default ``TrainingConfig``).
    :param tokenizer: for text: any tokenizer :func:`~treadle.data.tokenizer.text_encoder`
        accepts; default :class:`~treadle.data.tokenizer.ByteTokenizer`.
    :param options: passed to the data set's ``load`` (the ``huggingface`` loader takes
        ``dataset_name`` and others); a data set that takes none refuses them.
    :returns: ``(train, val)``; ``val`` is empty when nothing is held out.
    :raises UnknownNameError: no such data set; the message lists the registered ones.
    :raises DataError: the task does not fit the data set, an option is unknown to it, its
        optional dependency is missing (naming what to install), or it returned something
        other than two sized datasets.
    """
    from treadle.data.samples import SampleList

    dataset = get_dataset(name, plugin_manager)
    if task_spec is None:
        from treadle.config import TrainingConfig

        task_spec = dataset.default_task(TrainingConfig())
    check_task_fits(name, dataset, task_spec)
    _check_options(name, dataset, options)
    loaded = dataset.load(
        task_spec, tokenizer=tokenizer, validation_split=validation_split, seed=seed, **options
    )
    train, val = _checked_result(name, loaded)
    return train, val if val is not None else SampleList([])


def check_task_fits(name: str, dataset: NamedDataset, task_spec: TaskSpec) -> None:
    """:raises DataError: ``task_spec`` is not of a type and modality ``dataset`` serves."""
    if task_spec.task_type in dataset.task_types and task_spec.modality in dataset.modalities:
        return
    msg = (
        f"data set {name!r} serves {' or '.join(dataset.task_types)} on "
        f"{' or '.join(dataset.modalities)}, not task {task_spec.name!r} "
        f"({task_spec.task_type} on {task_spec.modality}); use a task of that type "
        f"(TrainingConfig task = {dataset.task_types[0]!r})"
    )
    raise DataError(msg)


def _check_options(name: str, dataset: NamedDataset, options: dict[str, Any]) -> None:
    if not options:
        return
    parameters = inspect.signature(dataset.load).parameters
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        known = sorted(
            parameter
            for parameter, details in parameters.items()
            if details.kind is inspect.Parameter.KEYWORD_ONLY
            and parameter not in ("tokenizer", "validation_split", "seed")
        )
        msg = (
            f"data set {name!r} takes no option {', '.join(map(repr, unknown))}; its options: "
            f"{', '.join(known) or 'none'}"
        )
        raise DataError(msg)


def _checked_result(
    name: str, loaded: object
) -> tuple[SizedDataset[Any], SizedDataset[Any] | None]:
    """The ``(train, val)`` a data set's ``load`` returned, checked at the plugin boundary."""
    if isinstance(loaded, tuple) and len(loaded) == 2:
        train, val = loaded
        if isinstance(train, Sized) and (val is None or isinstance(val, Sized)):
            return train, val  # type: ignore[return-value]  # map-style: checked for len()
    msg = (
        f"data set {name!r} returned {type(loaded).__name__} from load(); a data set returns "
        f"(train, val): two map-style datasets with len(), val None when nothing is held out"
    )
    raise DataError(msg)
