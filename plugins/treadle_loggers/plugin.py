"""Hook implementations of the loggers plugin: registrations and the progress switch only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from treadle import hookimpl
from treadle.hookspecs import AddLogger, Register
from treadle_loggers.console import ConsoleLogger
from treadle_loggers.jsonl import JsonlLogger
from treadle_loggers.progress import ProgressDisplay

if TYPE_CHECKING:
    from treadle.config import TrainingConfig


@hookimpl
def treadle_register_loggers(register: Register) -> None:
    register("console", ConsoleLogger)
    register("jsonl", JsonlLogger)
    register("progress", ProgressDisplay)


@hookimpl
def treadle_configure_run(training_config: TrainingConfig, add_logger: AddLogger) -> None:
    if training_config.progress_bar:
        add_logger("progress")
