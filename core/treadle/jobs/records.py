"""The job queue's values: jobs, their attempts, a worker's claim, schedules; frozen and plain."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import attrs

from treadle.store_values import check_json

if TYPE_CHECKING:
    from treadle.storage import Row

__all__ = [
    "ATTEMPT_OUTCOMES",
    "FINISHED_STATUSES",
    "JOB_STATUSES",
    "AttemptOutcome",
    "Claim",
    "HeartbeatReply",
    "Job",
    "JobAttempt",
    "JobStatus",
    "Schedule",
    "iso_time",
    "iso_seconds",
    "job_data_json",
    "job_from_row",
    "schedule_from_row",
]

JobStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
JOB_STATUSES: tuple[JobStatus, ...] = ("pending", "running", "completed", "failed", "cancelled")
FINISHED_STATUSES: tuple[JobStatus, ...] = ("completed", "failed", "cancelled")

#: How one attempt ended. ``running`` while it runs; ``failed`` (the job raised), ``died``
#: (its child process exited without a result), ``timed_out``, ``lease_expired`` (its worker
#: stopped renewing the lease, e.g. killed), ``cancelled``, ``handed_back`` (its worker shut
#: down on SIGTERM before the job finished: not counted as a failure).
AttemptOutcome = Literal[
    "running",
    "completed",
    "failed",
    "died",
    "timed_out",
    "lease_expired",
    "cancelled",
    "handed_back",
]
ATTEMPT_OUTCOMES: tuple[AttemptOutcome, ...] = (
    "running",
    "completed",
    "failed",
    "died",
    "timed_out",
    "lease_expired",
    "cancelled",
    "handed_back",
)

#: What a lease renewal tells the worker: keep going, stop the job because it was cancelled,
#: or stop and write nothing more because another worker owns the job now.
HeartbeatReply = Literal["ok", "cancel", "lost"]


@attrs.frozen(kw_only=True)
class JobAttempt:
    """One claim of a job by a worker and how it ended.

    :ivar attempt: 1 for the first claim, then 2, 3, ...
    :ivar retry_delay: seconds the job waited before it could be claimed again, when this
        attempt's failure scheduled a retry.
    """

    attempt: int
    worker_id: str
    started_at: str
    finished_at: str | None
    outcome: AttemptOutcome
    error: str | None = None
    retry_delay: float | None = None


@attrs.frozen(kw_only=True)
class Job:
    """A job of the queue, as the spec shows it, plus its result and attempts history.

    Timestamps are ISO 8601 in UTC. ``retry_count`` is the number of failed attempts that were
    retried; ``attempts`` lists every claim, oldest first (empty from :meth:`JobManager.list_jobs`).

    :ivar result: what the job returned (run id, model id, bundle path, ...) once completed.
    :ivar cancel_requested: a cancel reached the job while it ran; its worker is stopping it.
    :ivar timeout_seconds: the job's own time limit, when its config sets one.
    :ivar schedule_id: the schedule that enqueued it, if any.
    :ivar lease_expires_at: while it runs, when its worker's lease ends unless renewed.
    """

    job_id: int
    job_type: str
    status: JobStatus
    priority: int
    config: dict[str, Any]
    created_at: str
    started_at: str | None
    completed_at: str | None
    error_message: str | None
    worker_id: str | None
    retry_count: int
    max_retries: int
    attempt: int = 0
    result: dict[str, Any] | None = None
    cancel_requested: bool = False
    timeout_seconds: float | None = None
    schedule_id: int | None = None
    lease_expires_at: str | None = None
    attempts: tuple[JobAttempt, ...] = ()

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES


@attrs.frozen(kw_only=True)
class Claim:
    """A worker's hold on one attempt of a job: every later write about the job names
    ``(job_id, worker_id, attempt)`` and changes nothing once another claim replaced it.

    :ivar failures: failed attempts before this one.
    :ivar job_uid: the job's key, unique across stores and the same on every attempt.
    """

    job_id: int
    worker_id: str
    attempt: int
    job_type: str
    config: Mapping[str, Any]
    max_retries: int
    failures: int
    timeout_seconds: float | None = None
    job_uid: str = ""

    @property
    def retries_left(self) -> int:
        return max(0, self.max_retries - self.failures)


@attrs.frozen(kw_only=True)
class Schedule:
    """A cron schedule that enqueues a job at each fire time.

    :ivar schedule_expr: a five-field cron expression (or ``@daily`` and friends), read in
        ``timezone``.
    :ivar last_fire_at: the last fire time that enqueued a job (ISO 8601, UTC).
    :ivar next_fire_at: the next fire time after now, or after the last fire (ISO 8601, UTC);
        filled in by :class:`~treadle.jobs.scheduler.TrainingScheduler`.
    """

    schedule_id: int
    name: str
    job_type: str
    config: dict[str, Any]
    schedule_expr: str
    timezone: str
    priority: int
    max_retries: int
    is_paused: bool
    created_at: str
    last_fire_at: str | None
    last_job_id: int | None
    fires_after: float
    next_fire_at: str | None = None


# -- what every job store writes and reads ---------------------------------------------------


def iso_time(epoch_seconds: float) -> str:
    """An epoch time as the job records show it: ISO 8601, UTC, milliseconds."""
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="milliseconds")


def iso_seconds(epoch_seconds: float) -> str:
    """A fire time (whole seconds) as the scheduler names it."""
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="seconds")


def job_data_json(value: Mapping[str, Any], what: str = "job config") -> str:
    """A job's config or result as stored: checked by the stores' one JSON rule
    (:func:`treadle.storage.check_json`), then sorted JSON.

    :raises ConfigError: the value is not JSON data; names the key and the fix.
    """
    return json.dumps(check_json(value, what), sort_keys=True, allow_nan=False)


def _as_stored(value: Any) -> Any:
    return value


def job_from_row(
    row: Row,
    attempts: tuple[JobAttempt, ...],
    *,
    times: Callable[[Any], str | None] = _as_stored,
) -> Job:
    """A job from a row of a backend's ``jobs`` query.

    :param times: turns the stored ``created_at``/``started_at``/``completed_at`` into ISO
        text (None stays None); stores that keep ISO text already leave the default. The lease
        is an epoch time in every store.
    """
    lease = row["lease_expires_at"] if row["status"] == "running" else None
    return Job(
        job_id=row["job_id"],
        job_type=row["job_type"],
        status=row["status"],
        priority=row["priority"],
        config=json.loads(row["config"]),
        created_at=str(times(row["created_at"])),
        started_at=times(row["started_at"]),
        completed_at=times(row["completed_at"]),
        error_message=row["error_message"],
        worker_id=row["worker_id"],
        retry_count=min(row["failures"], row["max_retries"]),
        max_retries=row["max_retries"],
        attempt=row["attempt"],
        result=None if row["result"] is None else json.loads(row["result"]),
        cancel_requested=bool(row["cancel_requested"]),
        timeout_seconds=row["timeout_seconds"],
        schedule_id=row["schedule_id"],
        lease_expires_at=None if lease is None else iso_time(lease),
        attempts=attempts,
    )


def schedule_from_row(row: Row) -> Schedule:
    """A schedule from a row of a backend's ``schedules`` table."""
    return Schedule(
        schedule_id=row["schedule_id"],
        name=row["name"],
        job_type=row["job_type"],
        config=json.loads(row["config"]),
        schedule_expr=row["schedule_expr"],
        timezone=row["timezone"],
        priority=row["priority"],
        max_retries=row["max_retries"],
        is_paused=bool(row["is_paused"]),
        created_at=row["created_at"],
        last_fire_at=row["last_fire_at"],
        last_job_id=row["last_job_id"],
        fires_after=row["fires_after"],
    )
