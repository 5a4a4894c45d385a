"""Collators for text: causal language modeling, sequence to sequence, and classification
(which also batches tabular rows and ``(input, label)`` tuples)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from treadle.data import TUPLE_SAMPLE_FIELDS
from treadle_collators.samples import (
    label_field,
    label_of,
    pad_sequences,
    read_samples,
    refuse_tuples,
    stack_field,
    token_ids,
)

if TYPE_CHECKING:
    from treadle.task import TaskSpec

__all__ = ["ClassificationCollator", "LanguageModelingCollator", "SequenceToSequenceCollator"]

#: Label value the losses skip (padding in token labels).
IGNORE_INDEX = -100

#: Classification fields stacked as they are: tabular rows (``mlp_classifier``'s input) and
#: an ``(input, label)`` tuple's input.
_STACKED = ("features", TUPLE_SAMPLE_FIELDS[0])


def _positive(value: Any, name: str, collator: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        msg = f"{collator} collator: {name} must be an int >= 1: {value!r}"
        raise ValueError(msg)
    return value


class LanguageModelingCollator:
    """Batches ``{"input_ids": list[int] | 1-D LongTensor}`` samples for causal LM.

    The batch holds ``input_ids`` ``(batch, max_seq_len)`` long, right-padded with the pad id
    and truncated to ``max_seq_len`` (to the longest sample when no length is set),
    ``attention_mask`` ``(batch, max_seq_len)`` long (1 on tokens), and ``labels``: the input
    ids with -100 on padding (the loss shifts them).

    :param task_spec: gives ``max_seq_len`` and ``pad_token_id``.
    :param max_seq_len: overrides the task's length.
    :param pad_token_id: overrides the task's pad id (default 0 without a task).
    """

    def __init__(
        self,
        task_spec: TaskSpec | None = None,
        *,
        max_seq_len: int | None = None,
        pad_token_id: int | None = None,
    ) -> None:
        task_length = task_spec.max_seq_len if task_spec is not None else None
        self.max_seq_len = _positive(max_seq_len or task_length, "max_seq_len", "language_modeling")
        task_pad = task_spec.pad_token_id if task_spec is not None else 0
        self.pad_token_id = task_pad if pad_token_id is None else pad_token_id

    def __repr__(self) -> str:
        return (
            f"LanguageModelingCollator(max_seq_len={self.max_seq_len}, "
            f"pad_token_id={self.pad_token_id})"
        )

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate; a bad sample raises ``ValueError`` naming its index and key."""
        refuse_tuples(
            samples,
            "language_modeling",
            "{'input_ids': ids}",
            "the loss shifts the ids to make the targets, so an (input, target) pair of "
            "shifted ids would train on the wrong targets",
        )
        samples = read_samples(samples, "language_modeling")
        sequences = [
            token_ids(sample, index, "input_ids", "language_modeling")
            for index, sample in enumerate(samples)
        ]
        length = self.max_seq_len or max(len(sequence) for sequence in sequences)
        input_ids, attention_mask = pad_sequences(sequences, length, self.pad_token_id)
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class ClassificationCollator:
    """Batches classification samples: ``{"input_ids": ..., "label": int}`` for text,
    ``{"features": ..., "label": int}`` for tabular rows, and ``(input, label)`` tuples (or
    ``{"input": ..., "label": int}``) as a ``TensorDataset`` gives them.

    The batch holds ``input_ids`` right-padded to the longest sample (truncated to
    ``max_seq_len`` when set) with its ``attention_mask``; ``features`` and ``input`` stacked
    as they are, as PyTorch's ``default_collate`` does (one shape per batch): ``features`` is
    what ``mlp_classifier`` takes for tabular tasks, and a model receives ``input=...``, the
    argument name of ``nn.Sequential`` and ``nn.Linear``; and ``labels`` ``(batch,)`` long.
    A sample's label is read from ``label_key``, else from ``labels``. Other fields are left
    out.

    :param task_spec: gives ``max_seq_len`` and ``pad_token_id``.
    :param max_seq_len: overrides the task's length.
    :param pad_token_id: overrides the task's pad id (default 0 without a task).
    :param label_key: the sample field holding the class id.
    """

    def __init__(
        self,
        task_spec: TaskSpec | None = None,
        *,
        max_seq_len: int | None = None,
        pad_token_id: int | None = None,
        label_key: str = "label",
    ) -> None:
        task_length = task_spec.max_seq_len if task_spec is not None else None
        self.max_seq_len = _positive(max_seq_len or task_length, "max_seq_len", "classification")
        task_pad = task_spec.pad_token_id if task_spec is not None else 0
        self.pad_token_id = task_pad if pad_token_id is None else pad_token_id
        self.label_key = label_key

    def __repr__(self) -> str:
        return (
            f"ClassificationCollator(max_seq_len={self.max_seq_len}, "
            f"pad_token_id={self.pad_token_id})"
        )

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate; a bad sample raises ``ValueError`` naming its index and key."""
        name = "classification"
        samples = read_samples(samples, name)
        stacked = [key for key in _STACKED if key in samples[0]]
        batch: dict[str, torch.Tensor] = {}
        if "input_ids" in samples[0] or not stacked:
            sequences = [
                token_ids(sample, index, "input_ids", name) for index, sample in enumerate(samples)
            ]
            longest = max(len(sequence) for sequence in sequences)
            length = min(longest, self.max_seq_len) if self.max_seq_len else longest
            input_ids, attention_mask = pad_sequences(sequences, length, self.pad_token_id)
            batch.update(input_ids=input_ids, attention_mask=attention_mask)
        for key in stacked:
            batch[key] = stack_field(
                samples,
                key,
                name,
                "give every sample one shape, or token ids as 'input_ids' to have them padded",
            )
        labels = [
            label_of(sample, index, label_field(sample, self.label_key), name)
            for index, sample in enumerate(samples)
        ]
        batch["labels"] = torch.tensor(labels, dtype=torch.long)
        return batch


class SequenceToSequenceCollator:
    """Batches ``{"input_ids": ..., "target_ids": ...}`` samples for encoder-decoder models.

    Sources and targets are padded independently, each to its longest in the batch and
    truncated to ``max_source_len`` / ``max_target_len`` when set:

    - ``input_ids``, ``attention_mask``: the sources and their mask;
    - ``labels`` ``(batch, target_len)``: the targets, -100 on padding;
    - ``decoder_input_ids`` ``(batch, target_len)``: the targets shifted right by one behind
      ``decoder_start_token_id`` (teacher forcing), padded with the pad id; position ``t``
      predicts ``labels[:, t]``, so the loss does not shift (``shift_labels=False``).

    :param task_spec: gives ``pad_token_id`` and, from ``preprocessing_config``,
        ``max_source_len``, ``max_target_len`` and ``decoder_start_token_id`` (default: the
        pad id, as T5 does); ``max_seq_len`` bounds both lengths when those are absent.
    """

    def __init__(
        self,
        task_spec: TaskSpec | None = None,
        *,
        max_source_len: int | None = None,
        max_target_len: int | None = None,
        pad_token_id: int | None = None,
        decoder_start_token_id: int | None = None,
    ) -> None:
        config: Mapping[str, Any] = task_spec.preprocessing_config if task_spec else {}
        task_length = task_spec.max_seq_len if task_spec is not None else None
        name = "sequence_to_sequence"
        self.max_source_len = _positive(
            max_source_len or config.get("max_source_len") or task_length, "max_source_len", name
        )
        self.max_target_len = _positive(
            max_target_len or config.get("max_target_len") or task_length, "max_target_len", name
        )
        task_pad = task_spec.pad_token_id if task_spec is not None else 0
        self.pad_token_id = task_pad if pad_token_id is None else pad_token_id
        start = decoder_start_token_id
        if start is None:
            start = config.get("decoder_start_token_id", self.pad_token_id)
        self.decoder_start_token_id = int(start)

    def __repr__(self) -> str:
        return (
            f"SequenceToSequenceCollator(max_source_len={self.max_source_len}, "
            f"max_target_len={self.max_target_len}, pad_token_id={self.pad_token_id}, "
            f"decoder_start_token_id={self.decoder_start_token_id})"
        )

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate; a bad sample raises ``ValueError`` naming its index and key."""
        name = "sequence_to_sequence"
        refuse_tuples(
            samples,
            name,
            "{'input_ids': source_ids, 'target_ids': target_ids}",
            "the batch pads sources and targets apart and builds decoder inputs from the targets",
        )
        samples = read_samples(samples, name)
        sources = []
        targets = []
        for index, sample in enumerate(samples):
            sources.append(token_ids(sample, index, "input_ids", name))
            targets.append(token_ids(sample, index, "target_ids", name))
        input_ids, attention_mask = pad_sequences(
            sources, _length(sources, self.max_source_len), self.pad_token_id
        )
        padded_targets, target_mask = pad_sequences(
            targets, _length(targets, self.max_target_len), self.pad_token_id
        )
        labels = padded_targets.masked_fill(target_mask == 0, IGNORE_INDEX)
        start = torch.full((len(samples), 1), self.decoder_start_token_id, dtype=torch.long)
        shifted = torch.cat([start, padded_targets[:, :-1]], dim=1)
        decoder_input_ids = shifted.masked_fill(target_mask == 0, self.pad_token_id)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "decoder_input_ids": decoder_input_ids,
            "labels": labels,
        }


def _length(sequences: Sequence[torch.Tensor], limit: int | None) -> int:
    longest = max(len(sequence) for sequence in sequences)
    return min(longest, limit) if limit else longest
