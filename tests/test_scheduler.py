"""TrainingScheduler and cron: RELIABILITY.md S1-S4 on a real SQLite file, with real
processes where the fault needs them (schedulers racing, a scheduler killed mid-run)."""

from __future__ import annotations

import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import treadle_sqlite.plugin
from treadle import hookimpl
from treadle.errors import ConfigError, StorageError, UnknownNameError
from treadle.hookspecs import Register
from treadle.jobs.cron import CronSchedule
from treadle.jobs.scheduler import TrainingScheduler
from treadle.plugins import PluginManager, make_plugin_manager

ROOT = Path(__file__).resolve().parents[1]
NEW_YORK = ZoneInfo("America/New_York")
DAY = 86400.0


class Retrain:
    def run(self, context: object) -> Mapping[str, Any]:
        return {}


class JobTypes:
    @hookimpl
    def treadle_register_job_types(self, register: Register) -> None:
        register("retraining", Retrain)


@pytest.fixture
def plugin_manager() -> PluginManager:
    return make_plugin_manager(
        load_entry_points=False,
        plugins=[("sqlite", treadle_sqlite.plugin), ("jobtypes", JobTypes())],
    )


@pytest.fixture
def location(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
def scheduler(location: Path, plugin_manager: PluginManager) -> TrainingScheduler:
    return TrainingScheduler(location, plugin_manager=plugin_manager)


def _daily(scheduler: TrainingScheduler, name: str = "daily", **options: Any) -> int:
    options = {"schedule_expr": "0 2 * * *", **options}
    return scheduler.create_schedule(name, "retraining", {"epochs": 1}, **options)


def _next_fire(scheduler: TrainingScheduler, schedule_id: int) -> float:
    text = scheduler.get_schedule(schedule_id).next_fire_at
    assert text is not None
    return datetime.fromisoformat(text).timestamp()


# -- S3: refused at creation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("61 * * * *", "out of range"),
        ("* * *", "has 3 fields; use five"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4 *", "never fires"),
        ("0 2 * * * *", "has 6 fields"),
        ("*/0 * * * *", "step '0'"),
        ("", "non-empty"),
    ],
)
def test_a_bad_expression_is_refused_at_creation_and_quoted(
    scheduler: TrainingScheduler, expression: str, reason: str
) -> None:
    """RELIABILITY S3: a bad expression is refused at creation, quoted."""
    with pytest.raises(ConfigError, match=reason) as caught:
        _daily(scheduler, schedule_expr=expression)
    if expression:
        assert repr(expression) in str(caught.value)
    assert scheduler.list_schedules() == []


def test_unknown_zones_types_names_and_duplicates_are_refused(
    scheduler: TrainingScheduler,
) -> None:
    """RELIABILITY S3: an unknown time zone is refused at creation."""
    with pytest.raises(ConfigError, match="Unknown time zone 'Mars/Olympus'"):
        _daily(scheduler, timezone="Mars/Olympus")
    with pytest.raises(ConfigError, match="Unknown time zone 'utc'"):
        _daily(scheduler, timezone="utc")  # IANA names are case-sensitive
    with pytest.raises(UnknownNameError, match="Unknown job type 'retrain'"):
        scheduler.create_schedule("x", "retrain", {}, "0 2 * * *")
    with pytest.raises(ConfigError, match="schedule name"):
        _daily(scheduler, name=" ")
    with pytest.raises(ConfigError, match="priority"):
        _daily(scheduler, priority=0)
    _daily(scheduler)
    with pytest.raises(StorageError, match="A schedule named 'daily' exists"):
        _daily(scheduler)
    assert [s.name for s in scheduler.list_schedules()] == ["daily"]


# -- firing -------------------------------------------------------------------------------


def test_a_due_fire_time_is_enqueued_once(scheduler: TrainingScheduler) -> None:
    schedule_id = _daily(scheduler, priority=8, max_retries=1)
    fire_at = _next_fire(scheduler, schedule_id)
    assert scheduler.run_pending(fire_at - 1) == []
    (fired,) = scheduler.run_pending(fire_at + 60)
    assert (fired.schedule_id, fired.skipped) == (schedule_id, 0)
    assert fired.fire_time == datetime.fromtimestamp(fire_at, UTC).isoformat(timespec="seconds")
    assert fired.job_id is not None
    assert scheduler.run_pending(fire_at + 120) == []  # once
    job = scheduler.manager.get_job(fired.job_id)
    assert (job.job_type, job.config, job.priority, job.max_retries, job.schedule_id) == (
        "retraining",
        {"epochs": 1},
        8,
        1,
        schedule_id,
    )
    schedule = scheduler.get_schedule(schedule_id)
    assert (schedule.last_job_id, schedule.last_fire_at) == (fired.job_id, fired.fire_time)
    assert _next_fire(scheduler, schedule_id) >= fire_at + DAY - 3600  # tomorrow


