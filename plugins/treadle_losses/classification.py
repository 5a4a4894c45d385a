"""Single-label classification loss: cross-entropy with class weights and label smoothing."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from treadle.losses import num_items_of, reduce_loss
from treadle_losses.shapes import is_floating, is_integer, shape_error

__all__ = [
    "ClassificationLoss",
    "as_class_weights",
    "assert_class_ids_async",
    "check_class_ids",
    "summed_cross_entropy",
]

_EXPECTED = "logits (batch, num_classes) float and labels (batch,) integer class ids"


class ClassificationLoss:
    """Cross-entropy for one label per sample.

    ``class_weights`` (from the constructor, or per call from the inputs, which win) weight
    each sample by its class, and the mean is then taken over the weights, as
    ``F.cross_entropy(weight=...)`` does; ``count_items`` then returns that weight sum so
    accumulation stays exact. Labels equal to ``ignore_index`` are skipped. Multi-label
    (``(batch, num_classes)``) labels and class ids outside ``[0, num_classes)`` are refused
    with the offending values.

    :param class_weights: ``num_classes`` non-negative weights, or None.
    :param label_smoothing: in ``[0, 1)``, as ``F.cross_entropy``'s.
    :param ignore_index: label value that never counts.
    """

    def __init__(
        self,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
    ) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            msg = f"ClassificationLoss: label_smoothing must be in [0, 1): {label_smoothing}"
            raise ValueError(msg)
        self.class_weights = as_class_weights(class_weights, "ClassificationLoss")
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index

    def __repr__(self) -> str:
        return (
            f"ClassificationLoss(class_weights={self.class_weights}, "
            f"label_smoothing={self.label_smoothing}, ignore_index={self.ignore_index})"
        )

    def validate_inputs(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Raise ``ValueError`` unless logits are ``(batch, num_classes)`` float and labels
        ``(batch,)`` integer; multi-label labels are named as such, with their values."""
        problem = None
        if logits.ndim != 2:
            problem = f"logits have {logits.ndim} dimensions, not 2"
        elif labels.ndim == 2 and labels.shape == logits.shape:
            problem = _multi_label_problem(labels)
        elif labels.ndim != 1:
            problem = f"labels have {labels.ndim} dimensions, not 1"
        elif logits.shape[0] != labels.shape[0]:
            problem = "batch sizes of logits and labels differ"
        elif not is_floating(logits):
            problem = "logits must be a floating-point tensor"
        elif not is_integer(labels):
            problem = "labels must hold integer class ids (torch.long), one per sample"
        if problem is not None:
            raise shape_error("ClassificationLoss", _EXPECTED, logits, labels, problem)

    def compute_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, inputs: Mapping[str, Any] | None = None
    ) -> torch.Tensor:
        """The (weighted) cross-entropy summed over counted samples, divided by
        ``num_items_in_batch`` when given, else by the counted weight (a mean).

        Checked at no cost to a valid batch: the ranks here; dtypes, batch sizes and class ids by
        the cross-entropy kernel itself (on the CPU), whose error is then replaced by one naming
        the shapes, dtypes or the offending ids with their positions. On an accelerator the
        class ids are checked by an asynchronous device assertion with the same message.

        :param logits: ``(batch, num_classes)``, float.
        :param labels: ``(batch,)``, long class ids (``ignore_index`` skips a sample).
        :param inputs: a :class:`~treadle.losses.LossInputs`: ``class_weights``,
            ``num_items_in_batch``.
        :raises ValueError: shapes or dtypes don't fit, a class id is out of range, or no
            sample counts (on an accelerator a batch with no counted sample gives NaN instead
            of a host sync per batch; the Trainer skips that step and reports it).
        """
        if logits.ndim != 2 or labels.ndim != 1:
            self.validate_inputs(logits, labels)  # raises, naming multi-label labels
        on_cpu = labels.is_cpu
        if not on_cpu:
            assert_class_ids_async(labels, logits.shape[1], self.ignore_index, "ClassificationLoss")
        if logits.dtype is not torch.float32:
            if not logits.dtype.is_floating_point:
                self.validate_inputs(logits, labels)  # raises, naming the dtype
            logits = logits.float()
        given = inputs.get("class_weights") if inputs else None
        try:
            if given is None and self.class_weights is None and num_items_of(inputs) is None:
                # the common case is one kernel: F.cross_entropy's own mean over counted
                # samples, exactly what a hand-written loop computes
                loss = F.cross_entropy(
                    logits,
                    labels,
                    ignore_index=self.ignore_index,
                    label_smoothing=self.label_smoothing,
                )
                if on_cpu and math.isnan(loss.item()):
                    self._refuse_all_ignored(labels)
                return loss
            weights = self.weights_for(inputs, logits)
            loss_sum, counted = summed_cross_entropy(
                logits, labels, weights, self.label_smoothing, self.ignore_index
            )
        except (IndexError, RuntimeError, ValueError) as error:
            if isinstance(error, ValueError) and str(error).startswith("ClassificationLoss"):
                raise  # already ours (the class weights)
            # the kernel refused the batch: say what is wrong with it (each raises), else
            # the error was about something else and goes on as it is
            self.validate_inputs(logits, labels)
            check_class_ids(labels, logits.shape[1], self.ignore_index, "ClassificationLoss")
            raise
        return reduce_loss(loss_sum, counted, inputs, strategy="ClassificationLoss")

    def _refuse_all_ignored(self, labels: torch.Tensor) -> None:
        """A NaN mean is 0/0 when every label is ``ignore_index``: refuse it as
        :func:`~treadle.losses.reduce_loss` does (NaN logits pass: the Trainer skips them)."""
        if bool((labels == self.ignore_index).all()):
            reduce_loss(torch.zeros(()), 0, None, strategy="ClassificationLoss")

    def count_items(
        self, labels: torch.Tensor, inputs: Mapping[str, Any] | None = None
    ) -> int | float:
        """Samples that count (labels other than ``ignore_index``); with class weights, the sum
        of their weights (a float), the denominator of a weighted mean."""
        counts = labels != self.ignore_index
        weights = self.weights_for(inputs, None)
        if weights is None:
            return int(counts.sum())
        safe = labels.masked_fill(~counts, 0)
        return float((weights.to(labels.device)[safe] * counts).sum())

    def weights_for(
        self, inputs: Mapping[str, Any] | None, logits: torch.Tensor | None
    ) -> torch.Tensor | None:
        """The class weights in force: the inputs' ``class_weights``, else the constructor's;
        checked against the logits' class count and moved to their device when given."""
        given = inputs.get("class_weights") if inputs else None
        weights = (
            self.class_weights if given is None else as_class_weights(given, "ClassificationLoss")
        )
        if weights is None or logits is None:
            return weights
        if weights.shape[0] != logits.shape[1]:
            msg = (
                f"ClassificationLoss: class_weights has {weights.shape[0]} weights for "
                f"{logits.shape[1]} classes (logits {tuple(logits.shape)}); give one per class."
            )
            raise ValueError(msg)
        return weights.to(logits.device)


