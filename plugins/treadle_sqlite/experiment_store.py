"""The SQLite experiment store: runs, their attempts, and every metric value they logged.

Each ``(run, metric name)`` is a series with an integer id; a metric row holds the series id,
not the name, under one index ``(series_id, step)``: rows stay small and inserts cheap.

A resumed run starts a new attempt; rows an earlier attempt logged after the resume step are
kept but marked ``superseded_by`` that attempt, so the live timeline (``superseded_by IS
NULL``) holds each step once and the dead attempt's history is still there to read.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from treadle.errors import UnknownNameError
from treadle.storage import MetricRow, MetricValues, RunRecord, run_record_from_row, utc_now
from treadle_sqlite.connection import Migration, open_database, transaction

__all__ = ["SQLiteExperimentStore"]

COMPONENT = "experiments"

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

_ENDED = ("completed", "failed")


class SQLiteExperimentStore:
    """Experiment runs and metrics in one SQLite file (shared with other treadle stores).

    :param location: a path or ``sqlite:///path``; created and migrated on open.
    :raises StorageError: the file is not a treadle store or holds a newer schema.
    """

    def __init__(self, location: str | Path) -> None:
        self.location = str(location)
        self._connection = open_database(location, COMPONENT, MIGRATIONS)
        self._lock = threading.RLock()
        self._series: dict[int, dict[str, int]] = {}  # run_id -> name -> series_id

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def __enter__(self) -> SQLiteExperimentStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _unknown(self, run_id: int) -> UnknownNameError:
        return UnknownNameError(f"No run with id {run_id} in {self.location}.")

    # -- writes --------------------------------------------------------------------------

    def create_run(
        self,
        *,
        run_name: str,
        config: Mapping[str, Any],
        notes: str,
        run_dir: str | None,
        status: str,
    ) -> int:
        now = utc_now()
        with self._lock, transaction(self._connection) as db:
            row = db.execute(
                "INSERT INTO runs (run_name, status, config, notes, run_dir, created_at,"
                " ended_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING run_id",
                (
                    run_name,
                    status,
                    json.dumps(config, allow_nan=False),
                    notes,
                    run_dir,
                    now,
                    now if status in _ENDED else None,
                ),
            ).fetchone()
            run_id = int(row[0])
            db.execute(
                "INSERT INTO run_attempts (run_id, attempt, started_at) VALUES (?, 1, ?)",
                (run_id, now),
            )
        return run_id

    def start_attempt(self, run_id: int, resume_step: int | None) -> int:
        now = utc_now()
        with self._lock, transaction(self._connection) as db:
            row = db.execute(
                "UPDATE runs SET attempt = attempt + 1, status = 'running', ended_at = NULL,"
                " error = NULL WHERE run_id = ? RETURNING attempt",
                (run_id,),
            ).fetchone()
            if row is None:
                raise self._unknown(run_id)
            attempt = int(row[0])
            db.execute(
                "INSERT INTO run_attempts (run_id, attempt, started_at, resume_step)"
                " VALUES (?, ?, ?, ?)",
                (run_id, attempt, now, resume_step),
            )
            if resume_step is not None:
                db.execute(
                    "UPDATE run_metrics SET superseded_by = ? WHERE series_id IN"
                    " (SELECT series_id FROM run_series WHERE run_id = ?)"
                    " AND attempt < ? AND superseded_by IS NULL AND step > ?",
                    (attempt, run_id, attempt, resume_step),
                )
        return attempt

    def add_metrics(self, run_id: int, attempt: int | None, rows: Iterable[MetricValues]) -> int:
        created: dict[str, int] = {}
        with self._lock:
            with transaction(self._connection) as db:
                row = db.execute("SELECT attempt FROM runs WHERE run_id = ?", (run_id,)).fetchone()
                if row is None:
                    raise self._unknown(run_id)
                current = int(row[0]) if attempt is None else attempt
                # the rows are consumed inside the transaction: a crash midway leaves none
                batch = list(rows)
                known = self._series.setdefault(run_id, {})
                for name in {values[0] for values in batch}.difference(known):
                    created[name] = self._series_id(db, run_id, name)
                series = {**known, **created}
                cursor = db.executemany(
                    "INSERT INTO run_metrics (series_id, attempt, value, epoch, step, logged_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (series[name], current, value, epoch, step, logged_at)
                        for name, value, epoch, step, logged_at in batch
                    ],
                )
                count = cursor.rowcount
            # cached only once committed: a rolled-back series id must not be reused
            known.update(created)
        return int(count)

    @staticmethod
    def _series_id(db: sqlite3.Connection, run_id: int, name: str) -> int:
        db.execute(
            "INSERT INTO run_series (run_id, name) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (run_id, name),
        )
        row = db.execute(
            "SELECT series_id FROM run_series WHERE run_id = ? AND name = ?", (run_id, name)
        ).fetchone()
        return int(row[0])

    def update_run(
        self,
        run_id: int,
        *,
        status: str | None = None,
        error: str | None = None,
        summary: Mapping[str, Any] | None = None,
    ) -> None:
        with self._lock, transaction(self._connection) as db:
            row = db.execute("SELECT summary FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise self._unknown(run_id)
            if status is not None:
                db.execute(
                    "UPDATE runs SET status = ?, ended_at = ? WHERE run_id = ?",
                    (status, utc_now() if status in _ENDED else None, run_id),
                )
            if error is not None:
                db.execute("UPDATE runs SET error = ? WHERE run_id = ?", (error, run_id))
            if summary:
                merged = {**json.loads(row[0]), **summary}
                db.execute(
                    "UPDATE runs SET summary = ? WHERE run_id = ?",
                    (json.dumps(merged, allow_nan=False), run_id),
                )

    # -- reads ---------------------------------------------------------------------------

    def get_run(self, run_id: int) -> RunRecord:
        with self._lock:
            row = self._connection.execute(
                "SELECT * FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        if row is None:
            raise self._unknown(run_id)
        return run_record_from_row(row)

    def find_runs(
        self,
        *,
        name: str | None = None,
        status: str | None = None,
        run_dir: str | None = None,
        run_ids: Sequence[int] | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        clauses: list[str] = []
        parameters: list[Any] = []
        for column, value in (("run_name", name), ("status", status), ("run_dir", run_dir)):
            if value is not None:
                clauses.append(f"{column} = ?")
                parameters.append(value)
        if run_ids is not None:
            clauses.append("run_id IN (SELECT value FROM json_each(?))")
            parameters.append(json.dumps([int(run_id) for run_id in run_ids]))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        limit_clause = ""
        if limit is not None:
            limit_clause = "LIMIT ?"
            parameters.append(int(limit))
        with self._lock:
            rows = self._connection.execute(
                f"SELECT * FROM runs {where} ORDER BY run_id DESC {limit_clause}", parameters
            ).fetchall()
        return [run_record_from_row(row) for row in rows]

    def get_metrics(
        self,
        run_ids: Sequence[int],
        *,
        names: Sequence[str] | None = None,
        include_superseded: bool = False,
    ) -> list[MetricRow]:
        clauses = ["s.run_id IN (SELECT value FROM json_each(?))"]
        parameters: list[Any] = [json.dumps([int(run_id) for run_id in run_ids])]
        if names is not None:
            clauses.append("s.name IN (SELECT value FROM json_each(?))")
            parameters.append(json.dumps(list(names)))
        if not include_superseded:
            clauses.append("m.superseded_by IS NULL")
        with self._lock:
            rows = self._connection.execute(
                "SELECT s.run_id, m.attempt, s.name, m.value, m.epoch, m.step, m.logged_at,"
                " m.superseded_by FROM run_series AS s"
                " JOIN run_metrics AS m ON m.series_id = s.series_id"
                f" WHERE {' AND '.join(clauses)}"
                " ORDER BY s.run_id, m.step, m.epoch, m.rowid",
                parameters,
            ).fetchall()
        return [
            MetricRow(
                run_id=row[0],
                attempt=row[1],
                name=row[2],
                value=float("nan") if row[3] is None else float(row[3]),
                epoch=row[4],
                step=row[5],
                logged_at=float(row[6]),
                superseded=row[7] is not None,
            )
            for row in rows
        ]

    def metric_names(self, run_ids: Sequence[int] | None = None) -> list[str]:
        query = (
            "SELECT DISTINCT s.name FROM run_series AS s WHERE EXISTS (SELECT 1 FROM"
            " run_metrics AS m WHERE m.series_id = s.series_id AND m.superseded_by IS NULL)"
        )
        parameters: list[Any] = []
        if run_ids is not None:
            query += " AND s.run_id IN (SELECT value FROM json_each(?))"
            parameters.append(json.dumps([int(run_id) for run_id in run_ids]))
        with self._lock:
            rows = self._connection.execute(query + " ORDER BY s.name", parameters).fetchall()
        return [row[0] for row in rows]

    def best_values(
        self, metric: str, mode: str, limit: int
    ) -> list[tuple[int, float, int | None, int | None]]:
        if mode not in ("min", "max"):
            msg = f"mode must be 'min' or 'max': {mode!r}"
            raise ValueError(msg)
        direction = "ASC" if mode == "min" else "DESC"
        # NaN is stored as NULL: excluded, so it is never best (see ENVIRONMENT.md)
        with self._lock:
            rows = self._connection.execute(
                "SELECT run_id, value, epoch, step FROM ("
                "  SELECT s.run_id, m.value, m.epoch, m.step, ROW_NUMBER() OVER ("
                f"   PARTITION BY s.run_id ORDER BY m.value {direction}, m.step, m.rowid) AS rank"
                "  FROM run_series AS s JOIN run_metrics AS m ON m.series_id = s.series_id"
                "  WHERE s.name = ? AND m.superseded_by IS NULL AND m.value IS NOT NULL"
                f") WHERE rank = 1 ORDER BY value {direction}, run_id LIMIT ?",
                (metric, int(limit)),
            ).fetchall()
        return [(int(row[0]), float(row[1]), row[2], row[3]) for row in rows]
