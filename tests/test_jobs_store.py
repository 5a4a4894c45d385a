"""The job queue's store and JobManager: claims, leases, conditioned writes, retries, cancel,
validation (RELIABILITY.md J3, J7, J8 and the lease semantics), on a real SQLite file."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import treadle_sqlite.plugin
from treadle import hookimpl
from treadle.errors import ConfigError, JobError, UnknownNameError
from treadle.hookspecs import Register
from treadle.jobs.manager import JobManager
from treadle.jobs.records import Claim
from treadle.plugins import PluginManager, make_plugin_manager
from treadle.storage import JobStore

ROOT = Path(__file__).resolve().parents[1]


class Quick:
    def run(self, context: object) -> Mapping[str, Any]:
        return {}


class Picky:
    def validate_config(self, config: Mapping[str, Any]) -> None:
        if "needed" not in config:
            msg = "a picky job needs 'needed' in its config"
            raise ConfigError(msg)

    def run(self, context: object) -> Mapping[str, Any]:
        return {}


class JobTypes:
    @hookimpl
    def treadle_register_job_types(self, register: Register) -> None:
        register("quick", Quick)
        register("picky", Picky)


@pytest.fixture
def plugin_manager() -> PluginManager:
    return make_plugin_manager(
        load_entry_points=False,
        plugins=[("sqlite", treadle_sqlite.plugin), ("jobtypes", JobTypes())],
    )


@pytest.fixture
def manager(tmp_path: Path, plugin_manager: PluginManager) -> JobManager:
    return JobManager(tmp_path / "jobs.db", plugin_manager=plugin_manager)


@pytest.fixture
def store(manager: JobManager) -> JobStore:
    return manager.store


def _submit(manager: JobManager, count: int = 1, **options: Any) -> list[int]:
    return [manager.submit_job("quick", {"n": n}, **options) for n in range(count)]


def _claim(store: JobStore, worker_id: str = "w1", lease: float = 30.0) -> Claim:
    claim = store.claim(worker_id, lease_seconds=lease)
    assert claim is not None
    return claim


# -- claims -------------------------------------------------------------------------------


def test_a_claim_sets_running_worker_attempt_and_lease_at_once(
    manager: JobManager, store: JobStore
) -> None:
    (job_id,) = _submit(manager)
    before = time.time()
    claim = _claim(store, "w1", lease=30.0)
    assert (claim.job_id, claim.worker_id, claim.attempt, claim.failures) == (job_id, "w1", 1, 0)
    assert claim.config == {"n": 0}
    job = manager.get_job(job_id)
    assert (job.status, job.worker_id, job.attempt) == ("running", "w1", 1)
    assert job.started_at is not None
    assert job.lease_expires_at is not None
    from datetime import datetime

    lease_end = datetime.fromisoformat(job.lease_expires_at).timestamp()
    assert before + 29 < lease_end < time.time() + 31
    assert [(a.attempt, a.worker_id, a.outcome) for a in job.attempts] == [(1, "w1", "running")]
    assert store.claim("w2", lease_seconds=30) is None  # nothing else pending


def test_j8_claims_go_by_priority_descending_then_submission(
    manager: JobManager, store: JobStore
) -> None:
    priorities = [5, 1, 10, 5, 7, 10, 1, 3]
    ids = [manager.submit_job("quick", {}, priority=p) for p in priorities]
    claimed = [_claim(store).job_id for _ in ids]
    by_priority = sorted(zip(priorities, ids, strict=True), key=lambda pair: (-pair[0], pair[1]))
    assert claimed == [job_id for _, job_id in by_priority]


@pytest.mark.slow
def test_j3_four_processes_claim_500_jobs_none_twice_none_missing(
    manager: JobManager, tmp_path: Path
) -> None:
    ids = _submit(manager, 500)
    script = textwrap.dedent(
        f"""
        import json, sys
        from treadle_sqlite.job_store import SQLiteJobStore
        store = SQLiteJobStore({str(tmp_path / "jobs.db")!r})
        worker, done = sys.argv[1], []
        while (claim := store.claim(worker, lease_seconds=60)) is not None:
            assert store.complete(claim, {{"by": worker}})
            done.append(claim.job_id)
        print(json.dumps(done))
        """
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, f"p{n}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for n in range(4)
    ]
    claimed: Counter[int] = Counter()
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-2000:]
        assert "database is locked" not in err
        claimed.update(json.loads(out))
    assert claimed == Counter(ids)  # every job once: none twice, none missing
    jobs = manager.list_jobs(limit=None)
    assert Counter((job.status, job.attempt) for job in jobs) == {("completed", 1): 500}
    assert all(job.result == {"by": job.worker_id} for job in jobs)


# -- leases and conditioned writes --------------------------------------------------------


def test_j2_writes_of_a_claim_that_lost_its_lease_change_nothing(
    manager: JobManager, store: JobStore
) -> None:
    (job_id,) = _submit(manager)
    stale = _claim(store, "w1", lease=0.05)
    time.sleep(0.1)
    fresh = _claim(store, "w2")  # the expired lease is reclaimed
    assert (fresh.job_id, fresh.attempt, fresh.failures) == (job_id, 2, 1)
    before = manager.get_job(job_id)
    assert store.heartbeat(stale, lease_seconds=30) == "lost"
    assert store.complete(stale, {"late": True}) is False
    assert store.fail(stale, "late failure", outcome="failed", retry_delay=0) is None
    assert store.release(stale, "late hand-back") is False
    assert store.mark_cancelled(stale, "late cancel") is False
    assert manager.get_job(job_id) == before
    assert [(a.worker_id, a.outcome) for a in before.attempts] == [
        ("w1", "lease_expired"),
        ("w2", "running"),
    ]
    assert store.heartbeat(fresh, lease_seconds=30) == "ok"
    assert store.complete(fresh, {"by": "w2"}) is True
    assert manager.get_job(job_id).result == {"by": "w2"}


def test_j1_an_expired_lease_with_no_retries_left_fails_the_job(
    manager: JobManager, store: JobStore
) -> None:
    (job_id,) = _submit(manager, max_retries=0)
    _claim(store, "w1", lease=0.01)
    time.sleep(0.05)
    assert store.claim("w2", lease_seconds=30) is None
    job = manager.get_job(job_id)
    assert job.status == "failed"
    assert "stopped renewing its lease" in (job.error_message or "")
    assert "no retries left (0 allowed)" in (job.error_message or "")


def test_a_heartbeat_keeps_the_lease(manager: JobManager, store: JobStore) -> None:
    _submit(manager)
    claim = _claim(store, "w1", lease=0.2)
    for _ in range(4):
        time.sleep(0.1)
        assert store.heartbeat(claim, lease_seconds=0.2) == "ok"
    assert store.claim("w2", lease_seconds=30) is None


# -- retries, release ------------------------------------------------------------------


def test_j4_a_failed_attempt_is_not_claimable_before_its_backoff(
    manager: JobManager, store: JobStore
) -> None:
    (job_id,) = _submit(manager, max_retries=2)
    claim = _claim(store)
    assert store.fail(claim, "Traceback: boom", outcome="failed", retry_delay=0.3) == "pending"
    assert store.claim("w1", lease_seconds=30) is None
    time.sleep(0.35)
    again = _claim(store)
    assert (again.job_id, again.attempt, again.failures, again.retries_left) == (job_id, 2, 1, 1)
    assert store.fail(again, "boom 2", outcome="died", retry_delay=0) == "pending"
    last = _claim(store)
    assert store.fail(last, "boom 3", outcome="timed_out", retry_delay=0) == "failed"
    job = manager.get_job(job_id)
    assert (job.status, job.retry_count, job.error_message) == ("failed", 2, "boom 3")
    assert [(a.outcome, a.retry_delay) for a in job.attempts] == [
        ("failed", 0.3),
        ("died", 0.0),
        ("timed_out", None),
    ]
    assert job.completed_at is not None


def test_a_handed_back_job_is_claimable_at_once_and_not_a_failure(
    manager: JobManager, store: JobStore
) -> None:
    (job_id,) = _submit(manager, max_retries=0)
    assert store.release(_claim(store, "w1"), "worker shut down") is True
    again = _claim(store, "w2")
    assert (again.job_id, again.attempt, again.failures) == (job_id, 2, 0)
    assert store.complete(again, {}) is True
    job = manager.get_job(job_id)
    assert (job.status, job.retry_count) == ("completed", 0)
    assert [a.outcome for a in job.attempts] == ["handed_back", "completed"]


# -- cancel ----------------------------------------------------------------------------------


def test_j7_cancel_of_pending_running_and_finished_jobs(
    manager: JobManager, store: JobStore
) -> None:
    pending, running, finished = _submit(manager, 3, priority=5)
    manager.cancel_job(pending)
    assert manager.get_job(pending).status == "cancelled"
    first = _claim(store)
    assert first.job_id == running  # the cancelled one is never claimed
    job = manager.cancel_job(running)
    assert (job.status, job.cancel_requested) == ("running", True)
    assert store.heartbeat(first, lease_seconds=30) == "cancel"
    assert store.mark_cancelled(first, "stopped") is True
    assert manager.get_job(running).status == "cancelled"
    assert store.complete(_claim(store), {}) is True
    for job_id, status in ((finished, "completed"), (pending, "cancelled")):
        with pytest.raises(JobError, match=f"Job {job_id} is already {status}; only pending"):
            manager.cancel_job(job_id)
    with pytest.raises(UnknownNameError, match="No job 999"):
        manager.cancel_job(999)


def test_a_cancelled_running_job_whose_worker_died_ends_cancelled(
    manager: JobManager, store: JobStore
) -> None:
    (job_id,) = _submit(manager)
    _claim(store, "w1", lease=0.01)
    manager.cancel_job(job_id)
    time.sleep(0.05)
    assert store.claim("w2", lease_seconds=30) is None
    assert manager.get_job(job_id).status == "cancelled"


# -- submitting ---------------------------------------------------------------------------


@pytest.mark.parametrize("priority", [0, 11, True, "5", 2.5])
def test_a_priority_outside_1_to_10_is_refused(manager: JobManager, priority: Any) -> None:
    with pytest.raises(ConfigError, match="priority"):
        manager.submit_job("quick", {}, priority=priority)


def test_bad_submissions_are_refused_with_the_reason(manager: JobManager) -> None:
    with pytest.raises(ConfigError, match="max_retries must be an integer >= 0: -1"):
        manager.submit_job("quick", {}, max_retries=-1)
    with pytest.raises(UnknownNameError, match=r"Unknown job type 'trainig'.*picky, quick"):
        manager.submit_job("trainig", {})
    with pytest.raises(ConfigError, match="a picky job needs 'needed'"):
        manager.submit_job("picky", {})
    with pytest.raises(ConfigError, match="JSON data"):
        manager.submit_job("quick", {"value": math.nan})
    with pytest.raises(ConfigError, match="JSON data"):
        manager.submit_job("quick", {"value": object()})
    with pytest.raises(ConfigError, match="mapping"):
        manager.submit_job("quick", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'timeout_minutes' must be > 0: 0"):
        manager.submit_job("quick", {"timeout_minutes": 0})
    assert manager.list_jobs() == []
    job_id = manager.submit_job("picky", {"needed": 1, "timeout_minutes": 0.5})
    assert manager.get_job(job_id).timeout_seconds == 30.0


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({1: "x"}, r"job config has a key that is not a string: 1"),
        ({"a": {"b": math.inf}}, r"job config\.a\.b is inf"),
        ({"steps": [1, {2}]}, r"job config\.steps\[1\] holds a set"),
    ],
)
def test_x3_one_json_rule_for_job_configs_on_submit_and_in_the_store(
    manager: JobManager, store: JobStore, config: dict[Any, Any], message: str
) -> None:
    """``{1: "x"}`` was stored as ``{"1": "x"}`` while ExperimentDB refused it: one rule now,
    at the facade and in the store, for configs, schedules and results alike."""
    with pytest.raises(ConfigError, match=message):
        manager.submit_job("quick", config)
    with pytest.raises(ConfigError, match=message):
        store.enqueue("quick", config, priority=5, max_retries=0)
    with pytest.raises(ConfigError, match=message):
        store.add_schedule(
            name="nightly",
            job_type="quick",
            config=config,
            schedule_expr="0 2 * * *",
            timezone="UTC",
            priority=5,
            max_retries=0,
        )
    assert manager.list_jobs() == []
    assert store.schedules() == []
    _submit(manager)
    claim = _claim(store)
    with pytest.raises(ConfigError, match=message.replace("job config", "job result")):
        store.complete(claim, config)
    assert manager.get_job(claim.job_id).status == "running"


def test_x3_deep_or_huge_job_configs_are_refused_naming_the_limit(manager: JobManager) -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(100_000):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(ConfigError, match=r"job config\.a\.a.* nests deeper than 64 levels"):
        manager.submit_job("quick", deep)
    with pytest.raises(ConfigError, match=r"job config is 5\.0 MiB as JSON; .* at most 4 MiB"):
        manager.submit_job("quick", {"blob": "x" * 5 * 2**20})
    assert manager.list_jobs() == []


def test_jobs_are_listed_newest_first_by_status_and_type(
    manager: JobManager, store: JobStore
) -> None:
    quick = _submit(manager, 3)
    picky = manager.submit_job("picky", {"needed": True})
    store.complete(_claim(store), {"ok": 1})
    assert [job.job_id for job in manager.list_jobs()] == [picky, *reversed(quick)]
    assert [job.job_id for job in manager.list_jobs(status="completed")] == [quick[0]]
    assert [job.job_id for job in manager.list_jobs(job_type="picky")] == [picky]
    assert [job.job_id for job in manager.list_jobs(limit=2)] == [picky, quick[2]]
    assert store.counts() == {"completed": 1, "pending": 3}
    with pytest.raises(ConfigError, match="Unknown job status 'done'"):
        manager.list_jobs(status="done")
    with pytest.raises(UnknownNameError, match="No job 42"):
        manager.get_job(42)


def test_wait_job_returns_the_finished_job_or_says_what_it_waits_for(
    manager: JobManager, store: JobStore
) -> None:
    first, second = _submit(manager, 2)
    with pytest.raises(JobError, match=f"Job {first} is still pending after 0.05 s"):
        manager.wait_job(first, 0.05, poll_seconds=0.01)
    store.complete(_claim(store), {"n": 1})
    assert manager.wait_job(first, 1).result == {"n": 1}
    assert manager.get_job(second).status == "pending"


def test_the_queue_shares_a_file_with_the_model_registry(
    tmp_path: Path, plugin_manager: PluginManager
) -> None:
    from treadle.model_registry import ModelRegistry

    location = tmp_path / "treadle.db"
    registry = ModelRegistry(location, plugin_manager=plugin_manager)
    registry.register_model("m", "1.0.0", "missing.pt", "classification")
    manager = JobManager(f"sqlite:///{location}", plugin_manager=plugin_manager)
    manager.submit_job("quick", {})
    assert len(manager.list_jobs()) == 1
    tables = {
        row[0]
        for row in sqlite3.connect(location).execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
    }
    assert {"jobs", "job_attempts", "job_schedules", "models"} <= tables


def test_every_job_has_a_key_unique_across_stores_and_kept_across_attempts(
    manager: JobManager, store: JobStore, tmp_path: Path, plugin_manager: PluginManager
) -> None:
    first, second = _submit(manager, 2)
    stale = _claim(store, "w1", lease=0.01)
    time.sleep(0.03)
    claims = {claim.job_id: claim for claim in (_claim(store), _claim(store))}
    assert claims[stale.job_id].job_uid == stale.job_uid != ""
    assert claims[first].job_uid != claims[second].job_uid
    other = JobManager(tmp_path / "other.db", plugin_manager=plugin_manager)
    other.submit_job("quick", {})
    assert _claim(other.store).job_uid not in {claim.job_uid for claim in claims.values()}


def test_a_version_1_queue_migrates_with_its_jobs_and_attempts(
    tmp_path: Path, plugin_manager: PluginManager
) -> None:
    from treadle_sqlite.connection import open_database
    from treadle_sqlite.job_store import MIGRATIONS

    location = tmp_path / "old.db"
    old = open_database(location, "jobs", MIGRATIONS[:1])
    old.execute(
        "INSERT INTO jobs (job_type, status, priority, config, created_at, max_retries,"
        " available_at, attempt) VALUES ('quick', 'pending', 5, '{}', '2026-01-01', 3, 0, 1)"
    )
    old.execute(
        "INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, outcome)"
        " VALUES (1, 1, 'w0', '2026-01-01', 'handed_back')"
    )
    old.close()
    manager = JobManager(location, plugin_manager=plugin_manager)
    job = manager.get_job(1)
    assert [(a.worker_id, a.outcome) for a in job.attempts] == [("w0", "handed_back")]
    claim = _claim(manager.store)
    assert (claim.job_id, claim.attempt, len(claim.job_uid)) == (1, 2, 32)
