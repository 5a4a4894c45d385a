"""The experiment store in SQL: runs, their attempts, and every metric value they logged.

Each ``(run, metric name)`` is a series with an integer id; a metric row holds the series id,
not the name, under one index ``(series_id, step)``: rows stay small and inserts cheap.

A resumed run starts a new attempt; rows an earlier attempt logged after the resume step are
kept but marked ``superseded_by`` that attempt, so the live timeline (``superseded_by IS
NULL``) holds each step once and the dead attempt's history is still there to read.

NaN is kept as ``NULL`` (so it is never best), ``NULL`` steps and epochs sort first, and names
sort by their bytes, on every database.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from treadle.errors import UnknownNameError
from treadle.sql.database import Database, Session, SQLStore
from treadle.storage import MetricRow, MetricValues, RunRecord, run_record_from_row, utc_now

__all__ = ["COMPONENT", "SQLExperimentStore"]

#: The schema component the experiment tables are versioned under.
COMPONENT = "experiments"

_ENDED = ("completed", "failed")


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _finite(value: float | None) -> float | None:
    # NaN as NULL: PostgreSQL would sort a NaN above every number (SQLite stores it as NULL)
    return None if value is None or value != value else value


class SQLExperimentStore(SQLStore):
    """Experiment runs and metrics in an SQL database (shared with other treadle stores): the
    :class:`~treadle.storage.ExperimentStore` protocol.

    :param database: the store's open, migrated database.
    """

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self._dialect = database.dialect
        self._series: dict[int, dict[str, int]] = {}  # run_id -> name -> series_id
        self._new_series_sql = self._dialect.upsert(
            "run_series", ("run_id", "name"), ("run_id", "name")
        )

    def _unknown(self, run_id: int) -> UnknownNameError:
        return UnknownNameError(f"No run with id {run_id} in {self.database.shown}.")

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
        with self.database.transaction() as db:
            row = db.one(
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
            )
            run_id = int(row["run_id"])
            db.execute(
                "INSERT INTO run_attempts (run_id, attempt, started_at) VALUES (?, 1, ?)",
                (run_id, now),
            )
        return run_id

    def start_attempt(self, run_id: int, resume_step: int | None) -> int:
        now = utc_now()
        with self.database.transaction() as db:
            row = db.one(
                "UPDATE runs SET attempt = attempt + 1, status = 'running', ended_at = NULL,"
                " error = NULL WHERE run_id = ? RETURNING attempt",
                (run_id,),
            )
            if row is None:
                raise self._unknown(run_id)
            attempt = int(row["attempt"])
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
        with self.database.lock:
            with self.database.transaction() as db:
                # KEY SHARE: the run cannot vanish under the batch; other writers of the run
                # and status updates are not blocked
                row = db.one(
                    f"SELECT attempt FROM runs WHERE run_id = ?{self._dialect.lock('KEY SHARE')}",
                    (run_id,),
                )
                if row is None:
                    raise self._unknown(run_id)
                current = int(row["attempt"]) if attempt is None else attempt
                # the rows are consumed inside the transaction: a crash midway leaves none
                batch = list(rows)
                known = self._series.setdefault(run_id, {})
                # sorted: two writers creating series of one run take their locks in one order
                for name in sorted({values[0] for values in batch}.difference(known)):
                    created[name] = self._series_id(db, run_id, name)
                series = {**known, **created}
                if batch:
                    db.executemany(
                        "INSERT INTO run_metrics (series_id, attempt, value, epoch, step,"
                        " logged_at) VALUES (?, ?, ?, ?, ?, ?)",
                        [
                            (series[name], current, _finite(value), epoch, step, logged_at)
                            for name, value, epoch, step, logged_at in batch
                        ],
                    )
            # cached only once committed: a rolled-back series id must not be reused
            known.update(created)
        return len(batch)

    def _series_id(self, db: Session, run_id: int, name: str) -> int:
        db.execute(self._new_series_sql, (run_id, name))
        row = db.one(
            "SELECT series_id FROM run_series WHERE run_id = ? AND name = ?", (run_id, name)
        )
        return int(row["series_id"])

    def update_run(
        self,
        run_id: int,
        *,
        status: str | None = None,
        error: str | None = None,
        summary: Mapping[str, Any] | None = None,
    ) -> None:
        with self.database.transaction() as db:
            row = db.one(
                f"SELECT summary FROM runs WHERE run_id = ?{self._dialect.lock('UPDATE')}",
                (run_id,),
            )
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
                merged = {**json.loads(row["summary"]), **summary}
                db.execute(
                    "UPDATE runs SET summary = ? WHERE run_id = ?",
                    (json.dumps(merged, allow_nan=False), run_id),
                )

    # -- reads ---------------------------------------------------------------------------

    def get_run(self, run_id: int) -> RunRecord:
        with self.database.session() as db:
            row = db.one("SELECT * FROM runs WHERE run_id = ?", (run_id,))
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
            clause, ids = self._dialect.member("run_id", [int(run_id) for run_id in run_ids])
            clauses.append(clause)
            parameters.append(ids)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        limit_clause = ""
        if limit is not None:
            limit_clause = "LIMIT ?"
            parameters.append(int(limit))
        with self.database.session() as db:
            rows = db.all(
                f"SELECT * FROM runs {where} ORDER BY run_id DESC {limit_clause}", parameters
            )
        return [run_record_from_row(row) for row in rows]

    def get_metrics(
        self,
        run_ids: Sequence[int],
        *,
        names: Sequence[str] | None = None,
        include_superseded: bool = False,
    ) -> list[MetricRow]:
        clause, ids = self._dialect.member("s.run_id", [int(run_id) for run_id in run_ids])
        clauses, parameters = [clause], [ids]
        if names is not None:
            clause, listed = self._dialect.member("s.name", list(names), "text")
            clauses.append(clause)
            parameters.append(listed)
        if not include_superseded:
            clauses.append("m.superseded_by IS NULL")
        with self.database.session() as db:
            rows = db.all(
                "SELECT s.run_id, m.attempt, s.name, m.value, m.epoch, m.step, m.logged_at,"
                " m.superseded_by FROM run_series AS s"
                " JOIN run_metrics AS m ON m.series_id = s.series_id"
                f" WHERE {' AND '.join(clauses)}"
                " ORDER BY s.run_id, m.step NULLS FIRST, m.epoch NULLS FIRST,"
                f" m.{self._dialect.metric_row_order}",
                parameters,
            )
        return [
            MetricRow(
                run_id=int(row["run_id"]),
                attempt=int(row["attempt"]),
                name=row["name"],
                value=float("nan") if row["value"] is None else float(row["value"]),
                epoch=_int_or_none(row["epoch"]),
                step=_int_or_none(row["step"]),
                logged_at=float(row["logged_at"]),
                superseded=row["superseded_by"] is not None,
            )
            for row in rows
        ]

    def metric_names(self, run_ids: Sequence[int] | None = None) -> list[str]:
        query = (
            f"SELECT DISTINCT s.name COLLATE {self._dialect.binary_collation} AS name"
            " FROM run_series AS s WHERE EXISTS (SELECT 1 FROM run_metrics AS m"
            " WHERE m.series_id = s.series_id AND m.superseded_by IS NULL)"
        )
        parameters: list[Any] = []
        if run_ids is not None:
            clause, ids = self._dialect.member("s.run_id", [int(run_id) for run_id in run_ids])
            query += f" AND {clause}"
            parameters.append(ids)
        with self.database.session() as db:
            rows = db.all(query + " ORDER BY 1", parameters)
        return [row["name"] for row in rows]

    def best_values(
        self, metric: str, mode: str, limit: int
    ) -> list[tuple[int, float, int | None, int | None]]:
        if mode not in ("min", "max"):
            msg = f"mode must be 'min' or 'max': {mode!r}"
            raise ValueError(msg)
        direction = "ASC" if mode == "min" else "DESC"
        # NaN is stored as NULL: excluded, so it is never best (see ENVIRONMENT.md)
        with self.database.session() as db:
            rows = db.all(
                "SELECT run_id, value, epoch, step FROM ("
                "  SELECT s.run_id, m.value, m.epoch, m.step, ROW_NUMBER() OVER ("
                f"   PARTITION BY s.run_id ORDER BY m.value {direction}, m.step NULLS FIRST,"
                f"    m.{self._dialect.metric_row_order}) AS rank"
                "  FROM run_series AS s JOIN run_metrics AS m ON m.series_id = s.series_id"
                "  WHERE s.name = ? AND m.superseded_by IS NULL AND m.value IS NOT NULL"
                f") AS best WHERE rank = 1 ORDER BY value {direction}, run_id LIMIT ?",
                (metric, int(limit)),
            )
        return [
            (
                int(row["run_id"]),
                float(row["value"]),
                _int_or_none(row["epoch"]),
                _int_or_none(row["step"]),
            )
            for row in rows
        ]
