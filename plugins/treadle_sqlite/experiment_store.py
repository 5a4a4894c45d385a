"""The SQLite experiment store: its tables; the SQL is
:class:`treadle.sql.SQLExperimentStore`'s. Metric rows keep insertion order in SQLite's
``rowid``."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from treadle.sql import SQLExperimentStore
from treadle.sql.experiment_store import COMPONENT
from treadle_sqlite.connection import Migration, open_store_database

__all__ = ["MIGRATIONS", "SQLiteExperimentStore"]

#: version 2 of the runs table
_RUNS_V2 = """
CREATE TABLE runs_v2 (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_name TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('running', 'completed', 'failed', 'interrupted', 'died')),
    config TEXT NOT NULL,
    notes TEXT NOT NULL,
    run_dir TEXT,
    created_at TEXT NOT NULL,
    ended_at TEXT,
    error TEXT,
    attempt INTEGER NOT NULL DEFAULT 1,
    summary TEXT NOT NULL DEFAULT '{}',
    owner_pid INTEGER,
    owner_host TEXT,
    owner_token TEXT,
    owner_started_at TEXT,
    heartbeat_at REAL,
    lease_expires_at REAL
)
"""
_RUNS_V1_COLUMNS = (
    "run_id, run_name, status, config, notes, run_dir, created_at, ended_at, error, attempt,"
    " summary"
)


def _rebuild_runs(connection: sqlite3.Connection) -> None:
    """SQLite's procedure for a change ``ALTER TABLE`` cannot make (widening the status
    ``CHECK``): a new table, the rows copied, the old one dropped, the new one renamed, its
    indexes made again. The migration runs with foreign keys off (see
    :meth:`~treadle_sqlite.connection.SQLiteConnector.migration_transaction`), so the rows of
    ``run_attempts``, ``run_series`` and ``run_metrics`` stay, and refer to the new table by
    name. The ``AUTOINCREMENT`` counter is carried over: ids of deleted runs are not reused.
    """
    connection.execute(_RUNS_V2)
    connection.execute(
        f"INSERT INTO runs_v2 ({_RUNS_V1_COLUMNS}) SELECT {_RUNS_V1_COLUMNS} FROM runs"
    )
    row = connection.execute("SELECT seq FROM sqlite_sequence WHERE name = 'runs'").fetchone()
    if row is not None:
        connection.execute("DELETE FROM sqlite_sequence WHERE name = 'runs_v2'")
        connection.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('runs_v2', ?)", (row[0],)
        )
    connection.execute("DROP TABLE runs")
    connection.execute("ALTER TABLE runs_v2 RENAME TO runs")
    connection.execute("CREATE INDEX runs_run_dir ON runs (run_dir)")
    connection.execute("CREATE INDEX runs_status ON runs (status)")


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
    # 2: runs record their owner and heartbeat; statuses 'interrupted' and 'died'
    _rebuild_runs,
)


class SQLiteExperimentStore(SQLExperimentStore):
    """Experiment runs and metrics in one SQLite file (shared with other treadle stores).

    :param location: a path or ``sqlite:///path``; created and migrated on open.
    :raises StorageError: the file is not a treadle store, is damaged, or holds a newer schema.
    """

    def __init__(self, location: str | Path) -> None:
        super().__init__(open_store_database(location, COMPONENT, MIGRATIONS))
