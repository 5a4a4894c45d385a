"""Hook implementations of the tensorboard plugin: the ``tensorboard`` logger, switched on for
runs whose config gives it options (``plugins.options.tensorboard``) or names it in
``loggers``. The logger follows its run through its own lifecycle hooks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from treadle import hookimpl
from treadle.hookspecs import AddLogger, Register

if TYPE_CHECKING:
    from treadle.config import TrainingConfig

#: The logger's name, and the key of its options in ``plugins.options``.
NAME = "tensorboard"


@hookimpl
def treadle_register_loggers(register: Register) -> None:
    # a reference: the logger module imports torch, and discovery must not
    register(NAME, "treadle_tensorboard.logger:TensorBoardLogger")


@hookimpl
def treadle_configure_run(training_config: TrainingConfig, add_logger: AddLogger) -> None:
    if NAME in training_config.plugins.options:
        add_logger(NAME)
