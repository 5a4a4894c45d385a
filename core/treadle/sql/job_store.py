"""The job store in SQL: the queue, attempts and schedules, with leases and conditioned writes.

A claim sets ``running``, the worker, ``attempt + 1`` and the lease deadline at once and
records the attempt; before it, jobs whose lease expired go back to the queue (or to
``failed`` / ``cancelled`` when that is what they are owed), their attempt recorded as
``lease_expired``. How a claim is made is the dialect's :attr:`~treadle.sql.dialect.Dialect.claim`:
by default one write transaction (SQLite's ``BEGIN IMMEDIATE`` holds the write lock, so two
claimers never take one job); PostgreSQL claims in one statement with ``FOR UPDATE SKIP
LOCKED``.

Every later write a worker makes is conditioned on ``(job_id, worker_id, attempt)`` and on the
job still running, so a worker that lost its lease changes nothing. The queue reads the
dialect's :class:`~treadle.sql.dialect.QueueClock`; schedules keep the scheduler's clock.
"""

from __future__ import annotations

import builtins
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from treadle.errors import StorageError, UnknownNameError
from treadle.jobs.records import (
    AttemptOutcome,
    Claim,
    HeartbeatReply,
    Job,
    JobAttempt,
    Schedule,
    iso_seconds,
    iso_time,
    job_data_json,
    job_from_row,
    schedule_from_row,
)
from treadle.sql.database import ConstraintViolation, Database, Session, SQLStore
from treadle.sql.queue import (
    OWNED,
    ClaimStrategy,
    EndAttemptStrategy,
    claim_in_transaction,
    end_attempt_in_transaction,
)

__all__ = ["COMPONENT", "JOB_COLUMNS", "SQLJobStore"]

#: The schema component the queue's tables are versioned under.
COMPONENT = "jobs"

JOB_COLUMNS = (
    "job_id, job_type, status, priority, config, created_at, started_at, completed_at, "
    "error_message, worker_id, attempt, failures, max_retries, timeout_seconds, "
    "cancel_requested, result, schedule_id, lease_expires_at"
)


def _text(value: str) -> str:
    # error text comes from tracebacks and child processes: keep it, but never a NUL, which
    # PostgreSQL's text refuses (written as the four characters \x00 instead)
    return value.replace("\x00", "\\x00")


