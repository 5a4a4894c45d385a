"""Conformance checks for collators, for treadle's built-ins and for any plugin's own.

Call :func:`check_collator` from a test with a ready collator and a list of samples it takes;
drive it from a property test to cover random lengths and batch sizes::

    from hypothesis import given, strategies as st
    from treadle.testing.collators import check_collator


    @given(st.lists(st.lists(st.integers(3, 200), min_size=1, max_size=40), min_size=1))
    def test_my_collator_conforms(lengths):
        check_collator(MyCollator(), [{"input_ids": ids} for ids in lengths])

It raises :class:`~treadle.testing.losses.ConformanceError` naming the check. The checks:

``batch``
    The result is a mapping of tensors with ``labels``; every tensor's first dimension is the
    number of samples.
``deterministic and pure``
    Collating the same samples twice gives equal tensors, and the samples are not changed.
``order``
    Row ``i`` of a batch depends only on sample ``i``: collating one sample alone gives the
    batch's row (over the overlapping columns, since a batch may pad further).
``masks``
    Where the batch has an ``attention_mask`` (and no ``decoder_input_ids``, whose batches mask
    the encoder's side), it holds only 0 and 1, and token ``labels`` of the same shape are -100
    (ignored) wherever the mask is 0: padding never counts.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import torch

from treadle.testing.losses import ConformanceError

__all__ = ["check_collator"]

#: Label value the losses skip.
IGNORE_INDEX = -100


def check_collator(
    collator: Callable[[Sequence[Any]], Mapping[str, Any]], samples: list[Any]
) -> dict[str, torch.Tensor]:
    """Run the checks above on ``collator`` with ``samples``; return the batch.

    :raises ConformanceError: a check failed; the message names it.
    """
    if not samples:
        msg = "check_collator needs at least one sample"
        raise ValueError(msg)
    before = copy.deepcopy(samples)
    batch = _batch(collator, samples, "batch")
    again = _batch(collator, samples, "deterministic and pure")
    for key, value in batch.items():
        if not torch.equal(value, again[key]):
            _fail("deterministic and pure", f"collating the same samples twice changed {key!r}")
    if not _same(before, samples):
        _fail("deterministic and pure", "the collator changed the samples it was given")
    for index, sample in enumerate(samples):
        alone = _batch(collator, [sample], "order")
        for key, value in alone.items():
            row = batch[key][index]
            single = value[0]
            if row.ndim != single.ndim:
                _fail("order", f"{key!r} has rank {single.ndim} alone and {row.ndim} in a batch")
            overlap = tuple(
                slice(0, min(a, b)) for a, b in zip(row.shape, single.shape, strict=True)
            )
            if not torch.equal(row[overlap], single[overlap]):
                _fail("order", f"row {index} of {key!r} differs from sample {index} collated alone")
    mask = batch.get("attention_mask")
    labels = batch["labels"]
    if mask is not None and "decoder_input_ids" not in batch:  # seq2seq: the encoder's mask
        if not bool(((mask == 0) | (mask == 1)).all()):
            _fail("masks", "attention_mask holds values other than 0 and 1")
        if labels.shape == mask.shape and bool((labels[mask == 0] != IGNORE_INDEX).any()):
            _fail("masks", "labels count padding: they are not -100 where attention_mask is 0")
    return batch


def _batch(
    collator: Callable[[Sequence[Any]], Mapping[str, Any]], samples: list[Any], check: str
) -> dict[str, torch.Tensor]:
    result = collator(samples)
    if not isinstance(result, Mapping):
        _fail(check, f"the collator returned a {type(result).__qualname__}, not a mapping")
    if "labels" not in result:
        _fail(check, f"the batch has no 'labels' (keys: {', '.join(map(str, result))})")
    batch: dict[str, torch.Tensor] = {}
    for key, value in result.items():
        if not isinstance(value, torch.Tensor):
            _fail(check, f"{key!r} is a {type(value).__qualname__}, not a tensor")
        if value.ndim == 0 or value.shape[0] != len(samples):
            _fail(
                check,
                f"{key!r} has shape {tuple(value.shape)}; its first dimension must be the "
                f"{len(samples)} samples",
            )
        batch[str(key)] = value
    return batch


def _same(left: Any, right: Any) -> bool:
    if isinstance(left, torch.Tensor) and isinstance(right, torch.Tensor):
        return left.shape == right.shape and bool(torch.equal(left, right))
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
    if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        return len(left) == len(right) and all(
            _same(a, b) for a, b in zip(left, right, strict=True)
        )
    if hasattr(left, "__array__") and hasattr(right, "__array__"):  # numpy arrays, PIL images
        import numpy

        return bool(numpy.array_equal(numpy.asarray(left), numpy.asarray(right)))
    return bool(left == right)


def _fail(check: str, problem: str) -> NoReturn:
    raise ConformanceError(f"collator conformance, {check}: {problem}")
