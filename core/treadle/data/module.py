"""UniversalDataModule: a task's training and validation data from a file, a Hugging Face
data set or a registered named data set, as datasets or ready DataLoaders.

::

    module = UniversalDataModule(task_spec=task, batch_size=32, num_workers=4, seed=42)
    train_loader, val_loader = module.load_from_file("data.jsonl", validation_split=0.1)
    train_loader, val_loader = module.load_huggingface("wikitext", "wikitext-103-v1")
    train_loader, val_loader = module.load_named(name)  # a name in list_datasets()

Text is tokenized by the built-in :class:`~treadle.data.tokenizer.ByteTokenizer` unless a
tokenizer is given (any Hugging Face tokenizer, or an object with ``encode``). Everything is
read and checked before a loader is returned: bad input raises
:class:`~treadle.errors.DataError` naming the file and line (or byte offset).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import torch
from torch.utils.data import DataLoader

from treadle.data.datasets import check_task_fits, get_dataset, load_named_dataset
from treadle.data.encode import datasets_from_records, infer_classes
from treadle.data.files import SUFFIXES, Record, path_exists, read_records, user_path
from treadle.data.loaders import DataLoaderConfig, DataLoaderFactory
from treadle.data.samples import Head, SampleList, SizedDataset
from treadle.data.tokenizer import ByteTokenizer, tokenizer_pad_id, vocabulary_size
from treadle.errors import ConfigError, DataError, UnknownNameError
from treadle.task import TaskSpec

if TYPE_CHECKING:
    from treadle.config import TrainingConfig
    from treadle.plugins import PluginManager

__all__ = ["UniversalDataModule"]

logger = logging.getLogger(__name__)

#: ``TrainingConfig.task`` values for data files, besides a path to a TaskSpec file.
FILE_TASKS = ("language_modeling", "classification", "image_classification", "sequence_to_sequence")
_TASK_ALIASES = {"vision": "image_classification", "vision_tiny": "image_classification"}

#: The registered data set that :meth:`UniversalDataModule.load_huggingface` (a name the spec
#: gives) is the face of; a plugin may register its own under it with ``override=True``.
HUGGINGFACE_DATASET = "huggingface"

Loaders = tuple[DataLoader[Any], DataLoader[Any] | None]


class UniversalDataModule:
    """Loads a task's data and makes its loaders.

    :param task_spec: the task: decides the samples built and the collator.
    :param batch_size: samples per batch of the loaders returned.
    :param num_workers: loader worker processes (0: load in the main process).
    :param seed: seeds the train/validation split, the shuffling and the workers.
    :param tokenizer: for text tasks: any Hugging Face tokenizer or object with
        ``encode(text)``; default :class:`ByteTokenizer`.
    :param pin_memory: pin batches for GPU copies; default: whether CUDA is available.
    :param plugin_manager: whose collator registry to use; default the process-wide one.
    """

    def __init__(
        self,
        task_spec: TaskSpec,
        batch_size: int = 32,
        num_workers: int = 4,
        seed: int = 42,
        *,
        tokenizer: Any = None,
        pin_memory: bool | None = None,
        plugin_manager: PluginManager | None = None,
    ) -> None:
        if batch_size < 1:
            msg = f"batch_size must be >= 1: {batch_size}"
            raise ValueError(msg)
        self.task_spec = task_spec
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.tokenizer = tokenizer if tokenizer is not None else ByteTokenizer()
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.plugin_manager = plugin_manager
        self._train: SizedDataset[Any] | None = None
        self._val: SizedDataset[Any] | None = None
        self._check_pad_id()

    # -- loading -----------------------------------------------------------------------------

    def load_from_file(
        self,
        file_path: str | Path,
        validation_split: float = 0.1,
        text_column: str | None = None,
        label_column: str | None = None,
    ) -> Loaders:
        """Read a data file, split it at random by the seed, and return the loaders.

        Formats: ``.jsonl``, ``.json``, ``.csv``, ``.tsv``, ``.txt`` (one text per line) and
        ``.parquet`` (with pyarrow); see :func:`~treadle.data.files.read_records`.

        :param validation_split: fraction of the records for validation, in ``[0, 1)``;
            0 gives no validation loader.
        :param text_column: the text (for vision: image) column; default the task's
            ``text_column``.
        :param label_column: the label column (for sequence to sequence: the target text);
            default the task's ``label_column``.
        :returns: ``(train_loader, val_loader)``; ``val_loader`` is ``None`` when
            ``validation_split`` is 0.
        :raises DataError: missing, empty or malformed file, wrong encoding, missing column,
            bad value; naming the file and line or byte offset.
        """
        records = read_records(file_path, text_column=text_column or self.task_spec.text_column)
        return self._load_records(
            records,
            validation_split,
            text_column,
            label_column,
            source=str(user_path(file_path)),
        )

    def load_huggingface(
        self,
        dataset_name: str,
        dataset_config: str | None = None,
        train_split: str = "train",
        validation_split: str | None = "validation",
        max_samples: int | None = None,
        *,
        text_column: str | None = None,
        label_column: str | None = None,
        **load_options: Any,
    ) -> Loaders:
        """Load a Hugging Face data set (``pip install "treadle[hf]"``) and return the loaders.

        ``dataset_name`` is a hub name or a local copy (a ``save_to_disk`` folder, a folder
        of data files, a data file). Offline (``HF_DATASETS_OFFLINE=1``), or with the hub
        unreachable, a hub name fails at once. Without a ``validation_split`` split, 10% of
        the training split is held out by the seed.

        :param max_samples: keep the first ``max_samples`` rows of each split.
        :param load_options: passed to ``datasets.load_dataset``.
        :raises DataError: offline, ``datasets`` missing, a split or column missing, a bad
            value (naming the split and row).
        """
        return self.load_named(
            HUGGINGFACE_DATASET,
            dataset_name=dataset_name,
            dataset_config=dataset_config,
            train_split=train_split,
            validation_split_name=validation_split,
            max_samples=max_samples,
            text_column=text_column,
            label_column=label_column,
            **load_options,
        )

    def load_named(self, name: str, validation_split: float = 0.1, **options: Any) -> Loaders:
        """Load a registered data set (see :func:`~treadle.data.datasets.list_datasets`) and
        return the loaders.

        :param options: passed to the data set's ``load``.
        :raises UnknownNameError: no data set has that name; the message lists them.
        :raises DataError: the task does not fit the data set, an option is unknown to it,
            or its extra is missing.
        """
        train, val = load_named_dataset(
            name,
            task_spec=self.task_spec,
            tokenizer=self.tokenizer,
            validation_split=validation_split,
            seed=self.seed,
            plugin_manager=self.plugin_manager,
            **options,
        )
        self._set(train, val if len(val) > 0 else None)
        return self.dataloaders()

    # -- results -----------------------------------------------------------------------------

    def train_dataset(self) -> SizedDataset[Any]:
        """The training dataset of the last load.

        :raises DataError: nothing was loaded yet.
        """
        if self._train is None:
            msg = "no data loaded yet: call load_from_file, load_huggingface or load_named first"
            raise DataError(msg)
        return self._train

    def val_dataset(self) -> SizedDataset[Any]:
        """The validation dataset of the last load (empty when it had no validation split).

        :raises DataError: nothing was loaded yet.
        """
        self.train_dataset()
        return self._val if self._val is not None else SampleList([])

    def dataloaders(self) -> Loaders:
        """Loaders over the last load: training shuffled, validation in order (``None``
        when there is no validation data)."""
        factory = DataLoaderFactory(
            task_spec=self.task_spec,
            seed=self.seed,
            pin_memory=self.pin_memory,
            num_workers=self.num_workers,
            plugin_manager=self.plugin_manager,
        )
        train = factory.create_loader(
            self.train_dataset(), DataLoaderConfig(batch_size=self.batch_size, shuffle=True)
        )
        if self._val is None:
            return train, None
        val = factory.create_loader(
            self._val, DataLoaderConfig(batch_size=self.batch_size, shuffle=False), is_eval=True
        )
        return train, val

    # -- from a training config ----------------------------------------------------------------

    @classmethod
    def from_training_config(
        cls, config: TrainingConfig, plugin_manager: PluginManager | None = None
    ) -> UniversalDataModule:
        """The module for ``config.dataset`` and ``config.task``, loaded and split by
        ``config.validation_split`` and ``config.random_seed``.

        The split is then cut to ``config.max_train_samples`` / ``config.max_val_samples``
        (the first ones of each side) when they are set.

        ``config.dataset`` is the name of a registered data set (see
        :func:`~treadle.data.datasets.list_datasets`; its task is its ``default_task(config)``)
        or a data file path, read with the task ``config.task`` names (one of ``FILE_TASKS``;
        classes are counted from the labels). ``config.task`` may also be the path of a
        TaskSpec JSON or TOML file.

        :raises UnknownNameError: ``config.dataset`` is neither a registered name nor a file.
        :raises ConfigError: the task is unknown or does not fit the data set, or
            ``config.vocab_size`` is smaller than the tokenizer's.
        :raises DataError: the data file is bad (naming file and line).
        """
        name = config.dataset
        task_file = _task_file(config.task)
        records: list[Record] | None = None
        if _is_registered(name, plugin_manager) or not _looks_like_path(name):
            task = _named_task(name, config, task_file, plugin_manager)
        else:
            records = read_records(name)
            task = TaskSpec.load(task_file) if task_file else _file_task(config, records, name)
        module = cls(
            task,
            batch_size=config.batch_size,
            num_workers=config.num_workers,
            seed=config.random_seed,
            plugin_manager=plugin_manager,
        )
        if task.modality == "text":
            _check_vocabulary(config, module.tokenizer)
        if records is None:
            module.load_named(name, config.validation_split)
        else:
            source = str(user_path(name))
            module._load_records(records, config.validation_split, None, None, source=source)
        module._cap(config.max_train_samples, config.max_val_samples)
        return module

    def _cap(self, max_train: int | None, max_val: int | None) -> None:
        """Keep the first ``max_train`` / ``max_val`` samples of the split (None: all)."""
        train, val = self.train_dataset(), self._val
        if max_train is not None and max_train < len(train):
            train = Head(train, max_train)
        if val is not None and max_val is not None and max_val < len(val):
            val = Head(val, max_val)
        self._train, self._val = train, val

    # -- internals -----------------------------------------------------------------------------

    def _load_records(
        self,
        records: list[Record],
        validation_split: float,
        text_column: str | None,
        label_column: str | None,
        *,
        source: str,
    ) -> Loaders:
        train, val = datasets_from_records(
            records,
            self.task_spec,
            tokenizer=self.tokenizer,
            validation_split=validation_split,
            seed=self.seed,
            text_column=text_column,
            label_column=label_column,
            source=source,
        )
        self._set(train, val)
        return self.dataloaders()

    def _set(self, train: SizedDataset[Any], val: SizedDataset[Any] | None) -> None:
        self._train, self._val = train, val
        logger.info(
            "data for task %r: %d training and %d validation samples",
            self.task_spec.name,
            len(train),
            0 if val is None else len(val),
        )

    def _check_pad_id(self) -> None:
        pad = tokenizer_pad_id(self.tokenizer)
        if (
            self.task_spec.modality == "text"
            and pad is not None
            and pad != self.task_spec.pad_token_id
        ):
            logger.warning(
                "the tokenizer pads with id %d but task %r with %d; losses exclude the task's "
                "pad id: build the task with pad_token_id=%d",
                pad,
                self.task_spec.name,
                self.task_spec.pad_token_id,
                pad,
            )

    def __repr__(self) -> str:
        return (
            f"UniversalDataModule(task={self.task_spec.name!r}, batch_size={self.batch_size}, "
            f"num_workers={self.num_workers}, seed={self.seed}, tokenizer={self.tokenizer!r})"
        )


def _is_registered(name: str, plugin_manager: PluginManager | None) -> bool:
    from treadle.plugins import get_registry

    return name in get_registry("datasets", plugin_manager)


def _named_task(
    name: str,
    config: TrainingConfig,
    task_file: Path | None,
    plugin_manager: PluginManager | None,
) -> TaskSpec:
    """The task a config trains the registered data set ``name`` with.

    :raises UnknownNameError: ``name`` is not registered (the message adds data files).
    :raises ConfigError: ``config.task`` does not fit the data set.
    """
    try:
        dataset = get_dataset(name, plugin_manager)
    except UnknownNameError as err:
        msg = f"{err.args[0]} Or give the path of a data file ({', '.join(SUFFIXES)})."
        raise UnknownNameError(msg) from None
    if task_file is not None:
        task = TaskSpec.load(task_file)
    else:
        task_type = _TASK_ALIASES.get(config.task, config.task)
        if task_type not in dataset.task_types:
            msg = (
                f"data set {name!r} is for {' or '.join(dataset.task_types)}, but the "
                f"config's task is {config.task!r}; set task = {dataset.task_types[0]!r}"
            )
            raise ConfigError(msg)
        task = dataset.default_task(config)
    try:
        check_task_fits(name, dataset, task)
    except DataError as err:
        raise ConfigError(str(err)) from None
    return task


def _looks_like_path(name: str) -> bool:
    path = user_path(name)
    return path_exists(path) or path.suffix.lower() in SUFFIXES or "/" in name or "\\" in name


def _task_file(task: str) -> Path | None:
    path = user_path(task)
    if path.suffix.lower() in (".json", ".toml"):
        if not os.path.isfile(path):
            msg = f"task file not found: {path}"
            raise ConfigError(msg)
        return path
    return None


def _file_task(config: TrainingConfig, records: list[Record], source: str) -> TaskSpec:
    task_type = _TASK_ALIASES.get(config.task, config.task)
    name = Path(source).stem or "data"
    if task_type == "language_modeling":
        return TaskSpec.language_modeling(name, max_seq_len=config.max_seq_len)
    if task_type == "sequence_to_sequence":
        return TaskSpec.sequence_to_sequence(
            name, max_source_len=config.max_seq_len, max_target_len=config.max_seq_len
        )
    if task_type in ("classification", "image_classification"):
        label_column = attrs.fields(TaskSpec).label_column.default
        num_classes, class_names = infer_classes(records, str(label_column))
        if task_type == "classification":
            return TaskSpec.classification(
                name,
                num_classes=num_classes,
                class_names=class_names,
                max_seq_len=config.max_seq_len,
            )
        return TaskSpec(
            name=name,
            modality="vision",
            task_type="image_classification",
            num_classes=num_classes,
            class_names=class_names,
            preprocessing_config={"resize": "pad"},
        )
    msg = (
        f"task {config.task!r} cannot be read from a data file; use one of "
        f"{', '.join(FILE_TASKS)}, or the path of a TaskSpec JSON/TOML file"
    )
    raise ConfigError(msg)


def _check_vocabulary(config: TrainingConfig, tokenizer: Any) -> None:
    size = vocabulary_size(tokenizer)
    if size is not None and size > config.vocab_size:
        msg = (
            f"vocab_size is {config.vocab_size}, but the tokenizer produces {size} ids; set "
            f"vocab_size >= {size}"
        )
        raise ConfigError(msg)
