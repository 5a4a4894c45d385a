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
    from torch.utils.data import Dataset

    from treadle.config import TrainingConfig
    from treadle.export import ExportRequest
    from treadle.task import TaskSpec

__all__ = [
    "Collator",
    "Command",
    "Exporter",
    "JobType",
    "LossStrategy",
    "MetricLogger",
    "ModelFactory",
    "NamedDataset",
    "StorageBackend",
    "StreamingMetric",
    "TrainerView",
]


@runtime_checkable
class LossStrategy(Protocol):
    """Computes a scalar loss from model logits and labels.

    A strategy may also define ``prepare_model(model)``; the Trainer calls it once before the
    first step (the PEFT strategy freezes base parameters there). With
    ``count_items(labels, inputs)`` (the items that count in a batch) it gets
    ``num_items_in_batch`` in ``inputs`` when training, the count of the whole optimizer step,
    and returns the sum of its per-item losses divided by it: accumulation is then exact.
    The whole contract: docs/plugin-kinds.md.
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
    """Accumulates over validation batches without keeping them; ``compute`` reports floats.

    A registered class is instantiated per validation as ``cls()``. ``update(logits, labels,
    inputs)`` gets one batch's logits (float), its labels, and ``inputs``, a mapping with the
    batch's ``attention_mask``, ``pad_token_id`` and the like (``shift_labels: False`` or
    ``decoder_input_ids`` there marks sequence-to-sequence labels, which are not shifted).
    ``compute()`` returns names without the ``val_`` prefix (``{"accuracy": 0.9}``); the
    Trainer adds it. Keep running sums only, as tensor attributes (or one level down in an
    object it holds): a distributed run sums every such tensor over the ranks before
    ``compute()``, and Python numbers are not synchronized. Never keep the logits of the whole
    validation.
    """

    def update(self, logits: torch.Tensor, labels: torch.Tensor, inputs: Any) -> None: ...

    def compute(self) -> Mapping[str, float]: ...


@runtime_checkable
class MetricLogger(Protocol):
    """A sink for metrics: console, JSON lines, an experiment store, W&B, ...

    A registered class is built once per run as ``cls(training_config=..., run_dir=...)``
    (``run_dir``: a ``pathlib.Path`` folder for the run's files). ``log_metrics(metrics, step)``
    receives plain floats keyed by names that may hold ``/`` (``train/batch_loss``) at an
    optimizer step; ``close()`` is called once at the end of the run, also after an error.
    """

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Exporter(Protocol):
    """Writes one artifact format of a model into an export bundle.

    The registered name is the format's name (``onnx``). Besides the members below, an
    exporter may have:

    - ``loader``: a :class:`~treadle.export.BundleLoader` naming the standalone module that
      runs the artifact. It is copied into the bundle, where ``inference.py`` (and the
      TorchServe handler) run the artifact with it, without treadle; the bundle also verifies
      the artifact through it right after export.
    - ``load(path) -> Callable[..., torch.Tensor]``: loads the artifact in this process (with
      treadle), taking input tensors positionally and returning the output tensor. For formats
      no standalone code can run (``pytorch`` rebuilds the model through the models
      registry); used for verification when there is no ``loader``. Raising
      ``NotImplementedError`` records the artifact as not verified, with the reason.

    With neither, the artifact is written and checked only against its sha256.

    :ivar artifact_name: file name inside the bundle's ``artifacts/`` (``model.onnx``).
    :ivar runtime: what runs the artifact, for people (``onnxruntime``); ``""`` for none.
    :ivar requirements: pip requirement lines the bundle needs to run the artifact (its
        loader's ``imports`` among them).
    """

    artifact_name: str
    runtime: str
    requirements: Sequence[str]

    def export(self, request: ExportRequest) -> None:
        """Write the artifact to ``request.path``; raise with the cause when the model cannot
        be exported. ``request`` (:class:`~treadle.export.ExportRequest`) holds the model
        (an ``nn.Module`` in eval mode taking the inputs positionally, in
        ``request.input_names`` order, returning the logits), the example inputs, the dynamic
        axes and the manifest's metadata; it may gain fields in a minor release."""
        ...


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


@runtime_checkable
class NamedDataset(Protocol):
    """A data set registered under a name (``TrainingConfig.dataset``, ``load_named(name)``).

    :ivar description: what it holds, in one line.
    :ivar task_types: the task types it serves; the first is its own (``default_task``'s).
    :ivar modalities: the modalities of the tasks it serves (``text``, ``vision``, ...).
    :ivar source: where the data comes from.
    :ivar licence: the data's licence.
    :ivar requirements: pip requirement lines it needs beyond treadle (empty when none).
    """

    description: str
    task_types: Sequence[str]
    modalities: Sequence[str]
    source: str
    licence: str
    requirements: Sequence[str]

    def default_task(self, training_config: TrainingConfig) -> TaskSpec:
        """The task it trains with when a config names it; raise
        :class:`~treadle.errors.ConfigError` with the fix when it cannot have one."""
        ...

    def load(
        self, task_spec: TaskSpec, *, tokenizer: Any, validation_split: float, seed: int
    ) -> tuple[Dataset[Any], Dataset[Any] | None]:
        """The training and validation datasets (map-style, with ``len()``) of samples the
        task's collator takes, the validation side ``None`` when ``validation_split`` is 0.

        :param task_spec: the task; the caller has checked it is of a type and modality the
            data set serves.
        :param tokenizer: for text: what :func:`treadle.data.text_encoder` accepts.
        :param validation_split: the fraction to hold out, split at random by ``seed``.
        :raises DataError: the data is missing or bad, or a library it needs is not installed
            (naming what to install).

        A data set may take more keyword options; ``load_named(name, **options)`` passes them.
        """
        ...


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

    @property
    def num_training_batches(self) -> int | None: ...

    @property
    def num_validation_batches(self) -> int | None: ...
