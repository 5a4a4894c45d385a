"""Reading samples for the built-in collators: each field checked, errors naming the sample
index and the key.

A sample is a dict of fields, or an ``(input, label)`` tuple read as
``{"input": input, "labels": label}`` (:func:`treadle.data.sample_fields`, the one rule for
every collator).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from treadle.data import TUPLE_SAMPLE_FIELDS, sample_fields
from treadle.errors import DataError

__all__ = [
    "field",
    "label_field",
    "label_of",
    "pad_sequences",
    "read_samples",
    "refuse_tuples",
    "stack_field",
    "token_ids",
]


def read_samples(samples: Sequence[Any], collator: str) -> list[Mapping[str, Any]]:
    """``samples`` as mappings of fields (tuples read by :func:`treadle.data.sample_fields`).

    :raises ValueError: ``samples`` is not a non-empty sequence of dicts and ``(input,
        label)`` tuples; the message names the first bad sample.
    """
    if isinstance(samples, (str, bytes, Mapping)) or not isinstance(samples, Sequence):
        msg = f"{collator} collator expects a list of samples (dicts), got {type(samples).__name__}"
        raise ValueError(msg)
    if not samples:
        msg = f"{collator} collator got an empty list of samples"
        raise ValueError(msg)
    try:
        return [
            sample_fields(sample, index, f"{collator} collator")
            for index, sample in enumerate(samples)
        ]
    except DataError as err:
        raise ValueError(str(err)) from None


def refuse_tuples(samples: Sequence[Any], collator: str, wanted: str, reason: str) -> None:
    """Raise ``ValueError`` naming the first tuple sample, the dict this collator wants and
    why a tuple cannot stand for it."""
    if isinstance(samples, (str, bytes, Mapping)) or not isinstance(samples, Sequence):
        return  # read_samples names the problem
    for index, sample in enumerate(samples):
        if isinstance(sample, tuple):
            msg = (
                f"{collator} collator: sample {index} is a tuple; this collator's samples are "
                f"{wanted}: {reason}. Return that dict from the dataset's __getitem__"
            )
            raise ValueError(msg)


def label_field(sample: Mapping[str, Any], label_key: str) -> str:
    """The key of ``sample``'s label: ``label_key`` when present, else ``labels`` (the name
    of a tuple sample's label, and Hugging Face's), else ``label_key`` (to name it missing)."""
    if label_key not in sample and TUPLE_SAMPLE_FIELDS[1] in sample:
        return TUPLE_SAMPLE_FIELDS[1]
    return label_key


def stack_field(
    samples: Sequence[Mapping[str, Any]], key: str, collator: str, fix: str
) -> torch.Tensor:
    """``sample[key]`` of every sample stacked into one ``(batch, ...)`` tensor, as PyTorch's
    ``default_collate`` stacks them: tensors keep their dtype; numbers, nested lists and
    arrays become tensors.

    :param fix: what to do instead when the shapes differ (named in the error).
    :raises ValueError: a value that is not numeric, or shapes that differ, naming the sample.
    """
    tensors = []
    for index, sample in enumerate(samples):
        value = field(sample, index, key, collator)
        if isinstance(value, torch.Tensor):
            tensors.append(value)
            continue
        try:
            tensors.append(torch.as_tensor(value))
        except (TypeError, ValueError, RuntimeError) as err:
            msg = (
                f"{collator} collator: sample {index}: {key!r} is a {type(value).__name__}, not "
                f"a tensor, number or nested list of numbers ({err})"
            )
            raise ValueError(msg) from None
    first = tensors[0].shape
    for index, tensor in enumerate(tensors):
        if tensor.shape != first:
            msg = (
                f"{collator} collator: sample {index}: {key!r} has shape {tuple(tensor.shape)}, "
                f"sample 0 has {tuple(first)}; {key!r} is stacked as it is, so {fix}"
            )
            raise ValueError(msg)
    return torch.stack(tensors)


def field(sample: Mapping[str, Any], index: int, key: str, collator: str) -> Any:
    """``sample[key]``, or a ``ValueError`` naming the index, the key and the keys present."""
    try:
        return sample[key]
    except KeyError:
        keys = ", ".join(map(repr, sample)) or "none"
        msg = f"{collator} collator: sample {index} has no {key!r} (its keys: {keys})"
        raise ValueError(msg) from None


def token_ids(sample: Mapping[str, Any], index: int, key: str, collator: str) -> torch.Tensor:
    """``sample[key]`` as a non-empty 1-D long tensor: a list of ints or an integer tensor."""
    value = field(sample, index, key, collator)
    if isinstance(value, torch.Tensor):
        tensor = value
    elif isinstance(value, (list, tuple)):
        try:
            tensor = torch.tensor(value)
        except (TypeError, ValueError, RuntimeError) as err:
            msg = f"{collator} collator: sample {index}: {key!r} is not a list of ints ({err})"
            raise ValueError(msg) from None
    else:
        msg = (
            f"{collator} collator: sample {index}: {key!r} is a {type(value).__name__}; give a "
            f"list of ints or a 1-D integer tensor"
        )
        raise ValueError(msg)
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        msg = (
            f"{collator} collator: sample {index}: {key!r} holds {tensor.dtype} values; token "
            f"ids are integers"
        )
        raise ValueError(msg)
    if tensor.ndim != 1:
        msg = (
            f"{collator} collator: sample {index}: {key!r} has shape {tuple(tensor.shape)}; "
            f"one sample's token ids are 1-D"
        )
        raise ValueError(msg)
    if tensor.numel() == 0:
        msg = (
            f"{collator} collator: sample {index}: {key!r} is empty; drop empty texts before "
            f"batching"
        )
        raise ValueError(msg)
    return tensor.long()


def label_of(sample: Mapping[str, Any], index: int, key: str, collator: str) -> int:
    """``sample[key]`` as one integer class id (an int or a 0-d integer tensor)."""
    value = field(sample, index, key, collator)
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.dtype.is_floating_point:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    msg = (
        f"{collator} collator: sample {index}: {key!r} is {value!r} "
        f"({type(value).__name__}); give one integer class id"
    )
    raise ValueError(msg)


def pad_sequences(
    sequences: Sequence[torch.Tensor], length: int, pad_value: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (or truncate) 1-D sequences to ``length``.

    :returns: the ``(batch, length)`` long tensor and its attention mask (long, 1 on kept
        tokens, 0 on padding).
    """
    batch = torch.full((len(sequences), length), pad_value, dtype=torch.long)
    lengths = [min(len(sequence), length) for sequence in sequences]
    for row, (sequence, kept) in enumerate(zip(sequences, lengths, strict=True)):
        batch[row, :kept] = sequence[:kept]
    mask = (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).long()
    return batch, mask
