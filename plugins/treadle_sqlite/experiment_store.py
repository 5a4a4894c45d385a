"""The SQLite experiment store: its tables; the SQL is
:class:`treadle.sql.SQLExperimentStore`'s. Metric rows keep insertion order in SQLite's
``rowid``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from treadle.sql import SQLExperimentStore
from treadle.sql.experiment_store import COMPONENT
from treadle_sqlite.connection import Migration, open_store_database

__all__ = ["MIGRATIONS", "SQLiteExperimentStore"]

MIGRATIONS: Sequence[Migration] = (
    """
    CREATE TABLE runs (
        run_id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_name TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
        config TEXT NOT NULL,
        notes TEXT NOT NULL,
        run_dir TEXT,
        created_at TEXT NOT NULL,
        ended_at TEXT,
        error TEXT,
        attempt INTEGER NOT NULL DEFAULT 1,
        summary TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX runs_run_dir ON runs (run_dir);
    CREATE TABLE run_attempts (
        run_id INTEGER NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        attempt INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        resume_step INTEGER,
        PRIMARY KEY (run_id, attempt)
    );
    CREATE TABLE run_series (
        series_id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        UNIQUE (run_id, name)
    );
    CREATE INDEX run_series_name ON run_series (name);
    CREATE TABLE run_metrics (
        series_id INTEGER NOT NULL REFERENCES run_series (series_id) ON DELETE CASCADE,
        attempt INTEGER NOT NULL,
        value REAL,
        epoch INTEGER,
        step INTEGER,
        logged_at REAL NOT NULL,
        superseded_by INTEGER
    );
    CREATE INDEX run_metrics_series ON run_metrics (series_id, step)
    """,
)


class SQLiteExperimentStore(SQLExperimentStore):
    """Experiment runs and metrics in one SQLite file (shared with other treadle stores).

    :param location: a path or ``sqlite:///path``; created and migrated on open.
    :raises StorageError: the file is not a treadle store, is damaged, or holds a newer schema.
    """

    def __init__(self, location: str | Path) -> None:
        super().__init__(open_store_database(location, COMPONENT, MIGRATIONS))
