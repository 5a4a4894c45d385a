"""Collator for images: one size, normalized, with class ids, multi-hot targets or masks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from treadle.data import TUPLE_SAMPLE_FIELDS
from treadle_collators.samples import field, label_field, read_samples

if TYPE_CHECKING:
    from treadle.task import TaskSpec

__all__ = ["RESIZE_MODES", "VisionCollator"]

#: How images of another size are brought to ``image_size``.
RESIZE_MODES = ("pad", "resize")

#: Mask value the segmentation loss skips, used for padded mask pixels.
IGNORE_INDEX = -100

_NAME = "vision"

#: Where a sample's image is: its own field, else an ``(input, label)`` tuple's input.
_IMAGE_KEYS = ("pixel_values", TUPLE_SAMPLE_FIELDS[0])


class VisionCollator:
    """Batches ``{"pixel_values": image, "label": ...}`` samples, and ``(image, label)``
    tuples as torchvision's datasets give them.

    An image is a ``(C, H, W)`` or ``(H, W)`` tensor or nested list, or an ``(H, W, C)`` array
    or PIL image. A tuple's image is read as the field ``input`` and batched under that name
    (the model receives ``input=...``); a label is read from ``label_key``, else ``labels``.

    The batch holds ``pixel_values`` ``(batch, C, height, width)`` float32, normalized as
    ``(x - mean) / std`` per channel, and ``labels``: ``(batch,)`` long for class ids,
    ``(batch, num_classes)`` float for multi-hot lists, ``(batch, height, width)`` long for
    segmentation masks. A ``(H, W)`` image is one channel; ``uint8`` images are scaled to
    ``[0, 1]`` first, as torchvision's ``ToTensor`` does.

    Images of another size than ``image_size`` are brought to it as ``resize`` says:
    ``pad`` adds ``pad_value`` on the right and bottom (masks get -100 there; an image larger
    than the target is an error), ``resize`` interpolates bilinearly (masks: nearest).
    Without ``image_size``, images of one batch go to the batch's largest height and width.

    :param task_spec: ``preprocessing_config`` gives ``image_size`` (``[H, W]`` or one int),
        ``mean``, ``std`` (one value or one per channel), ``resize`` (``pad`` by default) and
        ``pad_value`` (0.0).
    Keyword options override those keys.
    """

    def __init__(
        self,
        task_spec: TaskSpec | None = None,
        *,
        image_size: int | Sequence[int] | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        resize: str | None = None,
        pad_value: float | None = None,
        label_key: str = "label",
    ) -> None:
        config: Mapping[str, Any] = task_spec.preprocessing_config if task_spec else {}
        self.image_size = _image_size(
            image_size if image_size is not None else config.get("image_size")
        )
        self.mean = _per_channel(mean if mean is not None else config.get("mean"), "mean")
        self.std = _per_channel(std if std is not None else config.get("std"), "std")
        if self.std is not None and bool((self.std <= 0).any()):
            msg = f"vision collator: std must be > 0 per channel: {self.std.flatten().tolist()}"
            raise ValueError(msg)
        self.resize = resize if resize is not None else str(config.get("resize", "pad"))
        if self.resize not in RESIZE_MODES:
            msg = (
                f"vision collator: resize must be one of {', '.join(RESIZE_MODES)}: {self.resize!r}"
            )
            raise ValueError(msg)
        self.pad_value = float(pad_value if pad_value is not None else config.get("pad_value", 0.0))
        self.label_key = label_key

    def __repr__(self) -> str:
        return (
            f"VisionCollator(image_size={self.image_size}, resize={self.resize!r}, "
            f"mean={None if self.mean is None else self.mean.flatten().tolist()}, "
            f"std={None if self.std is None else self.std.flatten().tolist()})"
        )

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate; a bad sample raises ``ValueError`` naming its index and key."""
        samples = read_samples(samples, _NAME)
        image_key = next((key for key in _IMAGE_KEYS if key in samples[0]), _IMAGE_KEYS[0])
        images = [_image(sample, index, image_key) for index, sample in enumerate(samples)]
        channels = images[0].shape[0]
        for index, image in enumerate(images):
            if image.shape[0] != channels:
                msg = (
                    f"vision collator: sample {index}: {image_key!r} has {image.shape[0]} "
                    f"channels, sample 0 has {channels}"
                )
                raise ValueError(msg)
        target = self.image_size or (
            max(image.shape[1] for image in images),
            max(image.shape[2] for image in images),
        )
        label_key = label_field(samples[0], self.label_key)
        labels = [
            _label(field(sample, index, label_key, _NAME), index, label_key)
            for index, sample in enumerate(samples)
        ]
        _check_label_kinds(labels, label_key)
        sized = []
        sized_labels = []
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            sized.append(self._to_size(image, target, index, image_key, self.pad_value))
            if label.ndim == 2:
                label = self._to_size(label, target, index, label_key, IGNORE_INDEX)
            sized_labels.append(label)
        pixel_values = torch.stack(sized)
        if self.mean is not None:
            pixel_values = pixel_values - _for_channels(self.mean, channels, "mean")
        if self.std is not None:
            pixel_values = pixel_values / _for_channels(self.std, channels, "std")
        return {image_key: pixel_values, "labels": torch.stack(sized_labels)}

    def _to_size(
        self,
        tensor: torch.Tensor,
        target: tuple[int, int],
        index: int,
        key: str,
        pad_value: float,
    ) -> torch.Tensor:
        """An image ``(C, H, W)`` or mask ``(H, W)`` at the ``target`` height and width."""
        height, width = tensor.shape[-2:]
        if (height, width) == target:
            return tensor
        if self.resize == "pad":
            if height > target[0] or width > target[1]:
                msg = (
                    f"vision collator: sample {index}: {key!r} is {height}x{width}, larger than "
                    f"image_size {target[0]}x{target[1]}; set preprocessing_config "
                    f"resize='resize' to scale images down, or a larger image_size"
                )
                raise ValueError(msg)
            return F.pad(tensor, (0, target[1] - width, 0, target[0] - height), value=pad_value)
        if tensor.ndim == 2:
            resized = F.interpolate(tensor[None, None].float(), size=target, mode="nearest")
            return resized[0, 0].to(tensor.dtype)
        return F.interpolate(
            tensor[None], size=target, mode="bilinear", align_corners=False, antialias=True
        )[0]


