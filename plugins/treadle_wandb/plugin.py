"""Hook implementations of the wandb plugin: registrations only, a few lines each."""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register
from treadle_wandb.logger import WandbLogger


@hookimpl
def treadle_register_loggers(register: Register) -> None:
    register("wandb", WandbLogger)
