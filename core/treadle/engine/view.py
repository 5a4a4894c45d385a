"""What lifecycle hooks see of a run: a read-only view over the trainer's live counters."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    import torch

    from treadle.config import TrainingConfig
    from treadle.task import TaskSpec

__all__ = ["RunState", "RunView"]


@attrs.define(kw_only=True)
class RunState:
    """The counters of a run that move while it trains; the loops advance them.

    :ivar epoch: the current epoch, from 0.
    :ivar global_step: optimizer steps taken since the run began (resumes included).
    :ivar batch_index: position of the current batch in its epoch, from 0.
    :ivar training_batches: batches a training epoch holds on this process, ``None`` when the
        data has no length.
    :ivar validation_batches: batches a validation pass holds on this process, ``None`` when
        the data has no length or there is no validation data.
    """

    epoch: int = 0
    global_step: int = 0
    batch_index: int = 0
    training_batches: int | None = None
    validation_batches: int | None = None


class RunView:
    """The :class:`treadle.protocols.TrainerView` every lifecycle hook receives.

    Read-only: hooks steer through the :class:`~treadle.control.TrainerControl` they are
    given, never by changing the trainer.
    """

    __slots__ = (
        "_device",
        "_model",
        "_optimizer",
        "_run_dir",
        "_state",
        "_task_spec",
        "_training_config",
    )

    def __init__(
        self,
        *,
        training_config: TrainingConfig,
        task_spec: TaskSpec,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        run_dir: Path,
        state: RunState,
    ) -> None:
        self._training_config = training_config
        self._task_spec = task_spec
        self._model = model
        self._optimizer = optimizer
        self._device = device
        self._run_dir = run_dir
        self._state = state

    @property
    def training_config(self) -> TrainingConfig:
        """The run's configuration."""
        return self._training_config

    @property
    def task_spec(self) -> TaskSpec:
        """The task being trained."""
        return self._task_spec

    @property
    def model(self) -> torch.nn.Module:
        """The model being trained (the uncompiled module when ``compile_mode`` is set)."""
        return self._model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer; read its ``param_groups`` for the learning rate."""
        return self._optimizer

    @property
    def device(self) -> torch.device:
        """The device the model trains on."""
        return self._device

    @property
    def run_dir(self) -> Path:
        """The folder of this run: checkpoints and log files."""
        return self._run_dir

    @property
    def epoch(self) -> int:
        """The current epoch, from 0."""
        return self._state.epoch

    @property
    def global_step(self) -> int:
        """Optimizer steps taken since the run began, resumed steps included."""
        return self._state.global_step

    @property
    def batch_index(self) -> int:
        """Position of the current batch in its epoch, from 0."""
        return self._state.batch_index

    @property
    def num_training_batches(self) -> int | None:
        """Batches in a training epoch on this process (as Lightning's
        ``trainer.num_training_batches``); ``None`` when the data has no length."""
        return self._state.training_batches

    @property
    def num_validation_batches(self) -> int | None:
        """Batches in a validation pass on this process; ``None`` when the data has no length
        or the run has no validation data."""
        return self._state.validation_batches

    def __repr__(self) -> str:
        return f"<RunView epoch={self.epoch} global_step={self.global_step}>"
