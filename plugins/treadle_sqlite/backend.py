"""The ``sqlite`` storage backend: opens the model, experiment and job stores of a file."""

from __future__ import annotations

from typing import Any

from treadle.errors import StorageError
from treadle.storage import STORE_KINDS

__all__ = ["SQLiteBackend"]


class SQLiteBackend:
    """Registered under the scheme ``sqlite``; a plain path resolves here too.

    Each store of a kind keeps its own tables and schema version in the file, so one file may
    hold all three (``treadle.db`` by default).
    """

    def open(self, url: str, kind: str) -> Any:
        """The store of ``kind`` (``models``, ``experiments``, ``jobs``) at ``url`` (a path or
        ``sqlite:///path``), created and migrated on open.

        :raises StorageError: an unknown kind, a file that is no treadle store, or a newer
            schema; names the file.
        """
        if kind == "models":
            from treadle_sqlite.model_store import SQLiteModelStore

            return SQLiteModelStore(url)
        if kind == "experiments":
            from treadle_sqlite.experiment_store import SQLiteExperimentStore

            return SQLiteExperimentStore(url)
        if kind == "jobs":
            from treadle_sqlite.job_store import SQLiteJobStore

            return SQLiteJobStore(url)
        msg = f"The sqlite backend has no store kind {kind!r}; kinds are {', '.join(STORE_KINDS)}."
        raise StorageError(msg)
