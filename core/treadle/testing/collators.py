"""Conformance checks for collators, for treadle's built-ins and for any plugin's own.

Call :func:`check_collator` from a test with a ready collator and a list of samples it takes;
drive it from a property test to cover random lengths and batch sizes::

    from hypothesis import given, strategies as st
    from treadle.testing.collators import check_collator


    @given(st.lists(st.lists(st.integers(3, 200), min_size=1, max_size=40), min_size=1))
    def test_my_collator_conforms(lengths):
        check_collator(MyCollator(), [{"input_ids": ids} for ids in lengths])

It raises :class:`~treadle.testing.report.ConformanceError` naming the rule, or returns a
:class:`~treadle.testing.report.ConformanceReport` whose ``details["batch"]`` is the batch it
made. The rules:

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
from typing import Any

import torch

from treadle.testing.report import ConformanceReport, Rule, RuleRunner

__all__ = ["RULES", "check_collator"]

#: Label value the losses skip.
IGNORE_INDEX = -100

#: The rules :func:`check_collator` enforces, in order.
RULES = (
    Rule(
        "batch",
        "a mapping of tensors holding 'labels', each tensor's first dimension the number of "
        "samples",
    ),
    Rule(
        "deterministic and pure",
        "the same samples give equal batches, and the samples are left unchanged",
    ),
    Rule("order", "row i of a batch depends only on sample i"),
    Rule(
        "masks",
        "an attention_mask holds only 0 and 1, and token labels are -100 wherever it is 0",
    ),
)


def check_collator(
    collator: Callable[[Sequence[Any]], Mapping[str, Any]], samples: list[Any]
) -> ConformanceReport:
    """Run the rules above on ``collator`` with ``samples``.

    :returns: the report; ``details["batch"]`` is the batch of ``samples``.
    :raises ConformanceError: a rule is broken; the message names it.
    """
    if not samples:
        msg = "check_collator needs at least one sample"
        raise ValueError(msg)
    rules = RuleRunner("collators", _subject(collator), RULES)
    before = copy.deepcopy(samples)
    batch = _batch(rules, collator, samples, "batch")
    rules.passes("batch")
    again = _batch(rules, collator, samples, "deterministic and pure")
    for key, value in batch.items():
        if not torch.equal(value, again[key]):
            rules.fail(
                "deterministic and pure", f"collating the same samples twice changed {key!r}"
            )
    if not same_samples(before, samples):
        rules.fail("deterministic and pure", "the collator changed the samples it was given")
    rules.passes("deterministic and pure")
    for index, sample in enumerate(samples):
        alone = _batch(rules, collator, [sample], "order")
        for key, value in alone.items():
            row = batch[key][index]
            single = value[0]
            if row.ndim != single.ndim:
                rules.fail(
                    "order", f"{key!r} has rank {single.ndim} alone and {row.ndim} in a batch"
                )
            overlap = tuple(
                slice(0, min(a, b)) for a, b in zip(row.shape, single.shape, strict=True)
            )
            if not torch.equal(row[overlap], single[overlap]):
                rules.fail(
                    "order", f"row {index} of {key!r} differs from sample {index} collated alone"
                )
    rules.passes("order")
    mask = batch.get("attention_mask")
    labels = batch["labels"]
    if mask is None or "decoder_input_ids" in batch:  # seq2seq: the encoder's mask
        rules.skip("masks", "no attention_mask on the labels' side")
    else:
        if not bool(((mask == 0) | (mask == 1)).all()):
            rules.fail("masks", "attention_mask holds values other than 0 and 1")
        if labels.shape == mask.shape and bool((labels[mask == 0] != IGNORE_INDEX).any()):
            rules.fail("masks", "labels count padding: they are not -100 where attention_mask is 0")
        rules.passes("masks")
    rules.details["batch"] = batch
    rules.details["keys"] = {key: tuple(value.shape) for key, value in batch.items()}
    return rules.report()


def _subject(collator: object) -> str:
    return getattr(collator, "__qualname__", None) or type(collator).__qualname__


def _batch(
    rules: RuleRunner,
    collator: Callable[[Sequence[Any]], Mapping[str, Any]],
    samples: list[Any],
    check: str,
) -> dict[str, torch.Tensor]:
    result = collator(samples)
    if not isinstance(result, Mapping):
        rules.fail(check, f"the collator returned a {type(result).__qualname__}, not a mapping")
    if "labels" not in result:
        rules.fail(check, f"the batch has no 'labels' (keys: {', '.join(map(str, result))})")
    batch: dict[str, torch.Tensor] = {}
    for key, value in result.items():
        if not isinstance(value, torch.Tensor):
            rules.fail(check, f"{key!r} is a {type(value).__qualname__}, not a tensor")
        if value.ndim == 0 or value.shape[0] != len(samples):
            rules.fail(
                check,
                f"{key!r} has shape {tuple(value.shape)}; its first dimension must be the "
                f"{len(samples)} samples",
            )
        batch[str(key)] = value
    return batch


def same_samples(left: Any, right: Any) -> bool:
    """Whether two samples (tensors, arrays, mappings, sequences, plain values) are equal."""
    if isinstance(left, torch.Tensor) and isinstance(right, torch.Tensor):
        return left.shape == right.shape and bool(torch.equal(left, right))
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(same_samples(left[k], right[k]) for k in left)
    if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        return len(left) == len(right) and all(
            same_samples(a, b) for a, b in zip(left, right, strict=True)
        )
    if hasattr(left, "__array__") and hasattr(right, "__array__"):  # numpy arrays, PIL images
        import numpy

        return bool(numpy.array_equal(numpy.asarray(left), numpy.asarray(right)))
    return bool(left == right)
