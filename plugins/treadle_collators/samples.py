"""Reading samples for the built-in collators: each field checked, errors naming the sample
index and the key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["check_samples", "field", "label_of", "pad_sequences", "token_ids"]


def check_samples(samples: Sequence[Any], collator: str) -> None:
    """Raise ``ValueError`` unless ``samples`` is a non-empty sequence of mappings."""
    if isinstance(samples, (str, bytes, Mapping)) or not isinstance(samples, Sequence):
        msg = f"{collator} collator expects a list of samples (dicts), got {type(samples).__name__}"
        raise ValueError(msg)
    if not samples:
        msg = f"{collator} collator got an empty list of samples"
        raise ValueError(msg)
    for index, sample in enumerate(samples):
        if not isinstance(sample, Mapping):
            msg = (
                f"{collator} collator: sample {index} is a {type(sample).__name__}, not a dict "
                f"of fields"
            )
            raise ValueError(msg)


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
