"""What every exporter receives: a positional model, example inputs and their dynamic axes."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from treadle.export.errors import ExportError

if TYPE_CHECKING:
    from treadle.task import TaskSpec

__all__ = [
    "BATCH_AXIS",
    "OUTPUT_NAME",
    "SEQUENCE_AXIS",
    "PositionalModel",
    "derive_example_inputs",
    "dynamic_axes_for",
    "extract_logits",
    "inputs_for_tracing",
    "normalize_example_inputs",
]

BATCH_AXIS = "batch"
SEQUENCE_AXIS = "sequence"
#: The one output every bundle artifact produces.
OUTPUT_NAME = "logits"

_DEFAULT_IMAGE_SIZE = 32
_DEFAULT_CHANNELS = 3


def extract_logits(raw: Any) -> torch.Tensor:
    """The logits tensor of a model's output: a tensor, ``{"logits": ...}``, an object with
    ``.logits``, or a tuple whose first item is the logits.

    :raises ExportError: none of these shapes fits.
    """
    if isinstance(raw, torch.Tensor):
        return raw
    if isinstance(raw, Mapping):
        from_mapping = raw.get("logits")
        if isinstance(from_mapping, torch.Tensor):
            return from_mapping
    logits = getattr(raw, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(raw, tuple) and raw and isinstance(raw[0], torch.Tensor):
        return raw[0]
    msg = (
        f"cannot find logits in the model's output ({type(raw).__name__}): return a tensor, "
        f"a dict with 'logits', an object with .logits, or a tuple starting with the logits"
    )
    raise ExportError(msg)


class PositionalModel(nn.Module):
    """Wraps a model that takes keyword tensors so that it takes them positionally, in
    ``input_names`` order, and returns its logits: the one shape every exporter handles.

    :param model: the model; called as ``model(**{name: tensor})``.
    :param input_names: the keyword names, in the order the positional inputs come.
    """

    def __init__(self, model: nn.Module, input_names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return extract_logits(self.model(**dict(zip(self.input_names, tensors, strict=True))))


def _accepts_keyword(model: nn.Module, name: str) -> bool:
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters


def _image_shape(task_spec: TaskSpec) -> tuple[int, int, int]:
    config = task_spec.preprocessing_config
    size = config.get("image_size", _DEFAULT_IMAGE_SIZE)
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    channels = config.get("num_channels", config.get("channels"))
    if channels is None:
        mean = config.get("mean")
        channels = len(mean) if isinstance(mean, list | tuple) else _DEFAULT_CHANNELS
    return int(channels), int(height), int(width)


def derive_example_inputs(
    model: nn.Module, task_spec: TaskSpec, vocab_size: int, max_seq_len: int
) -> dict[str, torch.Tensor]:
    """Example inputs for one sample of the task, seeded so every export draws the same.

    Text: ``input_ids`` (1, max_seq_len) long in ``[0, vocab_size)`` — the task's
    ``max_seq_len`` wins over the argument — plus an all-ones ``attention_mask`` when the
    model's ``forward`` names that argument. Vision: ``pixel_values`` (1, C, H, W) float from
    ``preprocessing_config`` (``image_size``, ``num_channels``/``channels``, else the length of
    ``mean``; 3x32x32 when absent).

    :raises ExportError: another modality; pass ``example_inputs`` then.
    """
    generator = torch.Generator().manual_seed(0)
    if task_spec.modality == "text":
        length = task_spec.max_seq_len or max_seq_len
        input_ids = torch.randint(0, vocab_size, (1, length), generator=generator)
        inputs = {"input_ids": input_ids}
        if _accepts_keyword(model, "attention_mask"):
            inputs["attention_mask"] = torch.ones_like(input_ids)
        return inputs
    if task_spec.modality == "vision":
        return {"pixel_values": torch.randn(1, *_image_shape(task_spec), generator=generator)}
    msg = (
        f"cannot derive example inputs for modality {task_spec.modality!r} of task "
        f"{task_spec.name!r}: pass example_inputs={{'name': tensor, ...}} with one sample"
    )
    raise ExportError(msg)


def normalize_example_inputs(
    example_inputs: Mapping[str, torch.Tensor] | torch.Tensor, task_spec: TaskSpec
) -> dict[str, torch.Tensor]:
    """``example_inputs`` as a name → tensor dict; a bare tensor is named for the modality
    (``input_ids`` for text, ``pixel_values`` for vision).

    :raises ExportError: not tensors, or a bare tensor for another modality.
    """
    if isinstance(example_inputs, torch.Tensor):
        names = {"text": "input_ids", "vision": "pixel_values"}
        if task_spec.modality not in names:
            msg = (
                f"a bare example tensor cannot be named for modality {task_spec.modality!r}: "
                f"pass example_inputs={{'name': tensor}}"
            )
            raise ExportError(msg)
        return {names[task_spec.modality]: example_inputs}
    inputs = dict(example_inputs)
    wrong = [name for name, value in inputs.items() if not isinstance(value, torch.Tensor)]
    if not inputs or wrong:
        msg = (
            f"example_inputs must map input names to tensors; not tensors: "
            f"{', '.join(map(repr, wrong)) or '(empty mapping)'}"
        )
        raise ExportError(msg)
    return inputs


def dynamic_axes_for(
    task_spec: TaskSpec, inputs: Mapping[str, torch.Tensor], logits: torch.Tensor
) -> dict[str, dict[int, str]]:
    """Axis names per input and output: the batch axis (0) always; for text, the sequence
    axis (1) of every input with one, and of the logits when they have one per token."""
    axes: dict[str, dict[int, str]] = {}
    lengths = set()
    for name, tensor in inputs.items():
        axes[name] = {0: BATCH_AXIS}
        if task_spec.modality == "text" and tensor.dim() >= 2:
            axes[name][1] = SEQUENCE_AXIS
            lengths.add(tensor.shape[1])
    axes[OUTPUT_NAME] = {0: BATCH_AXIS}
    if logits.dim() >= 3 and logits.shape[1] in lengths:
        axes[OUTPUT_NAME][1] = SEQUENCE_AXIS
    return axes


def inputs_for_tracing(
    inputs: Mapping[str, torch.Tensor], dynamic_axes: Mapping[str, Mapping[int, str]]
) -> tuple[torch.Tensor, ...]:
    """The example inputs with every dynamic axis of size 1 repeated to size 2.

    torch.export specializes an axis whose example size is 1 to the constant 1, so a sample
    of one would export a model that only takes batches of one.
    """
    traced = []
    for name, tensor in inputs.items():
        for axis in dynamic_axes.get(name, {}):
            if tensor.shape[axis] == 1:
                tensor = torch.cat([tensor, tensor], dim=axis)
        traced.append(tensor)
    return tuple(traced)
