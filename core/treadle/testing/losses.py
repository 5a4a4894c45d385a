"""Conformance checks for loss strategies, for treadle's built-ins and for any plugin's own.

Call :func:`check_loss_strategy` from a test with a factory of fresh strategy instances and
the layout of tensors the strategy takes::

    from treadle.testing.losses import check_loss_strategy
    from acme_treadle.focal import FocalLoss


    def test_focal_loss_conforms():
        report = check_loss_strategy(lambda: FocalLoss(gamma=2.0), "classification")
        assert report.details["all_masked"] == "error"  # optional: pin down your choice

It raises :class:`~treadle.testing.report.ConformanceError` (an ``AssertionError``, so pytest
reports it as a failure) naming the rule and what went wrong, or returns a
:class:`~treadle.testing.report.ConformanceReport` whose ``details`` hold ``layout``,
``all_masked``, ``accumulation`` and ``max_gradient_difference``. The rules:

``valid batch``
    A 0-d, floating, finite loss whose gradient reaches the logits, finite and not all zero.
``shape and dtype errors``
    Mismatched batch sizes, logits of the wrong rank and wrong dtypes raise ``ValueError``
    from both ``validate_inputs`` and ``compute_loss`` (not a ``RuntimeError`` from deep inside
    torch), and the message names the offending shape or dtype.
``all-masked batch``
    (layouts with an ``ignore_index``) A batch where nothing counts gives either a
    ``ValueError`` or a finite value, never NaN; ``all_masked="error"`` or ``"finite"``
    insists on one. With ``num_items_in_batch`` > 0 (the rest of an accumulation window
    counts) it must give a finite value: an all-padding micro-batch must not stop training.
``sum / num_items``
    (strategies with ``count_items``) ``loss(num_items_in_batch=n)`` equals the mean loss
    times ``count_items / n``: the loss is a sum divided by ``num_items_in_batch``.
``accumulation invariance``
    One batch of 32 against 4 micro-batches of 8, each padded only to its own longest
    sequence (ragged padding) or holding a different number of ignored labels: the counts add
    up, the micro-batch losses add up to the batch loss, and the gradients on the logits equal
    the batch's within ``rtol`` (1e-5) relative to the largest gradient. With ``count_items``
    each micro-batch gets ``num_items_in_batch`` = the window's count, as the Trainer does;
    without it the Trainer's fallback is checked (each micro-batch mean weighted by its share
    of samples), which is exact only when every sample counts equally.

Layouts (:data:`LOSS_LAYOUTS`): ``classification`` (logits ``(B, C)``, labels ``(B,)``),
``language_modeling`` (``(B, L, V)`` against ``(B, L)`` token ids with -100 and
``attention_mask`` 0 on padding, ``pad_token_id`` 0), ``multilabel`` (``(B, C)`` against 0/1
``(B, C)``), ``segmentation`` (``(B, C, H, W)`` against ``(B, H, W)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import attrs
import torch

from treadle.protocols import LossStrategy
from treadle.testing.report import ConformanceError, ConformanceReport, Rule, RuleRunner

__all__ = [
    "LOSS_LAYOUTS",
    "RULES",
    "ConformanceError",
    "LossBatch",
    "check_loss_strategy",
    "make_loss_batch",
]

#: The tensor layouts :func:`check_loss_strategy` can drive a strategy with.
LOSS_LAYOUTS = ("classification", "language_modeling", "multilabel", "segmentation")

Layout = Literal["classification", "language_modeling", "multilabel", "segmentation"]
AllMasked = Literal["error", "finite", "either"]

#: Batch size and micro-batch size of the accumulation check.
BATCH_SIZE = 32
MICRO_BATCH_SIZE = 8


#: The rules :func:`check_loss_strategy` enforces, in order.
RULES = (
    Rule(
        "valid batch",
        "a finite 0-d float loss whose gradient reaches the logits, finite and not all zero",
    ),
    Rule(
        "shape and dtype errors",
        "mismatched batch sizes, wrong ranks and dtypes raise ValueError naming the shape or "
        "dtype, from validate_inputs and compute_loss",
    ),
    Rule(
        "all-masked batch",
        "a batch where nothing counts gives ValueError or a finite loss, never NaN; finite "
        "when the rest of the accumulation window counts",
    ),
    Rule(
        "sum / num_items",
        "with count_items, the loss given num_items_in_batch is the sum over the batch "
        "divided by it",
    ),
    Rule(
        "accumulation invariance",
        "4 micro-batches of 8 give the losses and logit gradients of one batch of 32",
    ),
)


@attrs.frozen
class LossBatch:
    """Logits, labels and loss inputs of one batch for a layout."""

    logits: torch.Tensor
    labels: torch.Tensor
    inputs: dict[str, Any]

    def rows(self, start: int, stop: int) -> LossBatch:
        """Rows ``start:stop``, padded only to their own longest sequence (token layouts)."""
        logits = self.logits[start:stop]
        labels = self.labels[start:stop]
        inputs = {
            key: value[start:stop] if isinstance(value, torch.Tensor) else value
            for key, value in self.inputs.items()
        }
        mask = inputs.get("attention_mask")
        if mask is not None:
            length = max(int(mask.sum(dim=1).max()), 2)
            logits, labels = logits[:, :length], labels[:, :length]
            inputs["attention_mask"] = mask[:, :length]
        return LossBatch(logits=logits, labels=labels, inputs=inputs)


def make_loss_batch(
    layout: Layout,
    batch_size: int = BATCH_SIZE,
    *,
    num_classes: int = 5,
    seq_len: int = 12,
    image_size: tuple[int, int] = (4, 5),
    ignore_index: int | None = -100,
    seed: int = 0,
) -> LossBatch:
    """A random batch in ``layout``, with ragged padding (token layouts) or a varying number
    of ignored labels per 8 rows (other layouts, when ``ignore_index`` is given).

    Logits are float32 leaves without ``requires_grad``; labels are long (0/1 float for
    ``multilabel``).
    """
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    def randint(high: int, *shape: int) -> torch.Tensor:
        return torch.randint(0, high, shape, generator=generator)

    ignored = _ignored_rows(batch_size, generator) if ignore_index is not None else None
    if layout == "classification":
        labels = randint(num_classes, batch_size)
        if ignored is not None and ignore_index is not None:
            labels = labels.masked_fill(ignored, ignore_index)
        return LossBatch(randn(batch_size, num_classes), labels, {})
    if layout == "multilabel":
        targets = randint(2, batch_size, num_classes).float()
        if ignored is not None and ignore_index is not None:
            targets[ignored, 0] = float(ignore_index)
        return LossBatch(randn(batch_size, num_classes), targets, {})
    if layout == "segmentation":
        height, width = image_size
        masks = randint(num_classes, batch_size, height, width)
        if ignore_index is not None:
            # each image keeps a ragged top-left rectangle
            for row in range(batch_size):
                keep_h = 1 + int(randint(height, 1))
                keep_w = 1 + int(randint(width, 1))
                masks[row, keep_h:, :] = ignore_index
                masks[row, :, keep_w:] = ignore_index
        return LossBatch(randn(batch_size, num_classes, height, width), masks, {})
    if layout == "language_modeling":
        vocab_size = num_classes
        lengths = 2 + randint(seq_len - 1, batch_size)
        lengths[0] = seq_len
        positions = torch.arange(seq_len)[None, :]
        mask = (positions < lengths[:, None]).long()
        # token 0 is padding: real tokens are 1..vocab_size-1
        tokens = 1 + randint(vocab_size - 1, batch_size, seq_len)
        labels = tokens.masked_fill(mask == 0, 0 if ignore_index is None else ignore_index)
        inputs: dict[str, Any] = {"attention_mask": mask, "pad_token_id": 0}
        return LossBatch(randn(batch_size, seq_len, vocab_size), labels, inputs)
    msg = f"Unknown loss layout {layout!r}; layouts: {', '.join(LOSS_LAYOUTS)}"
    raise ValueError(msg)


def _ignored_rows(batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """A different number of ignored rows in each block of 8 (0, 1, 2, ...), never all."""
    ignored = torch.zeros(batch_size, dtype=torch.bool)
    for block, start in enumerate(range(0, batch_size, MICRO_BATCH_SIZE)):
        size = min(MICRO_BATCH_SIZE, batch_size - start)
        count = min(block, size - 1)
        chosen = torch.randperm(size, generator=generator)[:count]
        ignored[start + chosen] = True
    return ignored


def check_loss_strategy(
    strategy_factory: Callable[[], LossStrategy],
    layout: Layout,
    *,
    num_classes: int = 5,
    ignore_index: int | None = -100,
    all_masked: AllMasked = "either",
    rtol: float = 1e-5,
    seed: int = 0,
) -> ConformanceReport:
    """Run every loss rule (see the module docstring) on fresh strategies from
    ``strategy_factory``.

    :param layout: one of :data:`LOSS_LAYOUTS`.
    :param num_classes: classes (or vocabulary size for ``language_modeling``).
    :param ignore_index: the label value the strategy skips, or None when it skips none (the
        all-masked check is then not applicable, and padding is not marked in the labels).
    :param all_masked: ``error`` or ``finite`` to insist on one behaviour for an all-masked
        batch, ``either`` to accept both.
    :param rtol: gradient tolerance of the accumulation check, relative to the largest
        gradient.
    :returns: the report; ``details``: ``layout``, ``all_masked`` (``error``, ``finite`` or
        ``not applicable``), ``accumulation`` (``num_items_in_batch`` when the strategy counts
        items, else ``sample-weighted``, the Trainer's fallback) and
        ``max_gradient_difference`` (relative to the largest gradient).
    :raises ConformanceError: a rule is broken; the message names it.
    """
    if layout not in LOSS_LAYOUTS:
        msg = f"Unknown loss layout {layout!r}; layouts: {', '.join(LOSS_LAYOUTS)}"
        raise ValueError(msg)
    checker = _LossChecker(strategy_factory, layout, num_classes, ignore_index, seed)
    rules = checker.rules
    checker.check_valid_batch()
    rules.passes("valid batch")
    checker.check_shape_and_dtype_errors()
    rules.passes("shape and dtype errors")
    masked = "not applicable"
    if ignore_index is not None:
        masked = checker.check_all_masked(all_masked)
        rules.passes("all-masked batch")
    else:
        rules.skip("all-masked batch", "no ignore_index")
    if checker.counts_items:
        checker.check_sum_over_num_items()
        rules.passes("sum / num_items")
    else:
        rules.skip("sum / num_items", "no count_items: the Trainer weights means by samples")
    difference = checker.check_accumulation(rtol)
    rules.passes("accumulation invariance")
    rules.details.update(
        layout=layout,
        all_masked=masked,
        accumulation="num_items_in_batch" if checker.counts_items else "sample-weighted",
        max_gradient_difference=difference,
    )
    return rules.report()


class _LossChecker:
    def __init__(
        self,
        strategy_factory: Callable[[], LossStrategy],
        layout: Layout,
        num_classes: int,
        ignore_index: int | None,
        seed: int,
    ) -> None:
        self.strategy_factory = strategy_factory
        self.layout = layout
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.seed = seed
        self.name = type(strategy_factory()).__name__
        self.counts_items = callable(getattr(strategy_factory(), "count_items", None))
        self.rules = RuleRunner("losses", self.name, RULES, f"{layout} layout")

    def batch(self, batch_size: int = BATCH_SIZE) -> LossBatch:
        return make_loss_batch(
            self.layout,
            batch_size,
            num_classes=self.num_classes,
            ignore_index=self.ignore_index,
            seed=self.seed,
        )

    def fail(self, check: str, problem: str) -> ConformanceError:
        return self.rules.error(check, problem)

    def compute(
        self, strategy: LossStrategy, batch: LossBatch, logits: torch.Tensor, **extra: Any
    ) -> torch.Tensor:
        inputs = {**batch.inputs, "logits": logits, "labels": batch.labels, **extra}
        return strategy.compute_loss(logits, batch.labels, inputs)

    def count(self, strategy: LossStrategy, batch: LossBatch) -> float:
        count_items = strategy.count_items  # type: ignore[attr-defined]
        return float(count_items(batch.labels, {**batch.inputs, "logits": batch.logits}))

    # -- checks ------------------------------------------------------------------------------

    def check_valid_batch(self) -> None:
        check = "valid batch"
        batch = self.batch()
        logits = batch.logits.clone().requires_grad_()
        try:
            loss = self.compute(self.strategy_factory(), batch, logits)
        except Exception as err:
            raise self.fail(
                check, f"compute_loss on a valid batch raised {type(err).__name__}: {err}"
            ) from err
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise self.fail(check, f"compute_loss returned {shape}, not a 0-d tensor")
        if not loss.dtype.is_floating_point or not math.isfinite(float(loss.detach())):
            raise self.fail(check, f"the loss is {loss!r}, not a finite float")
        if not loss.requires_grad:
            raise self.fail(check, "no gradient reaches the logits (is the loss detached?)")
        loss.backward()  # type: ignore[no-untyped-call]
        gradient = logits.grad
        if gradient is None:
            raise self.fail(check, "no gradient reaches the logits (is the loss detached?)")
        if not bool(torch.isfinite(gradient).all()) or not bool(gradient.abs().sum() > 0):
            raise self.fail(check, "the logits' gradient is not finite, or all zero")

    def bad_cases(self, batch: LossBatch) -> list[tuple[str, torch.Tensor, torch.Tensor, str]]:
        """(what, logits, labels, text the message must hold)."""
        logits, labels = batch.logits, batch.labels
        fewer = labels[:-1]
        flat = logits.reshape(logits.shape[0], -1)[:, :1].squeeze(1)
        cases = [
            ("labels with one row fewer than the logits", logits, fewer, str(tuple(fewer.shape))),
            ("logits missing their class dimension", flat, labels, str(tuple(flat.shape))),
            ("integer logits", logits.long(), labels, str(logits.long().dtype)),
        ]
        if self.layout == "multilabel":
            wider = torch.cat([labels, labels[:, :1]], dim=1)
            cases.append(
                ("labels with more columns than classes", logits, wider, str(tuple(wider.shape)))
            )
        else:
            cases.append(("float labels", logits, labels.float(), str(labels.float().dtype)))
        return cases

    def check_shape_and_dtype_errors(self) -> None:
        check = "shape and dtype errors"
        batch = self.batch()
        for what, logits, labels, named in self.bad_cases(batch):
            for method in ("validate_inputs", "compute_loss"):
                strategy = self.strategy_factory()
                try:
                    if method == "validate_inputs":
                        strategy.validate_inputs(logits, labels)
                    else:
                        strategy.compute_loss(logits, labels, dict(batch.inputs))
                except ValueError as err:
                    message = str(err)
                    short = named.removeprefix("torch.")
                    if named not in message and short not in message:
                        raise self.fail(
                            check,
                            f"{method} with {what} raised ValueError({message!r}), which does "
                            f"not name {named}",
                        ) from err
                    continue
                except Exception as err:
                    raise self.fail(
                        check,
                        f"{method} with {what} raised {type(err).__name__}({err}), not ValueError",
                    ) from err
                raise self.fail(check, f"{method} accepted {what}")

    def masked_batch(self) -> LossBatch:
        batch = self.batch(MICRO_BATCH_SIZE)
        assert self.ignore_index is not None
        labels = torch.full_like(batch.labels, self.ignore_index)
        inputs = dict(batch.inputs)
        if "attention_mask" in inputs:
            inputs["attention_mask"] = torch.zeros_like(inputs["attention_mask"])
        return LossBatch(batch.logits, labels, inputs)

    def check_all_masked(self, expected: AllMasked) -> str:
        check = "all-masked batch"
        batch = self.masked_batch()
        logits = batch.logits.clone().requires_grad_()
        try:
            loss = self.compute(self.strategy_factory(), batch, logits)
        except ValueError:
            found = "error"
        else:
            if not math.isfinite(float(loss.detach())):
                raise self.fail(
                    check,
                    f"the loss is {float(loss.detach())}; give a ValueError or a finite value",
                )
            found = "finite"
        if expected != "either" and found != expected:
            raise self.fail(check, f"expected {expected}, got {found}")
        if self.counts_items:
            try:
                loss = self.compute(self.strategy_factory(), batch, logits, num_items_in_batch=10)
            except ValueError as err:
                raise self.fail(
                    check,
                    f"with num_items_in_batch=10 (other micro-batches of the step count) it "
                    f"raised ValueError({err}); an all-padding micro-batch must add 0",
                ) from err
            if not math.isfinite(float(loss.detach())):
                raise self.fail(
                    check, f"with num_items_in_batch=10 the loss is {float(loss.detach())}"
                )
        return found

    def check_sum_over_num_items(self) -> None:
        check = "sum / num_items"
        batch = self.batch()
        strategy = self.strategy_factory()
        counted = self.count(strategy, batch)
        mean = float(self.compute(strategy, batch, batch.logits))
        for num_items in (counted, 2 * counted):
            value = float(self.compute(strategy, batch, batch.logits, num_items_in_batch=num_items))
            expected = mean * counted / num_items
            if not math.isclose(value, expected, rel_tol=1e-5, abs_tol=1e-7):
                raise self.fail(
                    check,
                    f"with num_items_in_batch={num_items} the loss is {value}, expected the "
                    f"mean {mean} x count_items {counted} / {num_items} = {expected}",
                )

    def check_accumulation(self, rtol: float) -> float:
        check = "accumulation invariance"
        batch = self.batch()
        strategy = self.strategy_factory()
        micro = [
            batch.rows(start, start + MICRO_BATCH_SIZE)
            for start in range(0, BATCH_SIZE, MICRO_BATCH_SIZE)
        ]
        whole_logits = batch.logits.clone().requires_grad_()
        micro_logits = [part.logits.clone().requires_grad_() for part in micro]
        if self.counts_items:
            counts = [self.count(strategy, part) for part in micro]
            window = sum(counts)
            whole_count = self.count(strategy, batch)
            if not math.isclose(whole_count, window, rel_tol=1e-6):
                raise self.fail(
                    check,
                    f"count_items of the batch is {whole_count}, its micro-batches' add up to "
                    f"{window}",
                )
            whole = self.compute(strategy, batch, whole_logits, num_items_in_batch=whole_count)
            losses = [
                self.compute(strategy, part, logits, num_items_in_batch=window)
                for part, logits in zip(micro, micro_logits, strict=True)
            ]
        else:
            whole = self.compute(strategy, batch, whole_logits)
            losses = [
                self.compute(strategy, part, logits) * (part.labels.shape[0] / BATCH_SIZE)
                for part, logits in zip(micro, micro_logits, strict=True)
            ]
        whole.backward()  # type: ignore[no-untyped-call]
        total = torch.stack(losses).sum()
        total.backward()  # type: ignore[no-untyped-call]
        hint = (
            ""
            if self.counts_items
            else " The Trainer weights micro-batch means by samples here; add "
            "count_items(labels, inputs) and honour num_items_in_batch to make this exact."
        )
        if not math.isclose(
            float(total.detach()), float(whole.detach()), rel_tol=1e-5, abs_tol=1e-7
        ):
            raise self.fail(
                check,
                f"the 4 micro-batch losses add up to {float(total.detach())}, the batch loss is "
                f"{float(whole.detach())}.{hint}",
            )
        assert whole_logits.grad is not None
        expected = whole_logits.grad
        assembled = torch.zeros_like(expected)
        for index, logits in enumerate(micro_logits):
            assert logits.grad is not None
            rows = slice(index * MICRO_BATCH_SIZE, (index + 1) * MICRO_BATCH_SIZE)
            region = assembled[rows]
            region[tuple(slice(0, size) for size in logits.grad.shape)] = logits.grad
        scale = float(expected.abs().max())
        difference = float((assembled - expected).abs().max()) / (scale or 1.0)
        if difference > rtol:
            raise self.fail(
                check,
                f"micro-batch gradients differ from the batch's by {difference:.3g} of the "
                f"largest gradient (tolerance {rtol:g}).{hint}",
            )
        return difference
