"""Hook implementations of the sqlite plugin: registrations only, a few lines each."""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register
from treadle_sqlite.backend import SQLiteBackend


@hookimpl
def treadle_register_storage(register: Register) -> None:
    register("sqlite", SQLiteBackend())
