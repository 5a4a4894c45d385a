"""The job queue and the scheduler on PostgreSQL: the very tests the SQLite store passes
(imported from tests/test_jobs_store.py and tests/test_scheduler.py, run here against a
throwaway server), and what only PostgreSQL needs: claims that skip rows other transactions
hold, 4 processes over 500 jobs (J3), schedulers in separate processes racing (S1), lost
bookkeeping (S4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

import treadle_postgres.plugin
import treadle_sqlite.plugin
from tests import test_jobs_store, test_scheduler
from tests.test_jobs_store import (  # the SQLite suite, run again on PostgreSQL
    _claim,
    _submit,
    test_a_cancelled_running_job_whose_worker_died_ends_cancelled,
    test_a_claim_sets_running_worker_attempt_and_lease_at_once,
    test_a_handed_back_job_is_claimable_at_once_and_not_a_failure,
    test_a_heartbeat_keeps_the_lease,
    test_a_priority_outside_1_to_10_is_refused,
    test_bad_submissions_are_refused_with_the_reason,
    test_every_job_has_a_key_unique_across_stores_and_kept_across_attempts,
    test_j1_an_expired_lease_with_no_retries_left_fails_the_job,
    test_j2_writes_of_a_claim_that_lost_its_lease_change_nothing,
    test_j4_a_failed_attempt_is_not_claimable_before_its_backoff,
    test_j7_cancel_of_pending_running_and_finished_jobs,
    test_j8_claims_go_by_priority_descending_then_submission,
    test_jobs_are_listed_newest_first_by_status_and_type,
    test_wait_job_returns_the_finished_job_or_says_what_it_waits_for,
)
from tests.test_scheduler import (  # the SQLite suite, run again on PostgreSQL
    _daily,
    _next_fire,
    test_a_bad_expression_is_refused_at_creation_and_quoted,
    test_a_due_fire_time_is_enqueued_once,
    test_a_schedule_in_a_repeated_hour_fires_once_on_the_fall_back_day,
    test_a_schedule_in_a_skipped_hour_fires_once_on_the_spring_forward_day,
    test_after_downtime_only_the_latest_missed_fire_runs_and_the_log_says_so,
    test_missed_all_enqueues_every_missed_fire_time,
    test_paused_schedules_do_not_fire_and_resume_without_catch_up,
    test_unknown_zones_types_names_and_duplicates_are_refused,
)
from treadle.jobs.manager import JobManager
from treadle.jobs.records import Claim
from treadle.jobs.scheduler import TrainingScheduler
from treadle.plugins import PluginManager, make_plugin_manager
from treadle.storage import JobStore

pytest_plugins = ["tests.postgres_fixtures"]

ROOT = Path(__file__).resolve().parents[1]

__all__ = [
    "test_a_bad_expression_is_refused_at_creation_and_quoted",
    "test_a_cancelled_running_job_whose_worker_died_ends_cancelled",
    "test_a_claim_sets_running_worker_attempt_and_lease_at_once",
    "test_a_due_fire_time_is_enqueued_once",
    "test_j4_a_failed_attempt_is_not_claimable_before_its_backoff",
    "test_a_handed_back_job_is_claimable_at_once_and_not_a_failure",
    "test_a_heartbeat_keeps_the_lease",
    "test_a_priority_outside_1_to_10_is_refused",
    "test_a_schedule_in_a_repeated_hour_fires_once_on_the_fall_back_day",
    "test_a_schedule_in_a_skipped_hour_fires_once_on_the_spring_forward_day",
    "test_after_downtime_only_the_latest_missed_fire_runs_and_the_log_says_so",
    "test_j1_an_expired_lease_with_no_retries_left_fails_the_job",
    "test_bad_submissions_are_refused_with_the_reason",
    "test_j7_cancel_of_pending_running_and_finished_jobs",
    "test_j8_claims_go_by_priority_descending_then_submission",
    "test_every_job_has_a_key_unique_across_stores_and_kept_across_attempts",
    "test_jobs_are_listed_newest_first_by_status_and_type",
    "test_missed_all_enqueues_every_missed_fire_time",
    "test_paused_schedules_do_not_fire_and_resume_without_catch_up",
    "test_unknown_zones_types_names_and_duplicates_are_refused",
    "test_wait_job_returns_the_finished_job_or_says_what_it_waits_for",
    "test_j2_writes_of_a_claim_that_lost_its_lease_change_nothing",
]


# the fixtures the imported tests ask for, on PostgreSQL (sqlite too: one test opens a
# second store in a file)


@pytest.fixture
def plugin_manager() -> PluginManager:
    return make_plugin_manager(
        load_entry_points=False,
        plugins=[
            ("postgres", treadle_postgres.plugin),
            ("sqlite", treadle_sqlite.plugin),
            ("jobtypes", test_jobs_store.JobTypes()),
            ("schedtypes", test_scheduler.JobTypes()),
        ],
    )


@pytest.fixture
def location(postgres_url: str) -> str:
    return postgres_url


@pytest.fixture
def manager(postgres_url: str, plugin_manager: PluginManager) -> JobManager:
    return JobManager(postgres_url, plugin_manager=plugin_manager)


@pytest.fixture
def store(manager: JobManager) -> JobStore:
    return manager.store


@pytest.fixture
def scheduler(location: str, plugin_manager: PluginManager) -> TrainingScheduler:
    return TrainingScheduler(location, plugin_manager=plugin_manager)


def _light_env() -> dict[str, str]:
    """A subprocess environment whose plugin discovery loads only the storage plugins."""
    import importlib.metadata

    names = {entry.name for entry in importlib.metadata.entry_points(group="treadle")}
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TREADLE_DISABLE_PLUGINS": ",".join(sorted(names - {"sqlite", "postgres"})),
    }


# -- claims ------------------------------------------------------------------------------


def test_a_claim_skips_a_job_another_transaction_holds_instead_of_waiting(
    manager: JobManager, store: JobStore, postgres_url: str
) -> None:
    first, second = _submit(manager, 2)
    claims: list[Claim | None] = []
    with psycopg.connect(postgres_url) as other, other.transaction():
        other.execute("SELECT 1 FROM jobs WHERE job_id = %s FOR UPDATE", (first,))
        # in a thread: a claim that waited for the lock would wait for this transaction
        claiming = threading.Thread(
            target=lambda: claims.extend(store.claim(w, lease_seconds=30) for w in ("w1", "w2"))
        )
        claiming.start()
        claiming.join(5)
        waited = claiming.is_alive()
    claiming.join()
    assert not waited, "the claim waited for a row another transaction held"
    assert [None if claim is None else claim.job_id for claim in claims] == [second, None]
    assert _claim(store).job_id == first  # released with the transaction


def test_a_claim_commits_at_once_and_leaves_no_transaction_open(
    manager: JobManager, store: JobStore, postgres_url: str
) -> None:
    (job_id,) = _submit(manager)
    _claim(store)
    with psycopg.connect(postgres_url) as other:
        row = other.execute("SELECT status, worker_id FROM jobs WHERE job_id = %s", (job_id,))
        assert row.fetchone() == ("running", "w1")  # visible to another session at once
        states = other.execute(
            "SELECT state FROM pg_stat_activity WHERE application_name = 'treadle'"
            " AND datname = current_database()"
        ).fetchall()
    assert ("idle in transaction",) not in states


def test_claiming_threads_of_one_store_and_of_many_stores_never_share_a_job(
    manager: JobManager, postgres_url: str, plugin_manager: PluginManager
) -> None:
    ids = _submit(manager, 120)
    claimed: list[int] = []
    lock = threading.Lock()

    def work(store: JobStore, worker: str) -> None:
        while (claim := store.claim(worker, lease_seconds=60)) is not None:
            assert store.complete(claim, {"by": worker})
            with lock:
                claimed.append(claim.job_id)

    stores = [JobManager(postgres_url, plugin_manager=plugin_manager).store for _ in range(3)]
    threads = [
        threading.Thread(target=work, args=(store, f"t{n}"))
        for n, store in enumerate([*stores, manager.store])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert Counter(claimed) == Counter(ids)
    for store in stores:
        store.close()


@pytest.mark.slow
def test_j3_four_processes_claim_500_jobs_none_twice_none_missing(
    manager: JobManager, postgres_url: str
) -> None:
    ids = _submit(manager, 500)
    script = textwrap.dedent(
        """
        import json, sys
        from treadle_postgres.job_store import PostgresJobStore
        store = PostgresJobStore(sys.argv[1])
        worker, done = sys.argv[2], []
        while (claim := store.claim(worker, lease_seconds=60)) is not None:
            assert store.complete(claim, {"by": worker})
            done.append(claim.job_id)
        print(json.dumps(done))
        """
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, postgres_url, f"p{n}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for n in range(4)
    ]
    claimed: Counter[int] = Counter()
    per_process = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-2000:]
        done = json.loads(out)
        per_process.append(len(done))
        claimed.update(done)
    assert claimed == Counter(ids)  # every job once: none twice, none missing
    assert sum(1 for count in per_process if count) >= 2, per_process  # they did share it
    jobs = manager.list_jobs(limit=None)
    assert Counter((job.status, job.attempt) for job in jobs) == {("completed", 1): 500}
    assert all(job.result == {"by": job.worker_id} for job in jobs)


def test_an_expired_lease_is_reclaimed_once_by_racing_workers(
    manager: JobManager, postgres_url: str, plugin_manager: PluginManager
) -> None:
    (job_id,) = _submit(manager, max_retries=5)
    _claim(manager.store, "dead", lease=0.01)
    time.sleep(0.05)
    stores = [JobManager(postgres_url, plugin_manager=plugin_manager).store for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    claims = []

    def reclaim(store: JobStore, worker: str) -> None:
        barrier.wait()
        claims.append(store.claim(worker, lease_seconds=30))

    threads = [
        threading.Thread(target=reclaim, args=(store, f"w{n}")) for n, store in enumerate(stores)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    taken = [claim for claim in claims if claim is not None]
    assert [(claim.job_id, claim.attempt) for claim in taken] == [(job_id, 2)]
    job = manager.get_job(job_id)
    assert [(a.worker_id, a.outcome) for a in job.attempts] == [
        ("dead", "lease_expired"),
        (taken[0].worker_id, "running"),
    ]
    assert job.retry_count == 1
    for store in stores:
        store.close()


def test_leases_are_kept_by_the_servers_clock(
    manager: JobManager, store: JobStore, postgres_url: str
) -> None:
    (job_id,) = _submit(manager)
    claim = _claim(store, lease=30)
    with psycopg.connect(postgres_url) as other:
        row = other.execute(
            "SELECT lease_expires_at - EXTRACT(EPOCH FROM now())::float8 FROM jobs"
            " WHERE job_id = %s",
            (job_id,),
        ).fetchone()
    assert row is not None
    assert 28 < row[0] <= 30
    assert store.heartbeat(claim, lease_seconds=30) == "ok"


# -- schedules ---------------------------------------------------------------------------

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


@pytest.mark.slow
def test_s1_three_scheduler_processes_ticking_one_fire_time_enqueue_one_job_each(
    scheduler: TrainingScheduler, location: str
) -> None:
    ids = [_daily(scheduler, name=f"s{n}", schedule_expr="0 * * * *") for n in range(5)]
    now = max(_next_fire(scheduler, schedule_id) for schedule_id in ids) + 60
    start = time.time() + 2.0
    script = textwrap.dedent(_SCHEDULER_SCRIPT)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, location, str(start), str(now), "20"],
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


def test_s1_threads_firing_one_schedule_at_once_enqueue_one_job(
    scheduler: TrainingScheduler, location: str, plugin_manager: PluginManager
) -> None:
    schedule_id = _daily(scheduler)
    fire_at = _next_fire(scheduler, schedule_id)
    schedule = scheduler.get_schedule(schedule_id)
    stores = [JobManager(location, plugin_manager=plugin_manager).store for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    results: list[int | None] = []

    def fire(store: JobStore) -> None:
        barrier.wait()
        results.append(store.fire_schedule(schedule, fire_at, f"schedule-{schedule_id}-x"))

    threads = [threading.Thread(target=fire, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 6
    assert sum(result is not None for result in results) == 1
    assert len(scheduler.manager.list_jobs()) == 1
    for store in stores:
        store.close()


def test_s4_a_fire_time_enqueued_whose_bookkeeping_was_lost_is_not_enqueued_again(
    scheduler: TrainingScheduler, location: str
) -> None:
    schedule_id = _daily(scheduler)
    before = scheduler.get_schedule(schedule_id).fires_after
    fire_at = _next_fire(scheduler, schedule_id)
    (fired,) = scheduler.run_pending(fire_at + 1)
    # the state a crash between the job's insert and the schedule's update would leave
    with psycopg.connect(location) as db:
        db.execute(
            "UPDATE job_schedules SET fires_after = %s WHERE schedule_id = %s",
            (before, schedule_id),
        )
    (again,) = scheduler.run_pending(fire_at + 2)
    assert (again.fire_time, again.job_id) == (fired.fire_time, None)
    assert len(scheduler.manager.list_jobs()) == 1
    assert scheduler.get_schedule(schedule_id).fires_after == fire_at  # bookkeeping repaired
