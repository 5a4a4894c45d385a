"""The experiment store in SQL: runs, their attempts, and every metric value they logged.

Each ``(run, metric name)`` is a series with an integer id; a metric row holds the series id,
not the name, under one index ``(series_id, step)``: rows stay small and inserts cheap.

A resumed run starts a new attempt; rows an earlier attempt logged after the resume step are
kept but marked ``superseded_by`` that attempt, so the live timeline (``superseded_by IS
NULL``) holds each step once and the dead attempt's history is still there to read.

NaN is kept as ``NULL`` (so it is never best), ``NULL`` steps and epochs sort first, and names
sort by their bytes, on every database.

A run records its owner (pid, host, a token telling that process from a later one with its
pid, the attempt's start) and a heartbeat that renews a lease. A run still marked ``running``
is reported ``died`` when its lease ran out (on the database's clock where it has one:
PostgreSQL) or when its owner's process is gone from this machine; nothing is written for
that, so a read-only store reports it too, and a run that was only paused (SIGSTOP) is
``running`` again at its next heartbeat.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from treadle.errors import UnknownNameError
from treadle.owner import ProcessOwner
from treadle.sql.database import Database, Session, SQLStore
from treadle.storage import (
    ENDED_RUN_STATUSES,
    MetricRow,
    MetricValues,
    RunRecord,
    run_record_from_row,
    utc_now,
)

__all__ = ["COMPONENT", "SQLExperimentStore"]

#: The schema component the experiment tables are versioned under.
COMPONENT = "experiments"

_ENDED = ENDED_RUN_STATUSES
#: the statuses a run still marked ``running`` may be reported as
_LIVE_OR_DEAD = ("running", "died")


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

    def _select_runs(self) -> str:
        """``SELECT`` of the runs table with ``lease_expired`` beside each row."""
        now = self._dialect.clock.now
        return (
            "SELECT runs.*, CASE WHEN lease_expires_at IS NOT NULL AND lease_expires_at < "
            f"{now} THEN 1 ELSE 0 END AS lease_expired FROM runs"
        )

    def _owner_values(
        self, owner: ProcessOwner | None, lease_seconds: float | None
    ) -> dict[str, Any]:
        # beat: 0.0 adds to the clock for heartbeat_at; None (no owner) keeps it NULL
        if owner is None:
            return {
                "pid": None,
                "host": None,
                "token": None,
                "owner_started": None,
                "beat": None,
                "lease": None,
            }
        return {
            "pid": owner.pid,
            "host": owner.host,
            "token": owner.token,
            "owner_started": owner.started_at,
            "beat": 0.0,
            "lease": None if lease_seconds is None else float(lease_seconds),
        }

    def create_run(
        self,
        *,
        run_name: str,
        config: Mapping[str, Any],
        notes: str,
        run_dir: str | None,
        status: str,
        owner: ProcessOwner | None = None,
        lease_seconds: float | None = None,
    ) -> int:
        now = utc_now()
        clock = self._dialect.clock.now
        with self.database.transaction() as db:
            row = db.one(
                "INSERT INTO runs (run_name, status, config, notes, run_dir, created_at,"
                " ended_at, owner_pid, owner_host, owner_token, owner_started_at, heartbeat_at,"
                " lease_expires_at) VALUES (:name, :status, :config, :notes, :run_dir,"
                f" :created, :ended, :pid, :host, :token, :owner_started, {clock} + :beat,"
                f" {clock} + :lease) RETURNING run_id",
                {
                    "name": run_name,
                    "status": status,
                    "config": json.dumps(config, allow_nan=False),
                    "notes": notes,
                    "run_dir": run_dir,
                    "created": now,
                    "ended": now if status in _ENDED else None,
                    "now": time.time(),
                    **self._owner_values(owner, lease_seconds),
                },
            )
            run_id = int(row["run_id"])
            db.execute(
                "INSERT INTO run_attempts (run_id, attempt, started_at) VALUES (?, 1, ?)",
                (run_id, now),
            )
        return run_id

    def start_attempt(
        self,
        run_id: int,
        resume_step: int | None,
        owner: ProcessOwner | None = None,
        lease_seconds: float | None = None,
    ) -> int:
        now = utc_now()
        clock = self._dialect.clock.now
        with self.database.transaction() as db:
            row = db.one(
                "UPDATE runs SET attempt = attempt + 1, status = 'running', ended_at = NULL,"
                " error = NULL, owner_pid = :pid, owner_host = :host, owner_token = :token,"
                " owner_started_at = :owner_started,"
                f" heartbeat_at = {clock} + :beat, lease_expires_at = {clock} + :lease"
                " WHERE run_id = :run_id RETURNING attempt",
                {"run_id": run_id, "now": time.time(), **self._owner_values(owner, lease_seconds)},
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

    def heartbeat(self, run_id: int, attempt: int, lease_seconds: float) -> bool:
        clock = self._dialect.clock.now
        with self.database.session() as db:
            cursor = db.execute(
                f"UPDATE runs SET heartbeat_at = {clock}, lease_expires_at = {clock} + :lease"
                " WHERE run_id = :run_id AND attempt = :attempt AND status = 'running'",
                {
                    "run_id": run_id,
                    "attempt": attempt,
                    "lease": float(lease_seconds),
                    "now": time.time(),
                },
            )
            return bool(cursor.rowcount)

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

    def _record(self, row: Any) -> RunRecord:
        """The run a row describes, ``died`` when it is marked ``running`` but its lease ran
        out or its owner's process is gone from this machine."""
        record = run_record_from_row(row)
        if record.status != "running":
            return record
        token = row["owner_token"]
        gone = bool(row["lease_expired"])
        if not gone and token is not None and row["owner_pid"] is not None:
            owner = ProcessOwner(
                pid=int(row["owner_pid"]),
                host=str(row["owner_host"]),
                token=str(token),
                started_at=str(row["owner_started_at"]),
            )
            gone = owner.is_alive() is False
        return attrs.evolve(record, status="died") if gone else record

    def get_run(self, run_id: int) -> RunRecord:
        with self.database.session() as db:
            row = db.one(
                f"{self._select_runs()} WHERE run_id = :run_id",
                {"run_id": run_id, "now": time.time()},
            )
        if row is None:
            raise self._unknown(run_id)
        return self._record(row)

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
        parameters: dict[str, Any] = {"now": time.time()}
        for column, value in (("run_name", name), ("run_dir", run_dir)):
            if value is not None:
                clauses.append(f"{column} = :{column}")
                parameters[column] = value
        # running and died are told apart by reading each row: filtered after the query
        reported = status in _LIVE_OR_DEAD
        if reported:
            clauses.append("status IN ('running', 'died')")
        elif status is not None:
            clauses.append("status = :status")
            parameters["status"] = status
        if run_ids is not None:
            clause, ids = self._dialect.member("run_id", [int(run_id) for run_id in run_ids])
            clauses.append(clause.replace("?", ":run_ids"))
            parameters["run_ids"] = ids
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        limit_clause = ""
        if limit is not None and not reported:
            limit_clause = "LIMIT :limit"
            parameters["limit"] = int(limit)
        with self.database.session() as db:
            rows = db.all(
                f"{self._select_runs()} {where} ORDER BY run_id DESC {limit_clause}", parameters
            )
        records = [self._record(row) for row in rows]
        if reported:
            records = [record for record in records if record.status == status]
            if limit is not None:
                records = records[: int(limit)]
        return records

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