def _image(sample: Mapping[str, Any], index: int, key: str) -> torch.Tensor:
    value = field(sample, index, key, _NAME)
    if isinstance(value, torch.Tensor):
        image = value
    elif isinstance(value, (list, tuple)):
        try:
            image = torch.tensor(value, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError) as err:
            msg = (
                f"vision collator: sample {index}: {key!r} is not a nested list of numbers ({err})"
            )
            raise ValueError(msg) from None
    elif hasattr(value, "__array__") or hasattr(value, "__array_interface__"):
        image = _from_array(value, index, key)
    else:
        msg = (
            f"vision collator: sample {index}: {key!r} is a {type(value).__name__}; give "
            f"a (C, H, W) float tensor or nested list, or an (H, W, C) array or PIL image"
        )
        raise ValueError(msg)
    if image.dtype == torch.uint8:
        image = image.float() / 255.0
    elif not image.dtype.is_floating_point:
        msg = (
            f"vision collator: sample {index}: {key!r} holds {image.dtype}; give floats "
            f"(or uint8, scaled to [0, 1])"
        )
        raise ValueError(msg)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or image.numel() == 0:
        msg = (
            f"vision collator: sample {index}: {key!r} has shape {tuple(image.shape)}; "
            f"give one non-empty (C, H, W) or (H, W) image"
        )
        raise ValueError(msg)
    return image.float()


def _from_array(value: Any, index: int, key: str) -> torch.Tensor:
    """A numpy array or PIL image: ``(H, W, C)`` channels last, as both store them."""
    import numpy

    try:
        image = torch.from_numpy(numpy.array(value))
    except (TypeError, ValueError, RuntimeError) as err:
        msg = f"vision collator: sample {index}: {key!r} is not an image array ({err})"
        raise ValueError(msg) from None
    if image.ndim == 3 and image.shape[-1] in (1, 3, 4) and image.shape[0] not in (1, 3, 4):
        image = image.permute(2, 0, 1).contiguous()
    return image


def _label(value: Any, index: int, key: str) -> torch.Tensor:
    if isinstance(value, int) and not isinstance(value, bool):
        return torch.tensor(value, dtype=torch.long)
    tensor: torch.Tensor | None = None
    if isinstance(value, torch.Tensor):
        tensor = value
    elif isinstance(value, (list, tuple)):
        try:
            tensor = torch.tensor(value)
        except (TypeError, ValueError, RuntimeError):
            tensor = None
    if tensor is not None and tensor.ndim == 0 and not tensor.dtype.is_floating_point:
        return tensor.long()
    if tensor is not None and tensor.ndim == 1 and tensor.numel() > 0:
        return tensor.float()
    if tensor is not None and tensor.ndim == 2 and not tensor.dtype.is_floating_point:
        return tensor.long()
    msg = (
        f"vision collator: sample {index}: {key!r} is {type(value).__name__}"
        f"{'' if tensor is None else ' of shape ' + str(tuple(tensor.shape))}; give a class id "
        f"(int), a multi-hot list (num_classes,), or an integer mask (H, W)"
    )
    raise ValueError(msg)


def _check_label_kinds(labels: Sequence[torch.Tensor], key: str) -> None:
    first = labels[0]
    for index, label in enumerate(labels):
        if label.ndim != first.ndim or (label.ndim == 1 and label.shape != first.shape):
            msg = (
                f"vision collator: sample {index}: {key!r} has shape {tuple(label.shape)}, "
                f"sample 0 has {tuple(first.shape)}; one batch holds one kind of label"
            )
            raise ValueError(msg)


def _image_size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    size = [value, value] if isinstance(value, int) else list(value)
    if len(size) != 2 or not all(isinstance(side, int) and side >= 1 for side in size):
        msg = f"vision collator: image_size must be [height, width] of ints >= 1: {value!r}"
        raise ValueError(msg)
    return size[0], size[1]


def _per_channel(value: Any, name: str) -> torch.Tensor | None:
    if value is None:
        return None
    tensor = torch.as_tensor(value, dtype=torch.float32).flatten()
    if tensor.numel() == 0 or not bool(torch.isfinite(tensor).all()):
        msg = f"vision collator: {name} must be finite numbers, one or one per channel: {value!r}"
        raise ValueError(msg)
    return tensor[:, None, None]


def _for_channels(values: torch.Tensor, channels: int, name: str) -> torch.Tensor:
    if values.shape[0] not in (1, channels):
        msg = (
            f"vision collator: {name} has {values.shape[0]} values for {channels}-channel "
            f"images; give one value or one per channel"
        )
        raise ValueError(msg)
    return values
