"""Vision loss: image classification, multi-label classification and semantic segmentation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from treadle.losses import reduce_loss
from treadle_losses.classification import (
    ClassificationLoss,
    check_class_ids,
    summed_cross_entropy,
)
from treadle_losses.shapes import is_floating, is_integer, shape_error

__all__ = ["SUPPORTED_TASKS", "VisionLoss"]

#: The tasks VisionLoss serves, by name.
SUPPORTED_TASKS = ("classification", "multilabel", "segmentation")

# TaskSpec task types name the same tasks
_ALIASES = {
    "image_classification": "classification",
    "multilabel_classification": "multilabel",
    "semantic_segmentation": "segmentation",
}

_EXPECTED = {
    "classification": "logits (batch, num_classes) float and labels (batch,) integer",
    "multilabel": "logits (batch, num_classes) float and labels (batch, num_classes) of 0/1",
    "segmentation": (
        "logits (batch, num_classes, height, width) float and labels (batch, height, width) integer"
    ),
}


class VisionLoss:
    """The loss of a vision task.

    - ``classification``: cross-entropy of ``(batch, num_classes)`` logits against class ids
      (as :class:`~treadle_losses.classification.ClassificationLoss`).
    - ``multilabel``: binary cross-entropy with logits of ``(batch, num_classes)`` logits
      against 0/1 targets of the same shape, averaged over the (class, sample) pairs that
      count; targets equal to ``ignore_index`` don't.
    - ``segmentation``: per-pixel cross-entropy of ``(batch, num_classes, height, width)``
      logits against ``(batch, height, width)`` class ids; pixels labelled ``ignore_index``
      don't count.

    Every variant sums over what counts and divides by ``num_items_in_batch`` when given.
    ``pixel_values`` in the inputs are accepted and not used.

    :param task: one of :data:`SUPPORTED_TASKS` (TaskSpec's ``image_classification``,
        ``multilabel_classification`` and ``semantic_segmentation`` name them too), or None to
        tell from the shapes: 4-D logits are segmentation, labels shaped like the logits are
        multi-label, anything else classification.
    :param class_weights: one weight per class (cross-entropy weights, or per-class BCE
        weights for ``multilabel``).
    :param label_smoothing: for the cross-entropy tasks, in ``[0, 1)``.
    :param ignore_index: label value that never counts.
    :raises ValueError: ``task`` is none of the supported ones (they are listed).
    """

    def __init__(
        self,
        task: str | None = None,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
    ) -> None:
        if task is not None:
            task = _ALIASES.get(task, task)
            if task not in SUPPORTED_TASKS:
                msg = (
                    f"VisionLoss does not support task {task!r}; supported tasks: "
                    f"{', '.join(SUPPORTED_TASKS)} (or None to tell from the shapes)."
                )
                raise ValueError(msg)
        self.task = task
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self._classification = ClassificationLoss(class_weights, label_smoothing, ignore_index)
        self.class_weights = self._classification.class_weights

    def __repr__(self) -> str:
        return f"VisionLoss(task={self.task!r}, ignore_index={self.ignore_index})"

    def _task_for(self, logits: torch.Tensor, labels: torch.Tensor) -> str:
        if self.task is not None:
            return self.task
        if logits.ndim == 4:
            return "segmentation"
        if logits.ndim == 2 and labels.shape == logits.shape:
            return "multilabel"
        return "classification"

    def validate_inputs(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the expected and actual shapes and dtypes."""
        task = self._task_for(logits, labels)
        if task == "classification":
            try:
                self._classification.validate_inputs(logits, labels)
            except ValueError as err:
                msg = f"VisionLoss (task 'classification'): {err}"
                raise ValueError(msg) from None
            return
        problem = None
        if task == "multilabel":
            if logits.ndim != 2:
                problem = f"logits have {logits.ndim} dimensions, not 2"
            elif labels.shape != logits.shape:
                problem = "labels must have the logits' shape, one 0/1 target per class"
        elif logits.ndim != 4:
            problem = f"logits have {logits.ndim} dimensions, not 4"
        elif labels.ndim != 3:
            problem = f"labels have {labels.ndim} dimensions, not 3"
        elif labels.shape != (logits.shape[0], *logits.shape[2:]):
            problem = "batch, height or width of logits and labels differ"
        elif not is_integer(labels):
            problem = "labels must hold integer class ids (torch.long), one per pixel"
        if problem is None and not is_floating(logits):
            problem = "logits must be a floating-point tensor"
        if problem is not None:
            raise shape_error(
                f"VisionLoss (task {task!r})", _EXPECTED[task], logits, labels, problem
            )

    def compute_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, inputs: Mapping[str, Any] | None = None
    ) -> torch.Tensor:
        """The task's loss, summed over what counts, divided by ``num_items_in_batch`` when
        given, else by what was counted.

        :raises ValueError: shapes or dtypes don't fit, a label is out of range, or nothing
            counts.
        """
        self.validate_inputs(logits, labels)
        task = self._task_for(logits, labels)
        if task == "classification":
            return self._classification.compute_loss(logits, labels, inputs)
        if task == "segmentation":
            check_class_ids(labels, logits.shape[1], self.ignore_index, "VisionLoss")
            weights = self._classification.weights_for(inputs, logits)
            loss_sum, counted = summed_cross_entropy(
                logits, labels, weights, self.label_smoothing, self.ignore_index
            )
            return reduce_loss(loss_sum, counted, inputs, strategy="VisionLoss")
        return self._multilabel(logits, labels, inputs)

    def count_items(
        self, labels: torch.Tensor, inputs: Mapping[str, Any] | None = None
    ) -> int | float:
        """Samples (classification), (sample, class) pairs (multilabel) or pixels
        (segmentation) that count; with class weights on a cross-entropy task, their weight."""
        task = self.task or _task_of_labels(labels)
        if task == "multilabel":
            return int((labels != self.ignore_index).sum())
        return self._classification.count_items(labels, inputs)

    def _multilabel(
        self, logits: torch.Tensor, labels: torch.Tensor, inputs: Mapping[str, Any] | None
    ) -> torch.Tensor:
        counts = labels != self.ignore_index
        targets = labels.masked_fill(~counts, 0).to(torch.float32)
        bad = counts & ((targets < 0) | (targets > 1))
        if bool(bad.any()):
            values = sorted(set(labels[bad].tolist()))[:5]
            msg = (
                f"VisionLoss (task 'multilabel'): targets must be 0 or 1 (or in between, soft) "
                f"or {self.ignore_index} (ignored); found {values}."
            )
            raise ValueError(msg)
        weights = self._classification.weights_for(inputs, logits)
        per_element = F.binary_cross_entropy_with_logits(
            logits.float(), targets, weight=weights, reduction="none"
        )
        loss_sum = (per_element * counts).sum()
        return reduce_loss(loss_sum, counts.sum(), inputs, strategy="VisionLoss")


def _task_of_labels(labels: torch.Tensor) -> str:
    """The task labels alone imply: class ids per sample, targets per class, ids per pixel."""
    return {1: "classification", 2: "multilabel", 3: "segmentation"}.get(
        labels.ndim, "classification"
    )
