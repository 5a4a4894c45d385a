"""The jobs page's data: the queue with attempts, last error, worker and lease; every schedule
with its next fire time in its own time zone; recent retraining decisions with their reasons.

Read through :class:`~treadle.jobs.scheduler.TrainingScheduler` and its JobManager.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from treadle.errors import TreadleError
from treadle.jobs.records import JOB_STATUSES, Job, Schedule
from treadle_ui.runs_view import parse_time

if TYPE_CHECKING:
    from treadle.jobs.scheduler import TrainingScheduler

__all__ = [
    "Decision",
    "JobsPage",
    "ScheduleRow",
    "jobs_page",
    "local_time",
    "retraining_decisions",
    "schedule_rows",
]

#: retraining jobs read for the decisions table
DECISIONS_SHOWN = 20


@attrs.frozen(kw_only=True)
class ScheduleRow:
    """A schedule with its next fire time as its time zone's wall clock shows it.

    :ivar next_local: ``2026-11-02 02:00 CET``; ``None`` when paused or not computable.
    :ivar problem: why no next fire time could be computed (a time zone gone from tzdata).
    """

    schedule: Schedule
    next_local: str | None
    next_utc: datetime | None
    problem: str | None = None


@attrs.frozen(kw_only=True)
class Decision:
    """One retraining job and what it decided.

    :ivar outcome: ``retrained``, ``not retrained``, or the job's status while it has no
        result (``pending``, ``running``, ``failed``, ...).
    """

    job: Job
    model_name: str | None
    outcome: str
    reasons: tuple[str, ...]
    new_model_id: int | None
    parent_model_id: int | None
    drift_score: float | None
    degradation: float | None


@attrs.frozen(kw_only=True)
class JobsPage:
    jobs: tuple[Job, ...]
    counts: dict[str, int]
    status: str | None
    job_type: str | None
    page: int
    page_size: int
    has_next: bool
    statuses: tuple[str, ...]


def local_time(moment: datetime, zone_name: str) -> str:
    """``moment`` on the wall clock of ``zone_name``: ``2026-11-02 02:00 CET``."""
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def _row(schedule: Schedule) -> ScheduleRow:
    moment = parse_time(schedule.next_fire_at)
    return ScheduleRow(
        schedule=schedule,
        next_local=None if moment is None else local_time(moment, schedule.timezone),
        next_utc=moment,
    )


def schedule_rows(scheduler: TrainingScheduler) -> list[ScheduleRow]:
    """Every schedule with its next fire time; one that cannot compute it is shown with why."""
    try:
        return [_row(schedule) for schedule in scheduler.list_schedules()]
    except TreadleError:
        pass
    rows = []
    for stored in scheduler.store.schedules():
        try:
            rows.append(_row(scheduler.get_schedule(stored.schedule_id)))
        except TreadleError as err:
            rows.append(
                ScheduleRow(schedule=stored, next_local=None, next_utc=None, problem=str(err))
            )
    return rows


def jobs_page(
    scheduler: TrainingScheduler,
    *,
    status: str | None,
    job_type: str | None,
    page: int,
    page_size: int,
) -> JobsPage:
    """Page ``page`` (from 1) of the queue, newest first, with the count of jobs per status."""
    page = max(1, page)
    store = scheduler.manager.store
    found = store.list(status=status, job_type=job_type, limit=page * page_size + 1)
    counts = store.counts()
    statuses = tuple(dict.fromkeys([*JOB_STATUSES, *counts]))
    return JobsPage(
        jobs=tuple(found[(page - 1) * page_size : page * page_size]),
        counts=counts,
        status=status,
        job_type=job_type,
        page=page,
        page_size=page_size,
        has_next=len(found) > page * page_size,
        statuses=statuses,
    )


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _model_name(job: Job) -> str | None:
    result = job.result or {}
    if isinstance(result.get("model_name"), str):
        return str(result["model_name"])
    training = job.config.get("training_config")
    if isinstance(training, Mapping) and isinstance(training.get("model_name"), str):
        return str(training["model_name"])
    return None


def decision_of(job: Job) -> Decision:
    """What a retraining job decided, from its result (``decision``: the
    :class:`~treadle.jobs.triggers.RetrainingDecision` as a dict) or its status."""
    result = job.result or {}
    summary = result.get("decision") if isinstance(result.get("decision"), Mapping) else None
    reasons: Sequence[Any] = summary.get("reasons", ()) if summary else ()
    if job.status == "completed":
        outcome = "retrained" if result.get("retrained", True) else "not retrained"
        if not summary and result.get("retrained", True):
            reasons = ("no trigger configured: a scheduled retrain always retrains",)
    else:
        outcome = job.status
        if job.status == "failed" and job.error_message:
            reasons = (job.error_message.strip().splitlines()[-1],)
    new_model = result.get("model_id")
    parent = result.get("parent_model_id")
    return Decision(
        job=job,
        model_name=_model_name(job),
        outcome=outcome,
        reasons=tuple(str(reason) for reason in reasons),
        new_model_id=new_model if isinstance(new_model, int) else None,
        parent_model_id=parent if isinstance(parent, int) else None,
        drift_score=_number(summary.get("drift_score")) if summary else None,
        degradation=_number(summary.get("degradation")) if summary else None,
    )


def retraining_decisions(scheduler: TrainingScheduler) -> list[Decision]:
    """The newest retraining jobs and their decisions."""
    jobs = scheduler.manager.list_jobs(job_type="retraining", limit=DECISIONS_SHOWN)
    return [decision_of(job) for job in jobs]
