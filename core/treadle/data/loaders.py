"""DataLoaderFactory: DataLoaders with the task's collator, resumable seeded sampling,
seeded workers, and pinned memory only where CUDA is.

::

    factory = DataLoaderFactory(task_spec=task, seed=42, pin_memory=True, num_workers=4)
    train_loader = factory.create_loader(
        train_dataset, DataLoaderConfig(batch_size=32, shuffle=True, drop_last=True)
    )
    val_loader = factory.create_loader(val_dataset, DataLoaderConfig(batch_size=32), is_eval=True)

Two factories with the same seed give the same batches in the same order, whatever the
number of workers; ``loader.sampler`` is a :class:`~treadle.data.samplers.ResumableSampler`
(``set_epoch``, ``set_start``), so a resumed run continues inside an epoch exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sized
from typing import TYPE_CHECKING, Any, TypeGuard

import attrs
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from treadle.data.samplers import DistributedResumableSampler, ResumableSampler
from treadle.seed import make_generator, seed_worker

if TYPE_CHECKING:
    from treadle.plugins import PluginManager
    from treadle.protocols import Collator
    from treadle.task import TaskSpec

# seed_worker is treadle.seed's, named here too for the data layer's users
__all__ = ["DataLoaderConfig", "DataLoaderFactory", "seed_worker", "yields_batches"]

logger = logging.getLogger(__name__)


def yields_batches(data: object) -> TypeGuard[Iterable[Any]]:
    """Whether ``data`` is ready batches (used as given) rather than samples to batch with
    the task's collator: what the Trainer asks of its ``train_data`` and ``eval_data``.

    Samples: a map-style ``Dataset`` (``TensorDataset`` and other datasets of ``(input,
    label)`` tuples too) and a ``list`` whose items are dicts, a dataset of samples as for
    ``DataLoader`` and Hugging Face's ``Trainer``. Batches: a ``DataLoader`` or any other
    iterable (a ``list`` of tuples included, as before).
    """
    if isinstance(data, Dataset):
        return False
    if isinstance(data, list) and data and isinstance(data[0], Mapping):
        return False
    return isinstance(data, Iterable)


def _optional_at_least_1(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value < 1:
        msg = f"{attribute.name!r} must be >= 1 or None: {value}"
        raise ValueError(msg)


def _optional_at_least_0(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value < 0:
        msg = f"{attribute.name!r} must be >= 0 or None: {value}"
        raise ValueError(msg)


@attrs.frozen(kw_only=True)
class DataLoaderConfig:
    """How one loader batches.

    :ivar batch_size: samples per batch.
    :ivar shuffle: a new order each epoch (by the factory's seed and the epoch); ``False``
        keeps the dataset's order.
    :ivar drop_last: drop a last batch smaller than ``batch_size``.
    :ivar prefetch_factor: batches each worker loads ahead (only with workers; ``None``:
        PyTorch's default, 2).
    :ivar num_workers: overrides the factory's worker count for this loader.
    :ivar persistent_workers: keep workers between epochs; default: whenever there are
        workers.
    :ivar timeout: seconds to wait for a batch from a worker (0: forever).
    """

    batch_size: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    shuffle: bool = True
    drop_last: bool = False
    prefetch_factor: int | None = attrs.field(default=None, validator=_optional_at_least_1)
    num_workers: int | None = attrs.field(default=None, validator=_optional_at_least_0)
    persistent_workers: bool | None = None
    timeout: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))


class DataLoaderFactory:
    """Makes DataLoaders for one task.

    :param task_spec: the task; its ``collator_name`` picks the collator (from the collator
        registry of ``plugin_manager``).
    :param seed: seeds the sampling order and the workers' seeds.
    :param pin_memory: pin batches for faster host-to-GPU copies; honoured only when CUDA
        is available.
    :param num_workers: worker processes per loader (0: load in the main process).
    :param plugin_manager: whose collator registry to use; default the process-wide one.
    :param collate_fn: use this collator instead of the task's.
    """

    def __init__(
        self,
        task_spec: TaskSpec,
        seed: int = 42,
        pin_memory: bool = True,
        num_workers: int = 4,
        plugin_manager: PluginManager | None = None,
        *,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        if num_workers < 0:
            msg = f"num_workers must be >= 0: {num_workers}"
            raise ValueError(msg)
        self.task_spec = task_spec
        self.seed = seed
        self.pin_memory = pin_memory
        self.num_workers = num_workers
        self.plugin_manager = plugin_manager
        self._collator: Collator | Callable[[list[Any]], Any] | None = collate_fn

    @property
    def collator(self) -> Collator | Callable[[list[Any]], Any]:
        """The task's collator, looked up once.

        :raises UnknownNameError: the task's collator is not registered.
        """
        if self._collator is None:
            from treadle.collators import get_collator

            self._collator = get_collator(self.task_spec, self.plugin_manager)
        return self._collator

    def create_loader(
        self, dataset: Dataset[Any], config: DataLoaderConfig | None = None, is_eval: bool = False
    ) -> DataLoader[Any]:
        """A DataLoader over ``dataset``.

        The sampler is a :class:`ResumableSampler`, or, when ``torch.distributed`` is
        initialized, a :class:`DistributedResumableSampler` giving this rank its shard.

        :param config: batching; default ``DataLoaderConfig(shuffle=not is_eval)``.
        :param is_eval: an evaluation loader: never shuffled and never dropping samples,
            whatever ``config`` says; under ``torch.distributed`` the shards are not padded,
            so every sample is evaluated exactly once.
        :raises TypeError: ``dataset`` has no ``len()`` (an ``IterableDataset``: wrap it in a
            DataLoader yourself).
        """
        if config is None:
            config = DataLoaderConfig(shuffle=not is_eval)
        if isinstance(dataset, IterableDataset) or not isinstance(dataset, Sized):
            msg = (
                f"create_loader needs a map-style dataset with len(); got "
                f"{type(dataset).__name__}. Build a DataLoader for an IterableDataset yourself"
            )
            raise TypeError(msg)
        shuffle = config.shuffle and not is_eval
        drop_last = config.drop_last and not is_eval
        if is_eval and (config.shuffle or config.drop_last):
            logger.debug("evaluation loader: shuffle and drop_last turned off")
        sampler = self._sampler(dataset, shuffle=shuffle, drop_last=drop_last, is_eval=is_eval)
        num_workers = self.num_workers if config.num_workers is None else config.num_workers
        options: dict[str, Any] = {}
        if num_workers > 0:
            persistent = config.persistent_workers
            options["persistent_workers"] = True if persistent is None else persistent
            if config.prefetch_factor is not None:
                options["prefetch_factor"] = config.prefetch_factor
        return DataLoader(
            dataset,
            batch_size=config.batch_size,
            sampler=sampler,
            drop_last=drop_last,
            collate_fn=self.collator,
            num_workers=num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            worker_init_fn=seed_worker,
            generator=make_generator(self.seed),
            timeout=config.timeout,
            **options,
        )

    def _sampler(
        self, dataset: Sized, *, shuffle: bool, drop_last: bool, is_eval: bool
    ) -> ResumableSampler | DistributedResumableSampler:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if not distributed:
            return ResumableSampler(dataset, shuffle=shuffle, seed=self.seed)
        return DistributedResumableSampler(
            dataset,
            shuffle=shuffle,
            seed=self.seed,
            drop_last=drop_last,
            even_shards=not is_eval,
        )

    def __repr__(self) -> str:
        return (
            f"DataLoaderFactory(task={self.task_spec.name!r}, seed={self.seed}, "
            f"num_workers={self.num_workers}, pin_memory={self.pin_memory})"
        )
