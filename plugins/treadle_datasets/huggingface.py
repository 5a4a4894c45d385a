"""``huggingface``: any Hugging Face data set, from the hub or a local copy, as the named data
set that ``UniversalDataModule.load_huggingface`` is the face of."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from treadle.errors import ConfigError, DataError

if TYPE_CHECKING:
    from treadle.config import TrainingConfig
    from treadle.data import SizedDataset
    from treadle.task import TaskSpec

__all__ = ["HuggingFace"]


class HuggingFace:
    """Rows of a Hugging Face data set turned into the task's samples, as records of data
    files are (``imdb [train row 12]`` in errors).

    Options of :meth:`load`: ``dataset_name`` (a hub name, a ``save_to_disk`` folder, a folder
    of data files or one data file), ``dataset_config``, ``train_split``,
    ``validation_split_name`` (when the data set lacks it, ``validation_split`` of the
    training split is held out by the seed), ``max_samples`` (the first rows of each split),
    ``text_column``, ``label_column``; any other keyword goes to ``datasets.load_dataset``.
    Offline, a hub name fails at once (see :mod:`treadle_datasets.hub`).
    """

    description = "a Hugging Face data set from the hub or a local copy, named in load()"
    task_types = (
        "language_modeling",
        "classification",
        "image_classification",
        "sequence_to_sequence",
    )
    modalities = ("text", "vision")
    source = "the Hugging Face Hub, or a local copy (save_to_disk folder or data files)"
    licence = "that of the data set loaded"
    requirements = ("datasets>=2.14",)

    def default_task(self, training_config: TrainingConfig) -> TaskSpec:
        """:raises ConfigError: always: the data set's name and columns decide its task."""
        msg = (
            "the 'huggingface' data set needs a data set name: call "
            "UniversalDataModule.load_huggingface(dataset_name, ...) in code, or set dataset "
            "to the path of a data file (a local copy) in the config"
        )
        raise ConfigError(msg)

    def load(
        self,
        task_spec: TaskSpec,
        *,
        tokenizer: Any,
        validation_split: float,
        seed: int,
        dataset_name: str | None = None,
        dataset_config: str | None = None,
        train_split: str = "train",
        validation_split_name: str | None = "validation",
        max_samples: int | None = None,
        text_column: str | None = None,
        label_column: str | None = None,
        **load_options: Any,
    ) -> tuple[SizedDataset[Any], SizedDataset[Any] | None]:
        """The training and validation samples of ``dataset_name``.

        :raises DataError: no ``dataset_name``; offline with a hub name; ``datasets`` missing;
            a split or column missing; a bad value (naming the split and row).
        """
        from treadle.data import datasets_from_records
        from treadle_datasets.hub import hub_records

        if not dataset_name:
            msg = "the 'huggingface' data set needs dataset_name= (a hub name or local copy)"
            raise DataError(msg)
        train, val = hub_records(
            dataset_name,
            dataset_config,
            train_split,
            validation_split_name,
            max_samples,
            **load_options,
        )
        return datasets_from_records(
            train,
            task_spec,
            tokenizer=tokenizer,
            validation_split=validation_split,
            seed=seed,
            text_column=text_column,
            label_column=label_column,
            validation_records=val,
            source=dataset_name,
        )

    def __repr__(self) -> str:
        return "HuggingFace()"