def as_class_weights(
    weights: Sequence[float] | torch.Tensor | None, strategy: str
) -> torch.Tensor | None:
    """Class weights as a 1-D float32 tensor, checked: finite and non-negative."""
    if weights is None:
        return None
    tensor = torch.as_tensor(weights, dtype=torch.float32)
    if tensor.ndim != 1 or tensor.numel() == 0:
        shape = tuple(tensor.shape)
        msg = f"{strategy}: class_weights must be one weight per class, got shape {shape}"
        raise ValueError(msg)
    if not bool(torch.isfinite(tensor).all()) or bool((tensor < 0).any()):
        msg = f"{strategy}: class_weights must be finite and >= 0: {tensor.tolist()}"
        raise ValueError(msg)
    return tensor


def check_class_ids(
    labels: torch.Tensor, num_classes: int, ignore_index: int, strategy: str
) -> bool:
    """Raise ``ValueError`` listing the labels outside ``[0, num_classes)`` (other than
    ``ignore_index``) and where they are.

    :returns: whether every label is a class id (none is ``ignore_index``): then every sample
        counts, which lets the caller skip counting them.
    """
    if labels.numel() == 0:
        return False
    low, high = torch.aminmax(labels)  # one pass: the common, valid case costs one kernel
    if int(low) >= 0 and int(high) < num_classes:
        return True
    bad = ((labels < 0) | (labels >= num_classes)) & (labels != ignore_index)
    if bool(bad.any()):
        positions = bad.nonzero()
        shown = ", ".join(
            f"{tuple(position.tolist()) if position.numel() > 1 else int(position)}: "
            f"{int(labels[tuple(position)])}"
            for position in positions[:5]
        )
        more = f" and {positions.shape[0] - 5} more" if positions.shape[0] > 5 else ""
        msg = (
            f"{strategy}: labels must be class ids in [0, {num_classes}) or {ignore_index} "
            f"(ignored); out of range at (position: value) {shown}{more}."
        )
        raise ValueError(msg)
    return False


def assert_class_ids_async(
    labels: torch.Tensor, num_classes: int, ignore_index: int, strategy: str
) -> None:
    """Check the class ids of ``labels`` on their device without waiting for it: a bad id
    fails the device's next synchronization with this message (the cross-entropy kernel would
    fail there anyway, with a bare device-side assertion)."""
    is_valid = ((labels >= 0) & (labels < num_classes)) | (labels == ignore_index)
    msg = (
        f"{strategy}: labels must be class ids in [0, {num_classes}) or {ignore_index} "
        f"(ignored); a batch holds one out of range."
    )
    torch._assert_async(is_valid.all(), msg)


def summed_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None,
    label_smoothing: float,
    ignore_index: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cross-entropy summed over samples (or pixels) that count, computed in float32,
    and the count: the number of them, or their summed class weight."""
    counts = labels != ignore_index
    loss_sum = F.cross_entropy(
        logits.float(),
        labels,
        weight=weights,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        reduction="sum",
    )
    if weights is None:
        return loss_sum, counts.sum()
    return loss_sum, (weights[labels.masked_fill(~counts, 0)] * counts).sum()


def _multi_label_problem(labels: torch.Tensor) -> str:
    rows = []
    for index, row in enumerate(labels[:3]):
        classes = row.nonzero().flatten().tolist()
        rows.append(f"sample {index}: classes {classes}")
    return (
        "labels look multi-label or one-hot, one row per sample (" + "; ".join(rows) + "); "
        "ClassificationLoss takes one class id per sample: use labels.argmax(-1) for one-hot "
        "labels, or the 'vision' loss with task='multilabel' for several labels per sample"
    )
