"""TrainingScheduler: cron schedules that enqueue jobs, exactly once per schedule and fire time.

``run_pending(now)`` enqueues each due fire time under a unique key ``schedule-<id>-<fire
time>``, in the same transaction that moves the schedule past it; so schedulers running at
once, or one killed half-way and run again, enqueue one job per fire time. After downtime only
the latest missed fire time is enqueued, and the log says how many were skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs

from treadle.errors import ConfigError, TreadleError
from treadle.jobs.cron import CronSchedule
from treadle.jobs.manager import (
    DEFAULT_LOCATION,
    JobManager,
    check_priority,
    check_retries,
)
from treadle.jobs.records import Schedule
from treadle.storage import check_name

if TYPE_CHECKING:
    from treadle.plugins import PluginManager

__all__ = ["MISSED_POLICIES", "FiredSchedule", "MissedPolicy", "TrainingScheduler"]

logger = logging.getLogger(__name__)

#: What ``run_pending`` does with fire times missed while no scheduler ran: enqueue only the
#: ``latest`` (the default: a daily retrain that missed three days runs once), or ``all``.
MissedPolicy = Literal["latest", "all"]
MISSED_POLICIES: tuple[MissedPolicy, ...] = ("latest", "all")

#: the most fire times one ``run_pending`` enqueues for one schedule under ``missed="all"``
_MAX_CATCH_UP = 100


@attrs.frozen(kw_only=True)
class FiredSchedule:
    """One fire time that ``run_pending`` handled.

    :ivar job_id: the job enqueued, or ``None`` when another scheduler (or an earlier,
        interrupted run) had enqueued this fire time already.
    :ivar skipped: earlier fire times missed while no scheduler ran, not enqueued.
    """

    schedule_id: int
    name: str
    fire_time: str
    job_id: int | None
    skipped: int = 0


class TrainingScheduler:
    """Cron schedules stored beside the job queue.

    :param location: the job store (see :class:`~treadle.jobs.manager.JobManager`).
    :param plugin_manager: where job types are looked up (default: the global manager).
    """

    def __init__(
        self,
        location: str | Path = DEFAULT_LOCATION,
        *,
        plugin_manager: PluginManager | None = None,
    ) -> None:
        self.manager = JobManager(location, plugin_manager=plugin_manager)
        self.store = self.manager.store

    def close(self) -> None:
        self.manager.close()

    def __enter__(self) -> TrainingScheduler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def create_schedule(
        self,
        name: str,
        job_type: str,
        config: Mapping[str, Any],
        schedule_expr: str,
        priority: int = 5,
        timezone: str = "UTC",
        max_retries: int = 3,
    ) -> int:
        """Store a schedule; it first fires at the first fire time after now.

        :param schedule_expr: five-field cron (``'0 2 * * *'``: daily at 02:00) or an alias
            (``@daily``), read in ``timezone``.
        :param timezone: an IANA name (``'Europe/Berlin'``).
        :returns: the schedule's id.
        :raises ConfigError: a bad expression or time zone (quoted), priority or retries.
        :raises UnknownNameError: an unknown job type, listing the registered ones.
        :raises StorageError: a schedule of this name exists.
        """
        check_name(name, "schedule name")
        CronSchedule(schedule_expr, timezone)
        priority = check_priority(priority)
        max_retries = check_retries(max_retries)
        self.manager.check_job(job_type, config)
        schedule_id = self.store.add_schedule(
            name=name,
            job_type=job_type,
            config=dict(config),
            schedule_expr=schedule_expr,
            timezone=timezone,
            priority=priority,
            max_retries=max_retries,
        )
        logger.info("schedule %r (%s, %s) created", name, schedule_expr, timezone)
        return schedule_id

    def list_schedules(self) -> list[Schedule]:
        """Every schedule with its next fire time."""
        return [self._with_next(schedule) for schedule in self.store.schedules()]

    def get_schedule(self, schedule_id: int) -> Schedule:
        """One schedule with its next fire time.

        :raises UnknownNameError: no schedule has this id.
        """
        return self._with_next(self.store.schedule(schedule_id))

    def _with_next(self, schedule: Schedule) -> Schedule:
        if schedule.is_paused:
            return schedule
        cron = CronSchedule(schedule.schedule_expr, schedule.timezone)
        next_fire = cron.next_after(max(schedule.fires_after, time.time()))
        return attrs.evolve(schedule, next_fire_at=CronSchedule.iso(next_fire))

    def pause_schedule(self, schedule_id: int) -> None:
        """Stop firing until resumed."""
        self.store.set_paused(schedule_id, True)

    def resume_schedule(self, schedule_id: int) -> None:
        """Fire again, from the first fire time after now (the paused time is not made up)."""
        self.store.set_paused(schedule_id, False)

    def delete_schedule(self, schedule_id: int) -> None:
        """Delete a schedule; the jobs it enqueued stay."""
        self.store.delete_schedule(schedule_id)

    def trigger_schedule(self, schedule_id: int) -> int:
        """Enqueue the schedule's job now, outside its cron times; returns the job's id."""
        schedule = self.store.schedule(schedule_id)
        return self.manager.submit_job(
            schedule.job_type,
            schedule.config,
            priority=schedule.priority,
            max_retries=schedule.max_retries,
        )

    def run_pending(
        self, now: datetime | float | None = None, *, missed: MissedPolicy = "latest"
    ) -> list[FiredSchedule]:
        """Enqueue every active schedule's due fire times, each exactly once however many
        schedulers run: a job carries the unique key ``schedule-<id>-<fire time>``, written in
        the transaction that moves the schedule past that time.

        :param now: the time to check against (an aware ``datetime`` or seconds since the
            epoch); default: now.
        :param missed: fire times missed while no scheduler ran: enqueue the ``latest`` only
            (logged with the count skipped) or ``all`` (at most 100 per call).
        :returns: one entry per fire time handled, oldest first per schedule.
        :raises ConfigError: ``now`` is a naive datetime, or ``missed`` is unknown.
        """
        if missed not in MISSED_POLICIES:
            msg = f"missed must be one of {', '.join(MISSED_POLICIES)}: {missed!r}"
            raise ConfigError(msg)
        now_epoch = _epoch(now)
        fired: list[FiredSchedule] = []
        for schedule in self.store.schedules():
            if schedule.is_paused:
                continue
            try:
                fired.extend(self._fire_due(schedule, now_epoch, missed))
            except TreadleError as err:
                # one broken schedule must not stop the others
                logger.error("schedule %r not fired: %s", schedule.name, err)
        return fired

    def _fire_due(
        self, schedule: Schedule, now_epoch: float, missed: MissedPolicy
    ) -> list[FiredSchedule]:
        cron = CronSchedule(schedule.schedule_expr, schedule.timezone)
        latest, count = cron.due(schedule.fires_after, now_epoch)
        if latest is None:
            return []
        if missed == "all":
            fire_times: list[float] = []
            after = schedule.fires_after
            while (
                len(fire_times) < _MAX_CATCH_UP and (after := cron.next_after(after)) <= now_epoch
            ):
                fire_times.append(after)
        else:
            fire_times = [latest]
        skipped = count - len(fire_times)
        if skipped > 0:
            logger.warning(
                "schedule %r missed %s%d fire times while no scheduler ran; enqueued only %s",
                schedule.name,
                "at least " if count >= 1000 else "",
                skipped,
                "the latest" if missed == "latest" else f"the first {len(fire_times)}",
            )
        fired = []
        for fire_at in fire_times:
            fire_time = CronSchedule.iso(fire_at)
            job_id = self.store.fire_schedule(
                schedule, fire_at, f"schedule-{schedule.schedule_id}-{fire_time}"
            )
            if job_id is None:
                logger.info("schedule %r: %s was enqueued already", schedule.name, fire_time)
            else:
                logger.info("schedule %r fired for %s: job %d", schedule.name, fire_time, job_id)
            fired.append(
                FiredSchedule(
                    schedule_id=schedule.schedule_id,
                    name=schedule.name,
                    fire_time=fire_time,
                    job_id=job_id,
                    skipped=max(skipped, 0) if fire_at == fire_times[-1] else 0,
                )
            )
        return fired

    def run(
        self,
        *,
        poll_seconds: float = 30.0,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        """Call :meth:`run_pending` every ``poll_seconds`` until ``should_stop()`` is true."""
        while not should_stop():
            self.run_pending()
            deadline = time.monotonic() + poll_seconds
            while not should_stop() and time.monotonic() < deadline:
                time.sleep(min(0.2, poll_seconds))


def _epoch(now: datetime | float | None) -> float:
    if now is None:
        return time.time()
    if isinstance(now, datetime):
        if now.tzinfo is None:
            msg = f"run_pending(now=...) needs an aware datetime (with tzinfo): {now!r}"
            raise ConfigError(msg)
        return now.timestamp()
    return float(now)
