"""The ``postgresql`` storage backend: opens the model, experiment and job stores of a
database."""

from __future__ import annotations

from typing import Any

from treadle.errors import StorageError
from treadle.storage import STORE_KINDS

__all__ = ["PostgresBackend"]


class PostgresBackend:
    """Registered under the schemes ``postgresql`` and ``postgres`` (libpq takes both).

    Each store of a kind keeps its own tables and schema version in the database, so one
    database may hold all three, shared by every worker and scheduler on every machine.
    """

    def open(self, url: str, kind: str) -> Any:
        """The store of ``kind`` (``models``, ``experiments``, ``jobs``) at ``url``
        (``postgresql://user:password@host:port/database``), created and migrated on open.

        :raises StorageError: psycopg is not installed, an unknown kind, the server cannot be
            reached, the database holds other tables, or a newer schema; names the URL
            (password hidden).
        """
        if kind not in STORE_KINDS:
            msg = (
                f"The postgresql backend has no store kind {kind!r}; kinds are "
                f"{', '.join(STORE_KINDS)}."
            )
            raise StorageError(msg)
        try:
            import psycopg  # noqa: F401
        except ImportError as err:
            msg = (
                f"{kind} store at a PostgreSQL URL needs psycopg 3, which is not installed "
                f'({err}); install it with: pip install "treadle[postgres]"'
            )
            raise StorageError(msg) from err
        if kind == "models":
            from treadle_postgres.model_store import PostgresModelStore

            return PostgresModelStore(url)
        if kind == "experiments":
            from treadle_postgres.experiment_store import PostgresExperimentStore

            return PostgresExperimentStore(url)
        from treadle_postgres.job_store import PostgresJobStore

        return PostgresJobStore(url)
