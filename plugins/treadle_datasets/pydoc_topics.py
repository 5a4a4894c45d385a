"""``pydoc_topics``: English prose from the Python reference documentation, shipped in the
standard library as ``pydoc_data.topics.topics`` (no extra dependency); language modeling."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from treadle.errors import DataError

if TYPE_CHECKING:
    from treadle.config import TrainingConfig
    from treadle.data import Record, SizedDataset
    from treadle.task import TaskSpec

__all__ = ["PYDOC_DOCUMENT_CHARS", "PydocTopics", "pydoc_documents"]

#: Paragraphs of one pydoc topic are grouped into documents of about this many characters,
#: so the training/validation split has a few hundred units (there are only 79 topics).
PYDOC_DOCUMENT_CHARS = 2000


class PydocTopics:
    """The Python reference documentation's topics as a language-modeling data set.

    Documents of whole paragraphs (:func:`pydoc_documents`) are split at random by the seed,
    then each side is tokenized (begin and end tokens around each document), joined and cut
    into blocks of ``max_seq_len`` tokens, so no block straddles the split.
    """

    description = (
        "about 65k words (466 kB) of English prose and code from the Python reference "
        "documentation, 79 topics"
    )
    task_types = ("language_modeling",)
    modalities = ("text",)
    source = "the standard library's pydoc_data.topics (Python documentation)"
    licence = "PSF License Agreement (Python Software Foundation License Version 2)"
    requirements = ()

    def default_task(self, training_config: TrainingConfig) -> TaskSpec:
        """``TaskSpec.language_modeling(max_seq_len=training_config.max_seq_len)``."""
        from treadle.task import TaskSpec

        return TaskSpec.language_modeling(max_seq_len=training_config.max_seq_len)

    def load(
        self, task_spec: TaskSpec, *, tokenizer: Any, validation_split: float, seed: int
    ) -> tuple[SizedDataset[Any], SizedDataset[Any] | None]:
        """Token blocks of ``task_spec.max_seq_len`` for training and validation."""
        from treadle.data import datasets_from_records

        return datasets_from_records(
            pydoc_documents(),
            task_spec,
            tokenizer=tokenizer,
            validation_split=validation_split,
            seed=seed,
            source="pydoc_topics",
        )

    def __repr__(self) -> str:
        return "PydocTopics()"


def pydoc_documents(max_chars: int = PYDOC_DOCUMENT_CHARS) -> list[Record]:
    """The Python reference documentation's topics, as documents of whole paragraphs of
    about ``max_chars`` characters (a longer paragraph stays whole), in topic order.

    :raises DataError: this Python lacks ``pydoc_data`` (some Linux distributions package it
        separately).
    """
    from treadle.data import Record

    try:
        from pydoc_data.topics import topics
    except ImportError as err:
        msg = (
            f"the pydoc_topics data set reads the standard library's pydoc_data, which this "
            f"Python lacks ({err}); install your distribution's full Python standard library "
            f"package, or use another data set"
        )
        raise DataError(msg) from err
    documents: list[Record] = []
    for topic in sorted(topics):
        paragraphs = [part.strip("\n") for part in topics[topic].split("\n\n") if part.strip()]
        group: list[str] = []
        size = 0
        part = 0
        for paragraph in [*paragraphs, None]:
            if group and (paragraph is None or size + len(paragraph) > max_chars):
                location = f"pydoc_data.topics[{topic!r}] part {part}"
                documents.append(Record(location, {"text": "\n\n".join(group)}))
                group, size, part = [], 0, part + 1
            if paragraph is not None:
                group.append(paragraph)
                size += len(paragraph) + 2
    return documents
