"""Cron expressions read in a time zone: validation, and fire times that are right across
daylight-saving changes (each local fire time at most once per day)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from treadle.errors import ConfigError
from treadle.optional import require

__all__ = ["CronSchedule"]

#: cap on the fire times walked to find the latest missed one; past it, jump with get_prev
_MAX_WALK = 1000


class CronSchedule:
    """A five-field cron expression (or ``@daily``, ``@hourly``, ...) in an IANA time zone.

    Fire times are found on the local wall clock and then placed on the time line, so a
    daily schedule fires once per local day across DST changes: a wall time the clock passes
    twice (fall back) fires on its first pass; a wall time the clock skips (spring forward)
    fires once, that many minutes after the jump began (02:30 in New York on the spring-forward
    day fires at 03:30 EDT), as Python's ``fold=0`` places it. croniter alone, given an aware
    time, fires twice on fall-back days.

    :raises ConfigError: the expression or time zone is refused; the message quotes it.
    """

    def __init__(self, schedule_expr: str, timezone: str = "UTC") -> None:
        require("croniter", extra="jobs", feature="CronSchedule")
        from croniter import CroniterError, croniter

        self.expression = schedule_expr
        self.timezone = timezone
        if not isinstance(timezone, str) or not timezone:
            msg = f"time zone must be an IANA name such as 'UTC' or 'Europe/Berlin': {timezone!r}"
            raise ConfigError(msg)
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as err:
            msg = (
                f"Unknown time zone {timezone!r}: use an IANA name such as 'UTC', "
                f"'Europe/Berlin' or 'America/New_York'."
            )
            raise ConfigError(msg) from err
        if not isinstance(schedule_expr, str) or not schedule_expr.strip():
            msg = f"cron expression must be a non-empty string: {schedule_expr!r}"
            raise ConfigError(msg)
        fields = schedule_expr.split()
        if not schedule_expr.startswith("@") and len(fields) != 5:
            msg = (
                f"cron expression {schedule_expr!r} has {len(fields)} fields; use five: "
                f"minute hour day-of-month month day-of-week (e.g. '0 2 * * *')."
            )
            raise ConfigError(msg)
        start = datetime(2000, 1, 1)
        try:
            self._croniter_class = croniter
            croniter(schedule_expr, start).get_next(datetime)
        except CroniterError as err:
            msg = f"cron expression {schedule_expr!r} is refused: {err}"
            if "failed to find next date" in str(err):
                msg = f"cron expression {schedule_expr!r} never fires (no such date)"
            raise ConfigError(msg) from err

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, {self.timezone!r})"

    def _wall(self, epoch: float) -> datetime:
        return datetime.fromtimestamp(epoch, self.zone).replace(tzinfo=None)

    def _place(self, wall: datetime) -> float:
        return wall.replace(tzinfo=self.zone, fold=0).timestamp()

    def next_after(self, epoch: float) -> float:
        """The first fire time strictly after ``epoch`` (seconds since the epoch)."""
        walls = self._croniter_class(self.expression, self._wall(epoch))
        while True:
            fire_at = self._place(walls.get_next(datetime))
            if fire_at > epoch:
                return fire_at

    def latest_at_or_before(self, epoch: float) -> float:
        """The last fire time at or before ``epoch``."""
        walls = self._croniter_class(self.expression, self._wall(epoch) + timedelta(seconds=1))
        while True:
            fire_at = self._place(walls.get_prev(datetime))
            if fire_at <= epoch:
                return fire_at

    def due(self, after: float, until: float) -> tuple[float | None, int]:
        """The latest fire time in ``(after, until]`` and how many fire times that interval
        holds (at least; counting stops at 1000)."""
        fire_at = self.next_after(after)
        if fire_at > until:
            return None, 0
        count, latest = 0, fire_at
        while fire_at <= until and count < _MAX_WALK:
            latest, count = fire_at, count + 1
            fire_at = self.next_after(fire_at)
        if fire_at <= until:
            latest = self.latest_at_or_before(until)
        return latest, count

    @staticmethod
    def iso(epoch: float) -> str:
        """An epoch time as ISO 8601 in UTC, to the second."""
        return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
