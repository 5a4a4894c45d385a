"""The kinds plugins provide, as protocols: a plugin never subclasses anything of treadle's.

``register(name, obj)`` checks ``obj`` against its kind's protocol at once, so a typo in a
method name fails at registration, naming the plugin, rather than mid-training.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from treadle.config import TrainingConfig
    from treadle.task import TaskSpec

__all__ = [
    "Collator",
    "Command",
    "Exporter",
    "JobType",
    "LossStrategy",
    "MetricLogger",
    "ModelFactory",
    "StorageBackend",
    "StreamingMetric",
    "TrainerView",
]


@runtime_checkable
class LossStrategy(Protocol):
    """Computes a scalar loss from model logits and labels.

    A strategy may also define ``prepare_model(model)``; the Trainer calls it once before the
    first step (the PEFT strategy freezes base parameters there).
    """

    def compute_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, inputs: Any = None
    ) -> torch.Tensor:
        """Return the scalar loss; ``inputs`` is a :class:`~treadle.losses.LossInputs` or None."""
        ...

    def validate_inputs(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Raise ``ValueError`` naming expected and actual shapes/dtypes when they don't fit."""
        ...


@runtime_checkable
class Collator(Protocol):
    """Turns a list of samples into one batch: a mapping of tensors."""

    def __call__(self, samples: Sequence[Any]) -> Mapping[str, Any]: ...


@runtime_checkable
class ModelFactory(Protocol):
    """Builds a model from a training config and a task."""

    def __call__(self, training_config: TrainingConfig, task_spec: TaskSpec) -> torch.nn.Module: ...


@runtime_checkable
class StreamingMetric(Protocol):
    """Accumulates over validation batches without keeping them; ``compute`` reports floats."""

    def update(self, logits: torch.Tensor, labels: torch.Tensor, inputs: Any) -> None: ...

    def compute(self) -> Mapping[str, float]: ...


@runtime_checkable
class MetricLogger(Protocol):
    """A sink for metrics: console, JSON lines, an experiment store, W&B, ..."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Exporter(Protocol):
    """Writes one artifact format of a model into an export bundle."""

    def export(self, model: torch.nn.Module, example_inputs: Any, directory: Any) -> Any: ...


@runtime_checkable
class StorageBackend(Protocol):
    """Opens stores for URLs of the scheme it is registered under."""

    def open(self, url: str, kind: str) -> Any: ...


@runtime_checkable
class JobType(Protocol):
    """Runs one job of the queue from its stored config."""

    def run(self, context: Any) -> Mapping[str, Any]: ...


@runtime_checkable
class Command(Protocol):
    """A ``treadle`` sub-command."""

    help: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


class TrainerView(Protocol):
    """What lifecycle hooks may read of the trainer."""

    @property
    def training_config(self) -> TrainingConfig: ...

    @property
    def task_spec(self) -> TaskSpec: ...

    @property
    def model(self) -> torch.nn.Module: ...

    @property
    def epoch(self) -> int: ...

    @property
    def global_step(self) -> int: ...