class SQLJobStore(SQLStore):
    """Jobs, attempts and schedules in an SQL database, for workers and schedulers (shared
    with other treadle stores): the :class:`~treadle.storage.JobStore` protocol.

    :param database: the store's open, migrated database.
    """

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self.dialect = database.dialect
        self._claim: ClaimStrategy = self.dialect.claim or claim_in_transaction
        self._end_attempt: EndAttemptStrategy = (
            self.dialect.end_attempt or end_attempt_in_transaction
        )
        clock = self.dialect.clock
        columns_and_values = {
            "job_type": ":job_type",
            "status": "'pending'",
            "priority": ":priority",
            "config": ":config",
            "created_at": clock.stamp,
            "max_retries": ":max_retries",
            "available_at": clock.now,
            "schedule_id": ":schedule",
            "dedupe_key": ":dedupe_key",
            "uid": ":uid",
        }
        # a fire time already enqueued (its dedupe_key taken) inserts nothing
        self._fire_sql = self.dialect.upsert(
            "jobs",
            list(columns_and_values),
            ("dedupe_key",),
            values=list(columns_and_values.values()),
            returning="job_id",
        )

    def _no_job(self, job_id: int) -> UnknownNameError:
        return UnknownNameError(f"No job {job_id} in {self.database.shown}.")

    def _no_schedule(self, schedule_id: int) -> UnknownNameError:
        return UnknownNameError(f"No schedule {schedule_id} in {self.database.shown}.")

    def parameters(self, **values: Any) -> dict[str, Any]:
        now = time.time()
        return {"now": now, "now_iso": iso_time(now), **values}

    # -- submitting and reading ----------------------------------------------------------

    def enqueue(
        self,
        job_type: str,
        config: Mapping[str, Any],
        *,
        priority: int,
        max_retries: int,
        timeout_seconds: float | None = None,
        available_at: float | None = None,
    ) -> int:
        """Add a pending job; returns its id. ``available_at`` (seconds since the epoch) is
        read against the queue's clock; by default the job is claimable at once.

        :raises ConfigError: ``config`` is not JSON data (the key named).
        """
        clock = self.dialect.clock
        parameters = self.parameters(
            job_type=job_type,
            priority=priority,
            config=job_data_json(config),
            max_retries=max_retries,
            timeout=timeout_seconds,
            available_at=available_at,
            uid=uuid.uuid4().hex,
        )
        with self.database.session() as db:
            row = db.one(
                "INSERT INTO jobs (job_type, status, priority, config, created_at, max_retries,"
                " timeout_seconds, available_at, uid) VALUES (:job_type, 'pending', :priority,"
                f" :config, {clock.stamp}, :max_retries, :timeout,"
                f" COALESCE(:available_at, {clock.now}), :uid) RETURNING job_id",
                parameters,
            )
        return int(row["job_id"])

    def get(self, job_id: int) -> Job:
        """The job with its attempts history.

        :raises UnknownNameError: no job has this id.
        """
        to_iso = self.dialect.clock.to_iso
        with self.database.session() as db:
            row = db.one(f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,))
            if row is None:
                raise self._no_job(job_id)
            attempt_rows = db.all(
                "SELECT * FROM job_attempts WHERE job_id = ? ORDER BY attempt", (job_id,)
            )
        attempts = tuple(
            JobAttempt(
                attempt=attempt["attempt"],
                worker_id=attempt["worker_id"],
                started_at=str(to_iso(attempt["started_at"])),
                finished_at=to_iso(attempt["finished_at"]),
                outcome=attempt["outcome"],
                error=attempt["error"],
                retry_delay=attempt["retry_delay"],
            )
            for attempt in attempt_rows
        )
        return job_from_row(row, attempts, times=to_iso)

    def list(
        self,
        *,
        status: str | None = None,
        job_type: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[Job]:
        """Jobs, newest first, optionally of one status and type (attempts not included)."""
        clauses: builtins.list[str] = []
        parameters: builtins.list[Any] = []
        for column, value in (("status", status), ("job_type", job_type)):
            if value is not None:
                clauses.append(f"{column} = ?")
                parameters.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        limit_clause = ""
        if limit is not None:
            limit_clause = "LIMIT ?"
            parameters.append(int(limit))
        with self.database.session() as db:
            rows = db.all(
                f"SELECT {JOB_COLUMNS} FROM jobs {where} ORDER BY job_id DESC {limit_clause}",
                parameters,
            )
        return [job_from_row(row, (), times=self.dialect.clock.to_iso) for row in rows]

    def counts(self) -> dict[str, int]:
        """The number of jobs in each status."""
        with self.database.session() as db:
            rows = db.all("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
        return {row["status"]: int(row["n"]) for row in rows}

    def cancel(self, job_id: int) -> tuple[str, str]:
        """Cancel a pending job at once, or ask a running job's worker to stop it.

        :returns: ``(status_before, status_after)``; a running job stays ``running`` with
            ``cancel_requested`` set until its worker stops it (or its lease expires).
        :raises UnknownNameError: no job has this id.
        """
        parameters = self.parameters(job=job_id)
        with self.database.transaction() as db:
            row = db.one(
                f"SELECT status FROM jobs WHERE job_id = :job{self.dialect.lock('UPDATE')}",
                parameters,
            )
            if row is None:
                raise self._no_job(job_id)
            status = str(row["status"])
            if status == "pending":
                db.execute(
                    "UPDATE jobs SET status = 'cancelled',"
                    f" completed_at = {self.dialect.clock.stamp},"
                    " error_message = 'cancelled before it ran' WHERE job_id = :job",
                    parameters,
                )
                return status, "cancelled"
            if status == "running":
                db.execute(
                    "UPDATE jobs SET cancel_requested = TRUE WHERE job_id = :job", parameters
                )
            return status, status

    # -- a worker's side -----------------------------------------------------------------

    def claim(self, worker_id: str, *, lease_seconds: float) -> Claim | None:
        """Take the pending job of highest priority, oldest first, for ``worker_id``, with a
        lease of ``lease_seconds``; ``None`` when no job is ready."""
        row = self._claim(self, self.parameters(worker=worker_id, lease=float(lease_seconds)))
        if row is None:
            return None
        return Claim(
            job_id=row["job_id"],
            worker_id=worker_id,
            attempt=row["attempt"],
            job_type=row["job_type"],
            config=json.loads(row["config"]),
            max_retries=row["max_retries"],
            failures=row["failures"],
            timeout_seconds=row["timeout_seconds"],
            job_uid=row["uid"],
        )

    def expire_leases(self, db: Session, parameters: Mapping[str, Any]) -> None:
        # SKIP LOCKED where rows lock: two workers expiring at once split the work, and a job
        # whose worker is renewing its lease right now is left to that worker
        clock = self.dialect.clock
        expired = db.all(
            "SELECT job_id, attempt, worker_id, failures, max_retries, cancel_requested"
            f" FROM jobs {self.dialect.hint('jobs_lease')}"
            f" WHERE status = 'running' AND lease_expires_at < {clock.now}"
            f" ORDER BY job_id{self.dialect.lock('UPDATE SKIP LOCKED')}",
            parameters,
        )
        for job in expired:
            error = (
                f"worker {job['worker_id']!r} stopped renewing its lease on attempt "
                f"{job['attempt']} (killed, frozen or cut off)"
            )
            owner = {"job": job["job_id"], "attempt": job["attempt"]}
            db.execute(
                self.finish_attempt_sql(),
                {
                    **parameters,
                    **owner,
                    "outcome": "lease_expired",
                    "error": _text(error),
                    "retry_delay": None,
                },
            )
            if job["cancel_requested"]:
                status, error = "cancelled", f"cancelled; {error}"
            elif job["failures"] + 1 > job["max_retries"]:
                status = "failed"
                error = f"{error}; no retries left ({job['max_retries']} allowed)"
            else:
                status = "pending"
            db.execute(
                "UPDATE jobs SET status = :status, failures = failures + 1,"
                f" error_message = :error, lease_expires_at = NULL, available_at = {clock.now},"
                f" completed_at = CASE WHEN :pending THEN NULL ELSE {clock.stamp} END"
                " WHERE job_id = :job",
                {
                    **parameters,
                    **owner,
                    "status": status,
                    "error": _text(error),
                    "pending": status == "pending",
                },
            )

    def finish_attempt_sql(self) -> str:
        return (
            "UPDATE job_attempts SET outcome = :outcome, error = :error,"
            f" finished_at = {self.dialect.clock.stamp}, retry_delay = :retry_delay"
            " WHERE job_id = :job AND attempt = :attempt"
        )

    def _owner(self, claim: Claim, **values: Any) -> dict[str, Any]:
        return self.parameters(
            job=claim.job_id,
            worker=claim.worker_id,
            attempt=claim.attempt,
            retry_delay=None,
            **values,
        )

    def heartbeat(self, claim: Claim, *, lease_seconds: float) -> HeartbeatReply:
        """Renew the lease of ``claim``: ``lost`` when another claim replaced it."""
        with self.database.session() as db:
            row = db.one(
                f"UPDATE jobs SET lease_expires_at = {self.dialect.clock.now} + :lease"
                f" WHERE {OWNED} RETURNING cancel_requested",
                self._owner(claim, lease=float(lease_seconds)),
            )
        if row is None:
            return "lost"
        return "cancel" if row["cancel_requested"] else "ok"

    def complete(self, claim: Claim, result: Mapping[str, Any]) -> bool:
        """Record the result of ``claim``'s attempt; ``False`` (and nothing written) when the
        claim was lost.

        :raises ConfigError: the result is not JSON data; nothing is written.
        """
        result_text = job_data_json(result, "job result")  # before taking any lock
        return self._end_attempt(
            self,
            f"status = 'completed', result = :result, completed_at = {self.dialect.clock.stamp},"
            " error_message = NULL, lease_expires_at = NULL",
            self._owner(claim, result=result_text, outcome="completed", error=None),
        )

    def fail(
        self,
        claim: Claim,
        error: str,
        *,
        outcome: AttemptOutcome,
        retry_delay: float,
    ) -> str | None:
        """Record a failed attempt: back to ``pending`` after ``retry_delay`` seconds while
        retries are left, else ``failed``.

        :returns: the job's new status, or ``None`` (nothing written) when the claim was lost.
        """
        clock = self.dialect.clock
        retrying = claim.failures + 1 <= claim.max_retries
        status = "pending" if retrying else "failed"
        updated = self._end_attempt(
            self,
            "status = :status, failures = failures + 1, error_message = :error,"
            f" lease_expires_at = NULL, available_at = {clock.now} + :delay,"
            f" completed_at = CASE WHEN :retrying THEN NULL ELSE {clock.stamp} END",
            {
                **self._owner(claim),
                "status": status,
                "error": _text(error),
                "delay": float(retry_delay),
                "retrying": retrying,
                "outcome": outcome,
                "retry_delay": float(retry_delay) if retrying else None,
            },
        )
        return status if updated else None

    def mark_cancelled(self, claim: Claim, reason: str) -> bool:
        """Record that ``claim``'s worker stopped the job on a cancel request."""
        return self._end_attempt(
            self,
            f"status = 'cancelled', error_message = :error,"
            f" completed_at = {self.dialect.clock.stamp}, lease_expires_at = NULL",
            self._owner(claim, error=_text(reason), outcome="cancelled"),
        )

    def release(self, claim: Claim, reason: str) -> bool:
        """Hand ``claim``'s job back to the queue unfinished (a worker shutting down); the
        attempt is recorded as ``handed_back`` and does not count as a failure."""
        return self._end_attempt(
            self,
            f"status = 'pending', lease_expires_at = NULL, available_at = {self.dialect.clock.now}",
            self._owner(claim, error=_text(reason), outcome="handed_back"),
        )

    # -- schedules: the scheduler's clock ------------------------------------------------

    def add_schedule(
        self,
        *,
        name: str,
        job_type: str,
        config: Mapping[str, Any],
        schedule_expr: str,
        timezone: str,
        priority: int,
        max_retries: int,
    ) -> int:
        """Store a schedule whose first fire time is the first after now; returns its id.

        :raises StorageError: a schedule of this name exists.
        :raises ConfigError: ``config`` is not JSON data (the key named).
        """
        parameters = self.parameters(
            name=name,
            job_type=job_type,
            config=job_data_json(config),
            schedule_expr=schedule_expr,
            timezone=timezone,
            priority=priority,
            max_retries=max_retries,
        )
        try:
            with self.database.session() as db:
                row = db.one(
                    "INSERT INTO job_schedules (name, job_type, config, schedule_expr, timezone,"
                    " priority, max_retries, created_at, fires_after) VALUES (:name, :job_type,"
                    " :config, :schedule_expr, :timezone, :priority, :max_retries, :now_iso,"
                    " :now) RETURNING schedule_id",
                    parameters,
                )
        except ConstraintViolation as err:
            msg = (
                f"A schedule named {name!r} exists in {self.database.shown}; choose another "
                f"name or delete it first."
            )
            raise StorageError(msg) from err
        return int(row["schedule_id"])

    def schedules(self) -> builtins.list[Schedule]:
        """Every schedule, in creation order."""
        with self.database.session() as db:
            rows = db.all("SELECT * FROM job_schedules ORDER BY schedule_id")
        return [schedule_from_row(row) for row in rows]

    def schedule(self, schedule_id: int) -> Schedule:
        """One schedule.

        :raises UnknownNameError: no schedule has this id.
        """
        with self.database.session() as db:
            row = db.one("SELECT * FROM job_schedules WHERE schedule_id = ?", (schedule_id,))
        if row is None:
            raise self._no_schedule(schedule_id)
        return schedule_from_row(row)

    def set_paused(self, schedule_id: int, is_paused: bool) -> None:
        """Pause or resume a schedule; a resumed one fires only after now (no catch-up of the
        paused time)."""
        with self.database.transaction() as db:
            row = db.one(
                "SELECT is_paused FROM job_schedules WHERE schedule_id = ?"
                f"{self.dialect.lock('UPDATE')}",
                (schedule_id,),
            )
            if row is None:
                raise self._no_schedule(schedule_id)
            if bool(row["is_paused"]) == is_paused:
                return
            fires_after_floor = 0.0 if is_paused else time.time()
            db.execute(
                "UPDATE job_schedules SET is_paused = ?,"
                f" fires_after = {self.dialect.greatest}(fires_after, ?) WHERE schedule_id = ?",
                (is_paused, fires_after_floor, schedule_id),
            )

    def delete_schedule(self, schedule_id: int) -> None:
        """Delete a schedule; jobs it enqueued stay."""
        with self.database.session() as db:
            deleted = db.execute(
                "DELETE FROM job_schedules WHERE schedule_id = ?", (schedule_id,)
            ).rowcount
        if not deleted:
            raise self._no_schedule(schedule_id)

    def fire_schedule(self, schedule: Schedule, fire_at: float, dedupe_key: str) -> int | None:
        """Enqueue ``schedule``'s job for the fire time ``fire_at`` and move the schedule past
        it, in one transaction. The job carries ``dedupe_key`` under a unique constraint, so a
        fire time another scheduler (or an earlier, interrupted run) already enqueued adds
        nothing: a second scheduler's insert waits for the first one's commit, then does
        nothing.

        :returns: the new job's id, or ``None`` when the fire time was already enqueued.
        """
        parameters = self.parameters(
            job_type=schedule.job_type,
            priority=schedule.priority,
            config=job_data_json(schedule.config),
            max_retries=schedule.max_retries,
            schedule=schedule.schedule_id,
            dedupe_key=dedupe_key,
            uid=uuid.uuid4().hex,
            fire_at=fire_at,
            fire_iso=iso_seconds(fire_at),
        )
        with self.database.transaction() as db:
            row = db.one(self._fire_sql, parameters)
            job_id = None if row is None else int(row["job_id"])
            db.execute(
                "UPDATE job_schedules SET fires_after = :fire_at, last_fire_at = :fire_iso,"
                " last_job_id = COALESCE(:job_id, last_job_id)"
                " WHERE schedule_id = :schedule AND fires_after < :fire_at",
                {**parameters, "job_id": job_id},
            )
        return job_id
