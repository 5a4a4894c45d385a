"""Hook implementations of the loggers plugin: registrations only, a few lines each."""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register
from treadle_loggers.console import ConsoleLogger
from treadle_loggers.jsonl import JsonlLogger


@hookimpl
def treadle_register_loggers(register: Register) -> None:
    register("console", ConsoleLogger)
    register("jsonl", JsonlLogger)
