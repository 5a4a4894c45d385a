"""Turning records into the samples a task's collator takes, checking every field first.

Which samples a task gets is decided by its task type and modality:

- ``language_modeling``: each record's text is tokenized (with begin and end tokens), the
  texts are joined into one stream and cut into blocks of ``max_seq_len`` (packing, as
  Hugging Face's ``run_clm`` does): ``{"input_ids"}``;
- ``classification`` on text: ``{"input_ids", "label"}``, the ids cut to ``max_seq_len``;
- vision (``image_classification``, or ``classification`` with modality ``vision``):
  ``{"pixel_values": (C, H, W), "label"}`` from nested lists, arrays or PIL images;
- ``sequence_to_sequence``: ``{"input_ids", "target_ids"}``.

Labels are class ids (ints, or strings holding an int) or class names, looked up in the
task's ``class_names``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import torch

from treadle.data.files import Record
from treadle.data.samples import SampleList, SizedDataset, TokenBlocks, split_indices
from treadle.data.tokenizer import ByteTokenizer, TextEncoder, text_encoder
from treadle.errors import DataError
from treadle.task import TaskSpec

__all__ = [
    "IMAGE_COLUMNS",
    "Columns",
    "build_dataset",
    "check_records",
    "datasets_from_records",
    "infer_classes",
    "resolve_columns",
    "sample_kind",
]

#: Column names tried, in order, for images when no column is named.
IMAGE_COLUMNS = ("pixel_values", "image", "img")

#: Default target column of sequence-to-sequence records.
TARGET_COLUMN = "target"

#: Block length for language modeling when the task sets no ``max_seq_len``.
DEFAULT_BLOCK_SIZE = 128


@attrs.frozen
class Columns:
    """The record fields a task reads.

    :ivar inputs: the text (or, for vision, image; for sequence to sequence, source) column.
    :ivar target: the label column (for sequence to sequence, the target text column), or
        ``None`` for language modeling.
    """

    inputs: str
    target: str | None


def sample_kind(task_spec: TaskSpec) -> str:
    """``language_modeling``, ``classification``, ``vision`` or ``sequence_to_sequence``.

    :raises DataError: the data module cannot build samples for this task from records.
    """
    task_type = task_spec.task_type
    if task_type in ("language_modeling", "sequence_to_sequence"):
        return task_type
    if task_spec.modality == "vision" and task_type in ("image_classification", "classification"):
        return "vision"
    if task_type == "classification":
        return "classification"
    msg = (
        f"task {task_spec.name!r} ({task_type}, {task_spec.modality}): the data module builds "
        f"samples for language_modeling, classification, image_classification and "
        f"sequence_to_sequence; for other tasks make a Dataset of the samples the "
        f"{task_spec.collator_name!r} collator takes and pass it to the Trainer"
    )
    raise DataError(msg)


def resolve_columns(
    task_spec: TaskSpec,
    records: Sequence[Record],
    text_column: str | None = None,
    label_column: str | None = None,
) -> Columns:
    """The columns to read: the given names, else the task's ``text_column`` and
    ``label_column`` (for vision the first of :data:`IMAGE_COLUMNS` the first record has;
    for sequence to sequence the target column is ``preprocessing_config["target_column"]``
    or ``"target"``)."""
    kind = sample_kind(task_spec)
    inputs = text_column or task_spec.text_column
    if kind == "vision" and text_column is None:
        first = records[0].values if records else {}
        inputs = next((name for name in IMAGE_COLUMNS if name in first), IMAGE_COLUMNS[0])
    if kind == "language_modeling":
        return Columns(inputs, None)
    if kind == "sequence_to_sequence":
        target = label_column or str(
            task_spec.preprocessing_config.get("target_column", TARGET_COLUMN)
        )
        return Columns(inputs, target)
    return Columns(inputs, label_column or task_spec.label_column)


def check_records(records: Sequence[Record], columns: Columns) -> None:
    """Every record has the columns, and text columns hold text.

    :raises DataError: naming the record's file and line, the missing column, the columns
        found, and the argument that names another column.
    """
    wanted = [(columns.inputs, "text_column")]
    if columns.target is not None:
        wanted.append((columns.target, "label_column"))
    for record in records:
        for column, argument in wanted:
            if column not in record.values:
                found = ", ".join(map(repr, record.values)) or "none"
                msg = (
                    f"{record.location}: no column {column!r} (columns found: {found}); name "
                    f"the column to use with {argument}="
                )
                raise DataError(msg)


def infer_classes(
    records: Sequence[Record], label_column: str
) -> tuple[int, tuple[str, ...] | None]:
    """The classes the records' labels imply: ``(max + 1, None)`` when every label is a class
    id, else ``(count, sorted names)``.

    :raises DataError: a record lacks the label column or holds an unusable label.
    """
    ids: list[int] = []
    names: set[str] = set()
    for record in records:
        if label_column not in record.values:
            found = ", ".join(map(repr, record.values)) or "none"
            msg = (
                f"{record.location}: no column {label_column!r} (columns found: {found}); name "
                f"the column to use with label_column="
            )
            raise DataError(msg)
        value = record.values[label_column]
        class_id = _as_class_id(value)
        if class_id is not None:
            if class_id < 0:
                msg = f"{record.location}: label {value!r} is negative; class ids start at 0"
                raise DataError(msg)
            ids.append(class_id)
        elif isinstance(value, str) and value.strip():
            names.add(value.strip())
        else:
            msg = (
                f"{record.location}: column {label_column!r} holds {_describe(value)}; give a "
                f"class id (int) or a class name (text)"
            )
            raise DataError(msg)
    if not names:
        return max(ids) + 1, None
    all_names = sorted(names | {str(class_id) for class_id in ids})
    return len(all_names), tuple(all_names)


def build_dataset(
    records: Sequence[Record], task_spec: TaskSpec, encoder: TextEncoder, columns: Columns
) -> SizedDataset[Any]:
    """The dataset of samples for ``task_spec`` from ``records`` (see the module docstring).

    :raises DataError: a field is missing or unusable, naming the record's location.
    """
    kind = sample_kind(task_spec)
    check_records(records, columns)
    if kind == "language_modeling":
        block_size = task_spec.max_seq_len or DEFAULT_BLOCK_SIZE
        return token_blocks(
            (_token_ids(record, columns.inputs, encoder) for record in records), block_size
        )
    target = columns.target
    if target is None:
        msg = f"task {task_spec.name!r} ({kind}) needs a label column; pass label_column="
        raise DataError(msg)
    limit = task_spec.max_seq_len
    target_limit = task_spec.preprocessing_config.get("max_target_len", limit)
    samples: list[dict[str, Any]] = []
    for record in records:
        if kind == "vision":
            image = _image(record, columns.inputs)
            samples.append({"pixel_values": image, "label": _label(record, target, task_spec)})
            continue
        input_ids = _encoded(record, columns.inputs, encoder, limit)
        if kind == "classification":
            samples.append({"input_ids": input_ids, "label": _label(record, target, task_spec)})
        else:
            target_ids = _encoded(record, target, encoder, target_limit)
            samples.append({"input_ids": input_ids, "target_ids": target_ids})
    return SampleList(samples)


def datasets_from_records(
    records: Sequence[Record],
    task_spec: TaskSpec,
    *,
    tokenizer: Any = None,
    validation_split: float = 0.1,
    seed: int = 42,
    text_column: str | None = None,
    label_column: str | None = None,
    validation_records: Sequence[Record] | None = None,
    source: str | None = None,
) -> tuple[SizedDataset[Any], SizedDataset[Any] | None]:
    """The training and validation datasets of ``task_spec``'s samples from ``records``: what
    data files, Hugging Face rows and record-based named data sets go through.

    Every record is checked before any sample is built. The records are split at random by
    ``seed`` (:func:`~treadle.data.samples.split_indices`) before samples are made, so no
    language-modeling block straddles the split.

    :param tokenizer: for text: what :func:`~treadle.data.tokenizer.text_encoder` accepts;
        default :class:`~treadle.data.tokenizer.ByteTokenizer`.
    :param validation_split: the fraction of ``records`` held out; 0 gives no validation side.
    :param text_column: the text (vision: image) column; default the task's.
    :param label_column: the label (sequence to sequence: target) column; default the task's.
    :param validation_records: a validation side of its own (a data set's validation split):
        then every one of ``records`` trains and ``validation_split`` is not used.
    :param source: what the records were read from (a file, a data set's name), named by the
        errors that concern all of them (too few to split, too few tokens).
    :returns: ``(train, val)``; ``val`` is ``None`` when there is no validation side.
    :raises DataError: a missing column or a bad value, naming the record's location.
    """
    try:
        columns = resolve_columns(task_spec, records, text_column, label_column)
        encoder = text_encoder(tokenizer if tokenizer is not None else ByteTokenizer())
        check_records(records, columns)  # before splitting: the first bad line is named
        if validation_records is not None:
            check_records(validation_records, columns)
            train = build_dataset(records, task_spec, encoder, columns)
            return train, build_dataset(validation_records, task_spec, encoder, columns)
        train_index, val_index = split_indices(len(records), validation_split, seed)
        train = build_dataset([records[i] for i in train_index], task_spec, encoder, columns)
        if not val_index:
            return train, None
        val = build_dataset([records[i] for i in val_index], task_spec, encoder, columns)
        return train, val
    except DataError as err:
        if source is None or source in str(err):
            raise
        msg = f"{source}: {err}"
        raise DataError(msg) from None


def token_blocks(documents: Iterable[list[int]], block_size: int) -> TokenBlocks:
    """Join the documents' token ids into one stream and cut it into blocks.

    :raises DataError: the documents hold fewer than two tokens in all.
    """
    stream: list[int] = []
    for ids in documents:
        stream.extend(ids)
    if len(stream) < 2:
        msg = f"the texts hold {len(stream)} token(s) in all; language modeling needs at least two"
        raise DataError(msg)
    return TokenBlocks(torch.tensor(stream, dtype=torch.long), block_size)


def _text(record: Record, column: str) -> str:
    value = record.values[column]
    if not isinstance(value, str):
        msg = f"{record.location}: column {column!r} holds {_describe(value)}, expected text"
        raise DataError(msg)
    return value


def _token_ids(record: Record, column: str, encoder: TextEncoder) -> list[int]:
    text = _text(record, column)
    try:
        return encoder(text)
    except UnicodeEncodeError as err:
        # JSON can escape half of a surrogate pair ("\\ud800"); no UTF-8 text holds one
        msg = (
            f"{record.location}: column {column!r} holds {text[err.start]!r} at character "
            f"{err.start}, half of a surrogate pair, which is not text ({err.reason}); the "
            f"file escapes a character's first or second half alone"
        )
        raise DataError(msg) from None


def _encoded(record: Record, column: str, encoder: TextEncoder, limit: int | None) -> list[int]:
    ids = _token_ids(record, column, encoder)
    if not ids:
        msg = (
            f"{record.location}: column {column!r} encodes to no tokens (empty text?); drop "
            f"the record or use a tokenizer that adds begin/end tokens"
        )
        raise DataError(msg)
    return ids[:limit] if limit else ids


def _label(record: Record, column: str, task_spec: TaskSpec) -> int:
    value = record.values[column]
    num_classes = task_spec.num_classes
    class_id = _as_class_id(value)
    if class_id is None and isinstance(value, str) and task_spec.class_names is not None:
        if value.strip() in task_spec.class_names:
            return task_spec.class_names.index(value.strip())
        msg = (
            f"{record.location}: label {value!r} is not a class of task {task_spec.name!r} "
            f"(classes: {', '.join(task_spec.class_names)})"
        )
        raise DataError(msg)
    if class_id is None:
        msg = (
            f"{record.location}: column {column!r} holds {_describe(value)}; give a "
            f"class id (int){'' if task_spec.class_names else ', or set the task class_names'}"
        )
        raise DataError(msg)
    if num_classes is not None and not 0 <= class_id < num_classes:
        msg = (
            f"{record.location}: label {class_id} is outside 0..{num_classes - 1} (task "
            f"{task_spec.name!r} has {num_classes} classes)"
        )
        raise DataError(msg)
    return class_id


def _as_class_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
    return None


def _image(record: Record, column: str) -> torch.Tensor:
    import numpy

    value = record.values[column]
    try:
        if isinstance(value, torch.Tensor):
            image = value.detach().clone()
        elif hasattr(value, "__array__") or hasattr(value, "__array_interface__"):
            # numpy arrays and PIL images
            image = torch.from_numpy(numpy.array(value))
            if image.ndim == 3 and image.shape[-1] in (1, 3, 4) and image.shape[0] not in (1, 3):
                image = image.permute(2, 0, 1).contiguous()  # (H, W, C) arrays
        else:
            image = torch.tensor(value)
    except (TypeError, ValueError, RuntimeError) as err:
        msg = (
            f"{record.location}: column {column!r} is not an image (nested lists of numbers): {err}"
        )
        raise DataError(msg) from None
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or image.numel() == 0:
        msg = (
            f"{record.location}: column {column!r} has shape {tuple(image.shape)}; give one "
            f"(C, H, W) or (H, W) image"
        )
        raise DataError(msg)
    if image.dtype.is_floating_point:
        return image.float()
    if image.dtype == torch.uint8 or (image.min() >= 0 and image.max() <= 255):
        return image.to(torch.uint8)  # the collator scales uint8 to [0, 1]
    msg = f"{record.location}: column {column!r} holds integers outside 0..255; give floats"
    raise DataError(msg)


def _describe(value: Any) -> str:
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{type(value).__name__} {text}"
