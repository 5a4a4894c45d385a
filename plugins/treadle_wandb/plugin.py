"""Hook implementations of the wandb plugin: the ``wandb`` logger, switched on for runs whose
config sets ``wandb_project``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from treadle import hookimpl
from treadle.hookspecs import AddLogger, Register
from treadle_wandb.logger import WandbLogger

if TYPE_CHECKING:
    from treadle.config import TrainingConfig


@hookimpl
def treadle_register_loggers(register: Register) -> None:
    register("wandb", WandbLogger)


@hookimpl
def treadle_configure_run(training_config: TrainingConfig, add_logger: AddLogger) -> None:
    if training_config.wandb_project:
        add_logger("wandb")
