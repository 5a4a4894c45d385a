"""Conformance checks for streaming validation metrics, treadle's and any plugin's.

Call :func:`check_metric` with the registered class (or any factory of fresh instances) and the
tensor layout it takes::

    from treadle.testing.metrics import check_metric
    from acme_treadle.metrics import MacroF1


    def test_macro_f1_conforms():
        report = check_metric(MacroF1, "classification")
        assert report.details["values"].keys() == {"macro_f1"}

The batches are those of :func:`treadle.testing.losses.make_loss_batch` (``classification``,
``language_modeling``, ``multilabel``, ``segmentation``), fed as the validation loop feeds
them: ``update(logits, labels, inputs)`` under ``torch.inference_mode()``, ``inputs`` holding
``logits``, ``pad_token_id`` and, for tokens, ``attention_mask``. The rules:

``built per validation``
    ``factory()`` takes no arguments and gives a new object each time (the Trainer makes one
    per validation pass).
``empty validation``
    ``compute()`` before any ``update`` returns a mapping (NaN values allowed), not an error.
``reports floats``
    ``compute()`` returns a non-empty mapping of names to finite numbers.
``no val_ prefix``
    Names come without the ``val_`` prefix: the Trainer adds it.
``streams``
    One batch of 32 and the same rows in micro-batches of 8 (and of 8, 8, 16) give the same
    values (relative tolerance 1e-5): sums, not means of batch means.
``keeps sums only``
    The tensors and lists the metric holds do not grow with the number of batches: never the
    logits of the whole validation.
``shards add up``
    Two instances fed one half each, their tensor state added as a distributed run sums it
    over ranks, give the values of one instance fed everything; state kept in Python floats
    or as running means is not synchronized and fails here.
``ignores masked labels``
    (when ``ignore_index`` is given) rows whose labels are all ``ignore_index`` (with an
    ``attention_mask`` of 0 for tokens) change nothing: padding never counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from treadle.engine.distributed.metric_sync import add_metric_state
from treadle.protocols import StreamingMetric
from treadle.testing.losses import LOSS_LAYOUTS, LossBatch, make_loss_batch
from treadle.testing.report import ConformanceReport, Rule, RuleRunner

__all__ = ["METRIC_LAYOUTS", "RULES", "check_metric", "metric_inputs"]

#: The layouts :func:`check_metric` can feed a metric with: those of the loss kit.
METRIC_LAYOUTS = LOSS_LAYOUTS

#: The rules :func:`check_metric` enforces, in order.
RULES = (
    Rule("built per validation", "factory() takes no arguments and gives a fresh object"),
    Rule("empty validation", "compute() before any update returns a mapping, not an error"),
    Rule("reports floats", "compute() returns a non-empty mapping of names to finite numbers"),
    Rule("no val_ prefix", "names come without 'val_': the Trainer adds it"),
    Rule("streams", "one batch and the same rows in micro-batches give the same values"),
    Rule("keeps sums only", "the metric's state does not grow with the number of batches"),
    Rule(
        "shards add up",
        "two instances' tensor state, summed as ranks are, gives the values of one instance "
        "fed everything",
    ),
    Rule("ignores masked labels", "rows labelled ignore_index change nothing"),
)

_RTOL = 1e-5
_ATOL = 1e-7


def metric_inputs(batch: LossBatch) -> dict[str, Any]:
    """The ``inputs`` the validation loop gives ``update`` for ``batch``."""
    inputs: dict[str, Any] = {"pad_token_id": batch.inputs.get("pad_token_id", 0)}
    if "attention_mask" in batch.inputs:
        inputs["attention_mask"] = batch.inputs["attention_mask"]
    inputs["logits"] = batch.logits
    return inputs


def check_metric(
    metric_factory: Callable[[], StreamingMetric],
    layout: str,
    *,
    num_classes: int = 5,
    ignore_index: int | None = -100,
    seed: int = 0,
) -> ConformanceReport:
    """Run the rules above on fresh metrics from ``metric_factory``.

    :param layout: one of :data:`METRIC_LAYOUTS`.
    :param num_classes: classes (or vocabulary size for ``language_modeling``).
    :param ignore_index: the label value the metric skips, or None (the masked-labels rule is
        then skipped).
    :returns: the report; ``details``: ``layout`` and ``values``, what ``compute()`` gave on
        the whole batch.
    :raises ConformanceError: a rule is broken; the message names it.
    """
    if layout not in METRIC_LAYOUTS:
        msg = f"Unknown metric layout {layout!r}; layouts: {', '.join(METRIC_LAYOUTS)}"
        raise ValueError(msg)
    subject = getattr(metric_factory, "__qualname__", None) or type(metric_factory).__qualname__
    rules = RuleRunner("metrics", subject, RULES, f"{layout} layout")

    def batch(size: int = 32, batch_seed: int = seed) -> LossBatch:
        return make_loss_batch(
            layout,  # type: ignore[arg-type]
            size,
            num_classes=num_classes,
            ignore_index=ignore_index,
            seed=batch_seed,
        )

    first, second = _build(rules, metric_factory), _build(rules, metric_factory)
    if first is second:
        rules.fail(
            "built per validation",
            "factory() returned the same object twice; register the class, which the Trainer "
            "instantiates for each validation",
        )
    rules.passes("built per validation")

    try:
        empty = first.compute()
    except Exception as err:
        raise rules.error(
            "empty validation",
            f"compute() with no batch raised {type(err).__name__}: {err}; return NaN values",
        ) from err
    if not isinstance(empty, Mapping):
        rules.fail("empty validation", f"compute() with no batch returned {empty!r}")
    rules.passes("empty validation")

    whole = batch()
    values = _values(rules, metric_factory, [whole], "reports floats")
    for name, value in values.items():
        if not math.isfinite(value):
            rules.fail("reports floats", f"{name!r} is {value} on a batch where everything counts")
    rules.passes("reports floats")

    prefixed = sorted(name for name in values if name.startswith("val_"))
    if prefixed:
        rules.fail(
            "no val_ prefix",
            f"compute() returned {', '.join(prefixed)}; return names without 'val_', which the "
            f"Trainer adds",
        )
    rules.passes("no val_ prefix")

    for sizes in ((8, 8, 8, 8), (8, 8, 16)):
        parts = _split(whole, sizes)
        split = _values(rules, metric_factory, parts, "streams")
        _same(rules, "streams", split, values, f"micro-batches of {', '.join(map(str, sizes))}")
    rules.passes("streams")

    grown = _state_size(rules, metric_factory, [whole])
    for index in range(1, 8):
        grown_after = _state_size(
            rules, metric_factory, [batch(batch_seed=seed + step) for step in range(index + 1)]
        )
        if grown_after != grown:
            rules.fail(
                "keeps sums only",
                f"its state holds {grown} values after one batch and {grown_after} after "
                f"{index + 1}; keep running sums, never the batches' logits or labels",
            )
    rules.passes("keeps sums only")

    halves = _split(whole, (16, 16))
    left, right = _fed(rules, metric_factory, halves[:1]), _fed(rules, metric_factory, halves[1:])
    add_metric_state(left, right)
    summed = _compute(rules, left, "shards add up")
    _same(
        rules,
        "shards add up",
        summed,
        values,
        "two halves' state added as ranks are summed (keep the sums in tensor attributes, "
        "which distributed runs add up over ranks; Python numbers stay per rank)",
    )
    rules.passes("shards add up")

    if ignore_index is None:
        rules.skip("ignores masked labels", "no ignore_index")
    else:
        padded = _with_masked_rows(whole, ignore_index)
        masked = _values(rules, metric_factory, [padded], "ignores masked labels")
        _same(
            rules,
            "ignores masked labels",
            masked,
            values,
            f"8 more rows labelled {ignore_index} (padding must not count)",
        )
        rules.passes("ignores masked labels")

    rules.details.update(layout=layout, values=values)
    return rules.report()


def _build(rules: RuleRunner, factory: Callable[[], StreamingMetric]) -> StreamingMetric:
    try:
        metric = factory()
    except Exception as err:
        raise rules.error(
            "built per validation",
            f"factory() raised {type(err).__name__}: {err}; the Trainer builds metrics with "
            f"no arguments (give options defaults)",
        ) from err
    if not callable(getattr(metric, "update", None)) or not callable(
        getattr(metric, "compute", None)
    ):
        rules.fail("built per validation", f"factory() gave {metric!r}, without update/compute")
    return metric


def _fed(
    rules: RuleRunner, factory: Callable[[], StreamingMetric], batches: list[LossBatch]
) -> StreamingMetric:
    metric = factory()
    with torch.inference_mode():
        for part in batches:
            try:
                metric.update(part.logits, part.labels, metric_inputs(part))
            except Exception as err:
                raise rules.error(
                    "reports floats",
                    f"update with logits {tuple(part.logits.shape)} and labels "
                    f"{tuple(part.labels.shape)} raised {type(err).__name__}: {err}",
                ) from err
    return metric


def _compute(rules: RuleRunner, metric: StreamingMetric, rule: str) -> dict[str, float]:
    result = metric.compute()
    if not isinstance(result, Mapping) or not result:
        rules.fail(rule, f"compute() returned {result!r}, not a non-empty mapping")
    values: dict[str, float] = {}
    for name, value in result.items():
        try:
            values[str(name)] = float(value)
        except (TypeError, ValueError) as err:
            raise rules.error(rule, f"{name!r} is {value!r}, not a number") from err
    return values


def _values(
    rules: RuleRunner,
    factory: Callable[[], StreamingMetric],
    batches: list[LossBatch],
    rule: str,
) -> dict[str, float]:
    return _compute(rules, _fed(rules, factory, batches), rule)


def _same(
    rules: RuleRunner, rule: str, got: dict[str, float], expected: dict[str, float], how: str
) -> None:
    if got.keys() != expected.keys():
        rules.fail(rule, f"{how} gave names {sorted(got)}, one batch {sorted(expected)}")
    for name, value in expected.items():
        if not math.isclose(got[name], value, rel_tol=_RTOL, abs_tol=_ATOL):
            rules.fail(rule, f"{how} gave {name}={got[name]!r}, one batch of 32 {value!r}")


def _split(batch: LossBatch, sizes: tuple[int, ...]) -> list[LossBatch]:
    parts, start = [], 0
    for size in sizes:
        parts.append(batch.rows(start, start + size))
        start += size
    return parts


def _with_masked_rows(batch: LossBatch, ignore_index: int) -> LossBatch:
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(batch.logits[:8].shape, generator=generator)
    labels = torch.full_like(batch.labels[:8], ignore_index)
    inputs = dict(batch.inputs)
    if "attention_mask" in inputs:
        mask = inputs["attention_mask"]
        inputs["attention_mask"] = torch.cat([mask, torch.zeros_like(mask[:8])])
    logits = torch.cat([batch.logits, noise])
    return LossBatch(logits, torch.cat([batch.labels, labels]), inputs)


def _state_size(
    rules: RuleRunner, factory: Callable[[], StreamingMetric], batches: list[LossBatch]
) -> int:
    """Tensor elements and container items the metric holds, directly or one level down."""
    metric = _fed(rules, factory, batches)
    total = 0
    seen: set[int] = set()

    def size_of(value: Any, depth: int) -> int:
        if id(value) in seen or depth > 2:
            return 0
        seen.add(id(value))
        if isinstance(value, torch.Tensor):
            return value.numel()
        if isinstance(value, list | tuple | set | dict):
            items = value.values() if isinstance(value, dict) else value
            return len(value) + sum(size_of(item, depth + 1) for item in items)
        attributes = getattr(value, "__dict__", None)
        if isinstance(attributes, dict) and not callable(value):
            return sum(size_of(item, depth + 1) for item in attributes.values())
        return 0

    for value in vars(metric).values() if hasattr(metric, "__dict__") else ():
        total += size_of(value, 0)
    return total