def test_after_downtime_only_the_latest_missed_fire_runs_and_the_log_says_so(
    scheduler: TrainingScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    schedule_id = _daily(scheduler)
    first = _next_fire(scheduler, schedule_id)
    with caplog.at_level(logging.WARNING, logger="treadle.jobs.scheduler"):
        (fired,) = scheduler.run_pending(first + 3 * DAY + 60)
    assert fired.skipped == 3
    assert fired.fire_time == CronSchedule.iso(first + 3 * DAY)
    assert "missed 3 fire times while no scheduler ran; enqueued only the latest" in caplog.text
    assert len(scheduler.manager.list_jobs()) == 1


def test_missed_all_enqueues_every_missed_fire_time(scheduler: TrainingScheduler) -> None:
    schedule_id = _daily(scheduler)
    first = _next_fire(scheduler, schedule_id)
    fired = scheduler.run_pending(first + 2 * DAY + 60, missed="all")
    assert [f.fire_time for f in fired] == [CronSchedule.iso(first + n * DAY) for n in range(3)]
    assert len({f.job_id for f in fired}) == 3
    with pytest.raises(ConfigError, match="missed must be one of latest, all"):
        scheduler.run_pending(missed="some")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="aware datetime"):
        scheduler.run_pending(datetime(2099, 1, 1))


def test_paused_schedules_do_not_fire_and_resume_without_catch_up(
    scheduler: TrainingScheduler,
) -> None:
    schedule_id = _daily(scheduler, schedule_expr="* * * * *")
    scheduler.pause_schedule(schedule_id)
    assert scheduler.get_schedule(schedule_id).is_paused
    assert scheduler.get_schedule(schedule_id).next_fire_at is None
    assert scheduler.run_pending(time.time() + 3600) == []
    scheduler.resume_schedule(schedule_id)
    (fired,) = scheduler.run_pending(time.time() + 60)
    assert fired.skipped == 0  # the paused hour is not made up
    triggered = scheduler.trigger_schedule(schedule_id)
    assert scheduler.manager.get_job(triggered).config == {"epochs": 1}
    scheduler.delete_schedule(schedule_id)
    assert scheduler.list_schedules() == []
    assert len(scheduler.manager.list_jobs()) == 2  # its jobs stay
    with pytest.raises(UnknownNameError, match=f"No schedule {schedule_id}"):
        scheduler.trigger_schedule(schedule_id)


# -- S2: daylight saving ------------------------------------------------------------------


def _walk(
    scheduler: TrainingScheduler, start: datetime, end: datetime, step_minutes: int = 30
) -> list[datetime]:
    """run_pending every few minutes from ``start`` to ``end``; the local fire times that
    enqueued a job (the first call's catch-up excluded)."""
    scheduler.run_pending(start)
    fired: list[datetime] = []
    moment = start
    while moment < end:
        moment += timedelta(minutes=step_minutes)
        for entry in scheduler.run_pending(moment):
            assert entry.job_id is not None
            fired.append(datetime.fromisoformat(entry.fire_time).astimezone(NEW_YORK))
    return fired


def test_a_schedule_in_a_skipped_hour_fires_once_on_the_spring_forward_day(
    scheduler: TrainingScheduler,
) -> None:
    """RELIABILITY S2: once per local day across the spring-forward change."""
    # New York springs forward on 2099-03-08 at 02:00: 02:30 does not exist that day
    _daily(scheduler, schedule_expr="30 2 * * *", timezone="America/New_York")
    fired = _walk(
        scheduler, datetime(2099, 3, 6, 12, tzinfo=NEW_YORK), datetime(2099, 3, 10, tzinfo=NEW_YORK)
    )
    assert [moment.strftime("%m-%d %H:%M %Z") for moment in fired] == [
        "03-07 02:30 EST",
        "03-08 03:30 EDT",  # 02:30 EST: the same time after midnight, once
        "03-09 02:30 EDT",
    ]


def test_a_schedule_in_a_repeated_hour_fires_once_on_the_fall_back_day(
    scheduler: TrainingScheduler,
) -> None:
    """RELIABILITY S2: once per local day across the fall-back change."""
    # New York falls back on 2099-11-01 at 02:00: 01:30 happens twice (croniter fires twice)
    _daily(scheduler, schedule_expr="30 1 * * *", timezone="America/New_York")
    fired = _walk(
        scheduler,
        datetime(2099, 10, 30, 12, tzinfo=NEW_YORK),
        datetime(2099, 11, 3, tzinfo=NEW_YORK),
    )
    assert [moment.strftime("%m-%d %H:%M %Z") for moment in fired] == [
        "10-31 01:30 EDT",
        "11-01 01:30 EDT",  # the first pass only
        "11-02 01:30 EST",
    ]


