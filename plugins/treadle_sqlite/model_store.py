"""The SQLite model registry store: its tables; the SQL is :class:`treadle.sql.SQLModelStore`'s."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from treadle.sql import SQLModelStore
from treadle.sql.model_store import COMPONENT
from treadle_sqlite.connection import Migration, open_store_database

__all__ = ["MIGRATIONS", "SQLiteModelStore"]

MIGRATIONS: Sequence[Migration] = (
    """
    CREATE TABLE models (
        model_id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        checkpoint_path TEXT NOT NULL,
        task_type TEXT NOT NULL,
        config_hash TEXT NOT NULL,
        training_run_id INTEGER,
        parent_model_id INTEGER REFERENCES models (model_id),
        created_at TEXT NOT NULL,
        metrics TEXT NOT NULL,
        export_formats TEXT NOT NULL,
        model_size_mb REAL NOT NULL,
        memory_req_gb REAL NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('active', 'retired', 'experimental')),
        job_key TEXT UNIQUE,
        data_profile TEXT,
        UNIQUE (name, version)
    );
    CREATE INDEX models_parent ON models (parent_model_id);
    CREATE TABLE model_tags (
        name TEXT NOT NULL,
        tag TEXT NOT NULL,
        model_id INTEGER NOT NULL REFERENCES models (model_id),
        assigned_at TEXT NOT NULL,
        PRIMARY KEY (name, tag)
    );
    CREATE INDEX model_tags_model ON model_tags (model_id)
    """,
)


class SQLiteModelStore(SQLModelStore):
    """The model registry's entries in one SQLite file (shared with other treadle stores).

    :param location: a path or ``sqlite:///path``; created and migrated on open.
    :raises StorageError: the file is not a treadle store, is damaged, or holds a newer schema.
    """

    def __init__(self, location: str | Path) -> None:
        super().__init__(open_store_database(location, COMPONENT, MIGRATIONS))
