"""Map-style datasets of ready samples, what a sample is, and the seeded train/validation
split.

Samples are what the collators take: ``{"input_ids": ...}`` for language modeling,
``{"input_ids", "label"}`` for classification, ``{"pixel_values": (C, H, W), "label"}`` for
vision, ``{"input_ids", "target_ids"}`` for sequence to sequence. A sample may also be an
``(input, label)`` tuple, as ``TensorDataset`` and torchvision's datasets give them: it is read
as ``{"input": input, "labels": label}`` (:func:`sample_fields`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch.utils.data import Dataset

from treadle.errors import DataError

__all__ = [
    "TUPLE_SAMPLE_FIELDS",
    "ImageDataset",
    "SampleList",
    "SizedDataset",
    "TokenBlocks",
    "sample_fields",
    "split_indices",
]

#: The fields of an ``(input, label)`` tuple sample: ``input`` is the argument name of
#: PyTorch's own modules' ``forward`` (``nn.Sequential``, ``nn.Linear``), so the model receives
#: it as ``model(input=...)``; ``labels`` is the batch field the losses read.
TUPLE_SAMPLE_FIELDS = ("input", "labels")

_Sample = TypeVar("_Sample", covariant=True)


def sample_fields(sample: object, index: int, where: str) -> Mapping[str, Any]:
    """One sample as a mapping of fields: a mapping as it is; a 2-tuple ``(input, label)``
    (what ``TensorDataset`` and torchvision's datasets give) as
    ``{"input": input, "labels": label}``.

    :param index: the sample's position in its batch, for errors.
    :param where: who reads it, to start error messages (``"classification collator"``).
    :raises DataError: a tuple of another length, or anything else; the message names the
        sample and the fix.
    """
    if isinstance(sample, Mapping):
        return sample
    if isinstance(sample, tuple):
        if len(sample) == len(TUPLE_SAMPLE_FIELDS):
            return dict(zip(TUPLE_SAMPLE_FIELDS, sample, strict=True))
        msg = (
            f"{where}: sample {index} is a tuple of {len(sample)} items; a tuple sample is "
            f"(input, label), read as {{'input': ..., 'labels': ...}}. For more (or fewer) "
            f"fields, return a dict from the dataset's __getitem__, e.g. {{'input': x, "
            f"'mask': m, 'labels': y}}: the model receives every field but 'labels' as a "
            f"keyword argument"
        )
        raise DataError(msg)
    msg = (
        f"{where}: sample {index} is a {type(sample).__name__}, not a dict of fields or an "
        f"(input, label) tuple"
    )
    raise DataError(msg)


class SizedDataset(Dataset[_Sample]):
    """A map-style dataset with a length: what the data module returns."""

    def __len__(self) -> int:
        raise NotImplementedError


class SampleList(SizedDataset[dict[str, Any]]):
    """A list of sample dicts as a dataset."""

    def __init__(self, samples: Sequence[dict[str, Any]]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.samples[index]

    def __repr__(self) -> str:
        return f"SampleList({len(self.samples)} samples)"


class TokenBlocks(SizedDataset[dict[str, torch.Tensor]]):
    """One token stream cut into blocks of ``block_size`` for causal language modeling.

    Sample ``i`` is ``{"input_ids": tokens[i * block_size : (i + 1) * block_size]}``, a 1-D
    long tensor (a view, no copy). The stream's tail becomes a shorter last block when it
    holds at least two tokens (one prediction), and is dropped otherwise.

    :param tokens: ``(num_tokens,)`` long.
    :param block_size: tokens per sample, the task's ``max_seq_len``.
    """

    def __init__(self, tokens: torch.Tensor, block_size: int) -> None:
        if tokens.ndim != 1:
            msg = f"TokenBlocks takes a 1-D token stream, got shape {tuple(tokens.shape)}"
            raise ValueError(msg)
        if block_size < 2:
            msg = f"TokenBlocks: block_size must be >= 2 (one prediction per block): {block_size}"
            raise ValueError(msg)
        self.tokens = tokens.long()
        self.block_size = block_size
        full, tail = divmod(len(tokens), block_size)
        self._length = full + (1 if tail >= 2 else 0)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            msg = f"block {index} out of range for {self._length} blocks"
            raise IndexError(msg)
        start = index * self.block_size
        return {"input_ids": self.tokens[start : start + self.block_size]}

    def __repr__(self) -> str:
        return (
            f"TokenBlocks({self._length} blocks of {self.block_size} tokens, "
            f"{len(self.tokens)} tokens)"
        )


class ImageDataset(SizedDataset[dict[str, Any]]):
    """Images and integer class labels held as two tensors.

    Sample ``i`` is ``{"pixel_values": images[i], "label": int(labels[i])}``.

    :param images: ``(N, C, H, W)`` float.
    :param labels: ``(N,)`` integer class ids.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels):
            msg = (
                f"ImageDataset takes (N, C, H, W) images and (N,) labels, got "
                f"{tuple(images.shape)} and {tuple(labels.shape)}"
            )
            raise ValueError(msg)
        self.images = images
        self.labels = labels.long()

    def select(self, indices: Sequence[int]) -> ImageDataset:
        """A new dataset of the images at ``indices``, in that order."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return ImageDataset(self.images[index], self.labels[index])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"pixel_values": self.images[index], "label": int(self.labels[index])}

    def __repr__(self) -> str:
        shape = "x".join(str(side) for side in self.images.shape[1:])
        return f"ImageDataset({len(self.labels)} images of {shape})"


def split_indices(count: int, validation_split: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``0..count-1`` split at random into training and validation, both sorted.

    The split depends only on ``(count, validation_split, seed)``. Validation gets
    ``round(count * validation_split)`` items, at least one when ``validation_split > 0``, and
    training keeps at least one.

    :raises DataError: ``validation_split`` is outside ``[0, 1)``, or there are too few items
        to split.
    """
    if not 0 <= validation_split < 1:
        msg = f"validation_split must lie in [0, 1): {validation_split}"
        raise DataError(msg)
    if count < 1:
        msg = "nothing to split: the data set has no items"
        raise DataError(msg)
    if validation_split == 0:
        return list(range(count)), []
    if count < 2:
        msg = (
            f"cannot split {count} item into training and validation; give more data or "
            f"validation_split=0"
        )
        raise DataError(msg)
    num_validation = min(max(round(count * validation_split), 1), count - 1)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(count, generator=generator).tolist()
    return sorted(order[num_validation:]), sorted(order[:num_validation])


class Head(SizedDataset[_Sample]):
    """The first ``count`` samples of ``dataset`` (all of them when it holds fewer).

    :param dataset: a sized map-style dataset.
    :param count: how many samples to keep, >= 0.
    """

    def __init__(self, dataset: SizedDataset[_Sample], count: int) -> None:
        if count < 0:
            msg = f"Head: count must be >= 0: {count}"
            raise ValueError(msg)
        self.dataset = dataset
        self.count = min(count, len(dataset))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> _Sample:
        if not -self.count <= index < self.count:
            msg = f"index {index} out of range for {self.count} samples"
            raise IndexError(msg)
        return self.dataset[index % self.count]

    def __repr__(self) -> str:
        return f"Head({self.dataset!r}, {self.count})"
