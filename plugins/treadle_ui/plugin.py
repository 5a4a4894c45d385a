"""Hook implementations of the ui plugin: registrations only, a few lines each."""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register
from treadle_ui.command import UiCommand


@hookimpl
def treadle_register_commands(register: Register) -> None:
    register("ui", UiCommand)
