"""``digits``: 1,797 handwritten digits, 8x8 grey, 10 classes, shipped inside scikit-learn
(the ``vision`` extra); image classification."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from treadle.errors import DataError

if TYPE_CHECKING:
    import torch

    from treadle.config import TrainingConfig
    from treadle.data import ImageDataset
    from treadle.task import TaskSpec

__all__ = ["Digits", "digits_arrays"]


class Digits:
    """scikit-learn's digits as ``{"pixel_values": (1, 8, 8) float32 in [0, 1], "label": int}``
    samples, split at random by the seed."""

    description = "1,797 handwritten digits, 8x8 grey images in [0, 1], 10 classes"
    task_types = ("image_classification",)
    modalities = ("vision",)
    source = (
        "scikit-learn's sklearn.datasets.load_digits: a copy of the test set of the UCI "
        "Optical Recognition of Handwritten Digits data set"
    )
    licence = "CC BY 4.0 (UCI Machine Learning Repository)"
    requirements = ("scikit-learn>=1.3",)

    def default_task(self, training_config: TrainingConfig) -> TaskSpec:
        """``TaskSpec.vision_tiny()``: 10 classes of 1x8x8 images."""
        from treadle.task import TaskSpec

        return TaskSpec.vision_tiny()

    def load(
        self, task_spec: TaskSpec, *, tokenizer: Any, validation_split: float, seed: int
    ) -> tuple[ImageDataset, ImageDataset | None]:
        """The images, split by ``seed``.

        :raises DataError: scikit-learn is not installed (naming the extra).
        """
        from treadle.data import ImageDataset, split_indices

        images, labels = digits_arrays()
        dataset = ImageDataset(images, labels)
        train_index, val_index = split_indices(len(dataset), validation_split, seed)
        return dataset.select(train_index), dataset.select(val_index) if val_index else None

    def __repr__(self) -> str:
        return "Digits()"


def digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits: ``(1797, 1, 8, 8)`` float32 images in ``[0, 1]`` and
    ``(1797,)`` long labels.

    :raises DataError: scikit-learn is not installed (naming ``pip install "treadle[vision]"``).
    """
    import torch

    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        msg = (
            f'the digits data set needs scikit-learn: pip install "treadle[vision]" '
            f"(or pip install scikit-learn) ({err})"
        )
        raise DataError(msg) from err
    bunch: Any = load_digits()
    # pixel values are counts 0..16 of set bits in 4x4 blocks of the 32x32 original
    images = torch.as_tensor(bunch.images, dtype=torch.float32).div(16.0).unsqueeze(1)
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    return images.contiguous(), labels
