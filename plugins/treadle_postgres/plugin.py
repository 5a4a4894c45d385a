"""Hook implementations of the postgres plugin: registrations only, a few lines each."""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register
from treadle_postgres.backend import PostgresBackend


@hookimpl
def treadle_register_storage(register: Register) -> None:
    backend = PostgresBackend()
    register("postgresql", backend)
    register("postgres", backend)