def test_hourly_fire_times_across_both_changes_are_never_doubled() -> None:
    """RELIABILITY S2: no fire time doubled across either change."""
    cron = CronSchedule("*/30 * * * *", "America/New_York")
    for start in (
        datetime(2099, 3, 7, 12, tzinfo=NEW_YORK),
        datetime(2099, 10, 31, 12, tzinfo=NEW_YORK),
    ):
        moment, seen = start.timestamp(), []
        while moment < start.timestamp() + DAY:
            moment = cron.next_after(moment)
            seen.append(moment)
        assert seen == sorted(set(seen))  # strictly increasing: no fire time twice
        local = [datetime.fromtimestamp(m, NEW_YORK).strftime("%m-%d %H:%M") for m in seen]
        assert len(local) == len(set(local))  # each local day and wall time at most once


# -- S1: schedulers racing ----------------------------------------------------------------

_SCHEDULER_SCRIPT = """
import sys, time
from treadle.jobs.scheduler import TrainingScheduler
location, start, now, rounds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
scheduler = TrainingScheduler(location)
while time.time() < start:
    time.sleep(0.001)
for _ in range(rounds):
    scheduler.run_pending(now)
"""


def _light_env() -> dict[str, str]:
    """A subprocess environment whose plugin discovery loads only the sqlite plugin."""
    import importlib.metadata

    names = {entry.name for entry in importlib.metadata.entry_points(group="treadle")}
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TREADLE_DISABLE_PLUGINS": ",".join(sorted(names - {"sqlite"})),
    }


@pytest.mark.slow
def test_three_schedulers_ticking_one_fire_time_enqueue_one_job_each(
    scheduler: TrainingScheduler, location: Path
) -> None:
    ids = [_daily(scheduler, name=f"s{n}", schedule_expr="0 * * * *") for n in range(5)]
    now = max(_next_fire(scheduler, schedule_id) for schedule_id in ids) + 60
    start = time.time() + 1.5
    script = textwrap.dedent(_SCHEDULER_SCRIPT)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(location), str(start), str(now), "20"],
            env=_light_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for process in processes:
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err[-2000:]
    jobs = scheduler.manager.list_jobs(limit=None)
    assert Counter(job.schedule_id for job in jobs) == Counter(ids)  # one per schedule


# -- S4: a scheduler killed mid-run -------------------------------------------------------


def test_a_fire_time_enqueued_whose_bookkeeping_was_lost_is_not_enqueued_again(
    scheduler: TrainingScheduler, location: Path
) -> None:
    schedule_id = _daily(scheduler)
    before = scheduler.get_schedule(schedule_id).fires_after
    fire_at = _next_fire(scheduler, schedule_id)
    (fired,) = scheduler.run_pending(fire_at + 1)
    # the state a crash between the job's insert and the schedule's update would leave
    with sqlite3.connect(location) as db:
        db.execute(
            "UPDATE job_schedules SET fires_after = ? WHERE schedule_id = ?", (before, schedule_id)
        )
    (again,) = scheduler.run_pending(fire_at + 2)
    assert (again.fire_time, again.job_id) == (fired.fire_time, None)
    assert len(scheduler.manager.list_jobs()) == 1
    assert scheduler.get_schedule(schedule_id).fires_after == fire_at  # bookkeeping repaired


_KILLABLE_SCRIPT = """
import sys
from treadle.jobs.scheduler import TrainingScheduler
location, first, count = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
scheduler = TrainingScheduler(location)
print("ready", flush=True)
for hour in range(count):
    scheduler.run_pending(first + hour * 3600 + 1)
print("done", flush=True)
"""


@pytest.mark.slow
def test_schedulers_killed_at_random_points_leave_one_job_per_fire_time(
    scheduler: TrainingScheduler, location: Path
) -> None:
    ids = [_daily(scheduler, name=f"h{n}", schedule_expr="0 * * * *") for n in range(3)]
    first = max(_next_fire(scheduler, schedule_id) for schedule_id in ids)
    hours = 120
    script = textwrap.dedent(_KILLABLE_SCRIPT)
    command = [sys.executable, "-c", script, str(location), str(first), str(hours)]
    chance = random.Random(7)
    interrupted = 0  # kills that landed with part of the work done
    for _ in range(6):
        process = subprocess.Popen(command, env=_light_env(), stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        time.sleep(chance.uniform(0.0, 0.4))
        process.send_signal(signal.SIGKILL)
        process.wait()
        enqueued = len(scheduler.manager.list_jobs(limit=None))
        interrupted += 0 < enqueued < 3 * hours
    assert interrupted >= 2, "the kills all missed the run; make the run longer"
    out = subprocess.run(command, env=_light_env(), capture_output=True, text=True, timeout=60)
    assert out.stdout == "ready\ndone\n", out.stderr[-2000:]
    jobs = scheduler.manager.list_jobs(limit=None)
    # each schedule fired once per hourly fire time: none missing, none twice, whatever the
    # kills interrupted
    assert Counter(job.schedule_id for job in jobs) == {schedule_id: hours for schedule_id in ids}
    with sqlite3.connect(location) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        duplicates = db.execute(
            "SELECT dedupe_key, COUNT(*) FROM jobs GROUP BY dedupe_key HAVING COUNT(*) > 1"
        ).fetchall()
    assert duplicates == []
