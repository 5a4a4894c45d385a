"""Built-in named data sets: real data that is on the machine after a plain install.

- ``pydoc_topics``: English prose from the Python reference documentation, shipped in the
  standard library as ``pydoc_data.topics.topics`` (no extra dependency); language modeling.
- ``digits``: 1,797 handwritten digits, 8x8 grey, 10 classes, shipped inside scikit-learn
  (the ``vision`` extra); image classification.

Sources and licences are in ``docs/data.md``. ``list_datasets()`` describes them;
``load_named_dataset(name, ...)`` gives the seeded training and validation datasets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs
import torch

from treadle.data.encode import token_blocks
from treadle.data.files import Record
from treadle.data.samples import ImageDataset, SampleList, SizedDataset, split_indices
from treadle.data.tokenizer import ByteTokenizer, text_encoder
from treadle.errors import DataError, UnknownNameError
from treadle.task import TaskSpec

__all__ = [
    "NamedDataset",
    "dataset_info",
    "digits_arrays",
    "list_datasets",
    "load_named_dataset",
    "pydoc_documents",
]

logger = logging.getLogger(__name__)

#: Paragraphs of one pydoc topic are grouped into documents of about this many characters,
#: so the training/validation split has a few hundred units (there are only 79 topics).
PYDOC_DOCUMENT_CHARS = 2000


@attrs.frozen(kw_only=True)
class NamedDataset:
    """A built-in data set.

    :ivar name: its name, for ``TrainingConfig.dataset``.
    :ivar description: what it holds.
    :ivar task_types: the task types it serves (the first is its own).
    :ivar modality: ``text`` or ``vision``.
    :ivar source: where the data comes from.
    :ivar licence: the data's licence.
    :ivar extra: the treadle extra that installs what it needs, or ``None``.
    """

    name: str
    description: str
    task_types: tuple[str, ...]
    modality: str
    source: str
    licence: str
    extra: str | None = None
    default_task: Callable[[int], TaskSpec] = attrs.field(repr=False)

    def task_spec(self, max_seq_len: int = 128) -> TaskSpec:
        """The TaskSpec this data set trains with by default."""
        return self.default_task(max_seq_len)


_DATASETS: dict[str, NamedDataset] = {
    "pydoc_topics": NamedDataset(
        name="pydoc_topics",
        description=(
            "about 65k words (466 kB) of English prose and code from the Python reference "
            "documentation, 79 topics"
        ),
        task_types=("language_modeling",),
        modality="text",
        source="the standard library's pydoc_data.topics (Python documentation)",
        licence="PSF License Agreement (Python Software Foundation License Version 2)",
        default_task=lambda max_seq_len: TaskSpec.language_modeling(max_seq_len=max_seq_len),
    ),
    "digits": NamedDataset(
        name="digits",
        description="1,797 handwritten digits, 8x8 grey images in [0, 1], 10 classes",
        task_types=("image_classification",),
        modality="vision",
        source=(
            "scikit-learn's sklearn.datasets.load_digits: a copy of the test set of the UCI "
            "Optical Recognition of Handwritten Digits data set"
        ),
        licence="CC BY 4.0 (UCI Machine Learning Repository)",
        extra="vision",
        default_task=lambda max_seq_len: TaskSpec.vision_tiny(),
    ),
}


def list_datasets() -> list[NamedDataset]:
    """The built-in named data sets, sorted by name."""
    return [_DATASETS[name] for name in sorted(_DATASETS)]


def dataset_info(name: str) -> NamedDataset:
    """The built-in data set called ``name``.

    :raises UnknownNameError: no built-in data set has that name; the message lists them.
    """
    try:
        return _DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(_DATASETS))
        msg = (
            f"Unknown data set {name!r}. Built-in data sets: {known}; or give the path of a "
            f"data file (.jsonl, .json, .csv, .tsv, .txt, .parquet)."
        )
        raise UnknownNameError(msg) from None


def load_named_dataset(
    name: str,
    *,
    task_spec: TaskSpec | None = None,
    tokenizer: Any = None,
    validation_split: float = 0.1,
    seed: int = 42,
) -> tuple[SizedDataset[Any], SizedDataset[Any]]:
    """The training and validation datasets of a built-in data set, split at random by
    ``seed``.

    :param task_spec: the task to build samples for; it must be of a type the data set serves
        (default: the data set's own task).
    :param tokenizer: for text: any tokenizer :func:`~treadle.data.tokenizer.text_encoder`
        accepts; default :class:`~treadle.data.tokenizer.ByteTokenizer`.
    :raises UnknownNameError: no such data set.
    :raises DataError: the task does not fit the data set, or its optional dependency is
        missing (naming the extra to install).
    """
    info = dataset_info(name)
    task = task_spec if task_spec is not None else info.task_spec()
    check_task_fits(info, task)
    if name == "pydoc_topics":
        encoder = text_encoder(tokenizer if tokenizer is not None else ByteTokenizer())
        documents = pydoc_documents()
        train_index, val_index = split_indices(len(documents), validation_split, seed)
        block_size = task.max_seq_len or 128
        train = token_blocks(
            (encoder(documents[i].values["text"]) for i in train_index), block_size
        )
        val = (
            token_blocks((encoder(documents[i].values["text"]) for i in val_index), block_size)
            if val_index
            else None
        )
        logger.info(
            "pydoc_topics: %d training and %d validation blocks of %d tokens",
            len(train),
            0 if val is None else len(val),
            block_size,
        )
        return train, val if val is not None else SampleList([])
    images, labels = digits_arrays()
    dataset = ImageDataset(images, labels)
    train_index, val_index = split_indices(len(dataset), validation_split, seed)
    return dataset.select(train_index), dataset.select(val_index)


def check_task_fits(info: NamedDataset, task_spec: TaskSpec) -> None:
    """:raises DataError: ``task_spec`` is not of a type and modality ``info`` serves."""
    if task_spec.task_type in info.task_types and task_spec.modality == info.modality:
        return
    msg = (
        f"data set {info.name!r} serves {' or '.join(info.task_types)} on {info.modality}, not "
        f"task {task_spec.name!r} ({task_spec.task_type} on {task_spec.modality}); use a task "
        f"of that type (TrainingConfig task = {info.task_types[0]!r})"
    )
    raise DataError(msg)


def pydoc_documents(max_chars: int = PYDOC_DOCUMENT_CHARS) -> list[Record]:
    """The Python reference documentation's topics, as documents of whole paragraphs of
    about ``max_chars`` characters (a longer paragraph stays whole), in topic order.

    :raises DataError: this Python lacks ``pydoc_data`` (some Linux distributions package it
        separately).
    """
    try:
        from pydoc_data.topics import topics
    except ImportError as err:
        msg = (
            f"the pydoc_topics data set reads the standard library's pydoc_data, which this "
            f"Python lacks ({err}); install your distribution's full Python standard library "
            f"package, or use another data set"
        )
        raise DataError(msg) from err
    documents: list[Record] = []
    for topic in sorted(topics):
        paragraphs = [part.strip("\n") for part in topics[topic].split("\n\n") if part.strip()]
        group: list[str] = []
        size = 0
        part = 0
        for paragraph in [*paragraphs, None]:
            if group and (paragraph is None or size + len(paragraph) > max_chars):
                location = f"pydoc_data.topics[{topic!r}] part {part}"
                documents.append(Record(location, {"text": "\n\n".join(group)}))
                group, size, part = [], 0, part + 1
            if paragraph is not None:
                group.append(paragraph)
                size += len(paragraph) + 2
    return documents


def digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits: ``(1797, 1, 8, 8)`` float32 images in ``[0, 1]`` and
    ``(1797,)`` long labels.

    :raises DataError: scikit-learn is not installed (naming ``pip install "treadle[vision]"``).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        msg = (
            f'the digits data set needs scikit-learn: pip install "treadle[vision]" '
            f"(or pip install scikit-learn) ({err})"
        )
        raise DataError(msg) from err
    bunch: Any = load_digits()
    # pixel values are counts 0..16 of set bits in 4x4 blocks of the 32x32 original
    images = torch.as_tensor(bunch.images, dtype=torch.float32).div(16.0).unsqueeze(1)
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    return images.contiguous(), labels
