"""Hook implementations of the tracking plugin: the ``experiment`` logger, and switching it on
for runs whose config names an experiment store. The logger follows its run through its own
lifecycle hooks (see :class:`~treadle_tracking.logger.ExperimentLogger`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from treadle import hookimpl
from treadle.hookspecs import AddLogger, Register
from treadle_tracking.logger import ExperimentLogger

if TYPE_CHECKING:
    from treadle.config import TrainingConfig


@hookimpl
def treadle_register_loggers(register: Register) -> None:
    register("experiment", ExperimentLogger)


@hookimpl
def treadle_configure_run(training_config: TrainingConfig, add_logger: AddLogger) -> None:
    if training_config.experiment_location:
        add_logger("experiment")
