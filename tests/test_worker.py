"""Workers as real processes (``treadle worker``) over a real SQLite queue: RELIABILITY.md
J1, J2, J4-J9, and 4 workers over 200 jobs."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import FakeDist
from tests.test_jobs_helpers import JobsEnv, finish, make_jobs_env
from treadle.errors import JobError


@pytest.fixture
def jobs_env(
    tmp_path: Path, fake_plugin_dist: FakeDist, monkeypatch: pytest.MonkeyPatch
) -> JobsEnv:
    return make_jobs_env(tmp_path, fake_plugin_dist, monkeypatch)


def _process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def _seconds_between(earlier: str | None, later: str | None) -> float:
    assert earlier is not None
    assert later is not None
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def test_jobs_complete_with_their_result_attempt_folder_and_log(jobs_env: JobsEnv) -> None:
    manager = jobs_env.manager()
    job_id = manager.submit_job("sleep", jobs_env.config(seconds=0.0))
    report = json.loads(finish(jobs_env.start_worker("w1", "--max-jobs", "1")))
    job = manager.get_job(job_id)
    assert (job.status, job.result, report["completed"]) == (
        "completed",
        {"attempt": 1, "worker": "w1"},
        1,
    )
    folder = jobs_env.tmp / "runs" / f"job-{job_id}-attempt-1"
    assert (folder / "out.txt").read_text() == "done"
    assert (folder / "job.log").exists()
    assert [a.outcome for a in job.attempts] == ["completed"]
    assert report["stop_reason"] == "max_jobs (1) reached"


def test_j3_four_workers_run_each_of_200_jobs_exactly_once(jobs_env: JobsEnv) -> None:
    manager = jobs_env.manager()
    log = jobs_env.tmp / "log"
    ids = [manager.submit_job("touch", {"log": str(log)}) for _ in range(200)]
    workers = [jobs_env.start_worker(f"w{n}", "--idle-exit", "0.5") for n in range(4)]
    reports = [json.loads(finish(worker, 90)) for worker in workers]
    runs = Counter(int(line.split()[0]) for line in log.read_text().splitlines())
    assert runs == Counter(ids)  # each ran, none twice
    assert sum(report["completed"] for report in reports) == 200
    jobs = manager.list_jobs(limit=None)
    assert {(job.status, job.attempt) for job in jobs} == {("completed", 1)}
    # the claim's worker is the one whose child ran the job
    ran_on = {int(line.split()[0]): line.split()[2] for line in log.read_text().splitlines()}
    assert all(ran_on[job.job_id] == job.worker_id for job in jobs)


def test_j4_failing_job_runs_max_retries_plus_one_times_with_growing_capped_backoff(
    jobs_env: JobsEnv,
) -> None:
    manager = jobs_env.manager()
    job_id = manager.submit_job("fail", jobs_env.config(), max_retries=3)
    finish(jobs_env.start_worker("w1", "--max-jobs", "4"))
    job = manager.get_job(job_id)
    assert job.status == "failed"
    assert [a.outcome for a in job.attempts] == ["failed"] * 4
    assert [a.retry_delay for a in job.attempts] == [0.1, 0.2, 0.3, None]  # doubling, capped
    for failed, retried in zip(job.attempts, job.attempts[1:], strict=False):
        waited = _seconds_between(failed.finished_at, retried.started_at)
        assert waited >= (failed.retry_delay or 0.0) - 0.002  # millisecond timestamps
    assert "boom on attempt 4" in (job.error_message or "")  # the last traceback is kept
    assert "Traceback" in (job.attempts[-1].error or "")
    assert "boom on attempt 1" in (job.attempts[0].error or "")  # and each attempt's own
    assert job.retry_count == 3
    log = jobs_env.tmp / "runs" / f"job-{job_id}-attempt-4" / "job.log"
    assert "about to fail" in log.read_text()


def test_j5_child_that_dies_every_time_fails_the_job_and_the_worker_lives_on(
    jobs_env: JobsEnv,
) -> None:
    manager = jobs_env.manager()
    dying = manager.submit_job("die", jobs_env.config(), max_retries=2, priority=9)
    bad = manager.submit_job("bad_result", {}, max_retries=0, priority=5)
    after = manager.submit_job("sleep", jobs_env.config(seconds=0.0), priority=1)
    finish(jobs_env.start_worker("w1", "--max-jobs", "5"))
    job = manager.get_job(dying)
    assert job.status == "failed"
    assert [a.outcome for a in job.attempts] == ["died"] * 3
    assert "child process died without a result (killed by SIGKILL)" in (job.error_message or "")
    assert "not JSON data" in (manager.get_job(bad).error_message or "")
    assert manager.get_job(after).status == "completed"


def test_j6_timeout_kills_the_whole_process_group_and_says_so(jobs_env: JobsEnv) -> None:
    manager = jobs_env.manager()
    pid_file = jobs_env.tmp / "pids"
    job_id = manager.submit_job(
        "hang", jobs_env.config(pid_file=str(pid_file), timeout_minutes=0.01), max_retries=0
    )
    # the worker's default limit (60 min) is higher: the job's own 0.6 s applies
    worker = jobs_env.start_worker("w1", "--max-jobs", "1", "--kill-grace", "0.5")
    jobs_env.wait_for(pid_file.exists)
    child_pid, grandchild_pid = map(int, pid_file.read_text().split())
    finish(worker)
    job = manager.get_job(job_id)
    assert job.status == "failed"
    assert job.attempts[0].outcome == "timed_out"
    assert "timed out after 0.6 s; its process group was stopped" in (job.error_message or "")
    assert _seconds_between(job.attempts[0].started_at, job.completed_at) < 0.6 + 0.5 + 0.5
    jobs_env.wait_for(lambda: _process_gone(child_pid) and _process_gone(grandchild_pid), 2)


def test_j7_cancel_pending_never_runs_running_is_stopped_finished_is_refused(
    jobs_env: JobsEnv,
) -> None:
    manager = jobs_env.manager()
    pending = manager.submit_job("sleep", jobs_env.config(seconds=0.0), priority=1)
    assert manager.cancel_job(pending).status == "cancelled"
    running = manager.submit_job("sleep", jobs_env.config(seconds=30.0))
    worker = jobs_env.start_worker("w1", "--max-jobs", "1")
    jobs_env.wait_for(lambda: bool(jobs_env.marks("started")))
    assert manager.cancel_job(running).cancel_requested
    report = json.loads(finish(worker))
    job = manager.get_job(running)
    assert (job.status, report["cancelled"]) == ("cancelled", 1)
    assert [a.outcome for a in job.attempts] == ["cancelled"]
    assert jobs_env.marks("done") == []
    assert jobs_env.marks("started") == [f"started-{running}-1"]  # the pending one never ran
    with pytest.raises(JobError, match=f"Job {pending} is already cancelled"):
        manager.cancel_job(pending)
    with pytest.raises(JobError, match=f"Job {running} is already cancelled"):
        manager.cancel_job(running)


def test_j8_claims_go_by_priority_then_submission_order(jobs_env: JobsEnv) -> None:
    manager = jobs_env.manager()
    log = jobs_env.tmp / "log"
    priorities = [3, 9, 3, 10, 1, 9]
    ids = [manager.submit_job("touch", {"log": str(log)}, priority=p) for p in priorities]
    finish(jobs_env.start_worker("w1", "--max-jobs", "6"))
    ran = [int(line.split()[0]) for line in log.read_text().splitlines()]
    by_priority = sorted(zip(priorities, ids, strict=True), key=lambda pair: (-pair[0], pair[1]))
    assert ran == [job_id for _, job_id in by_priority]


@pytest.mark.slow
def test_j1_sigkilled_worker_job_is_reclaimed_and_finished_once_as_attempt_2(
    jobs_env: JobsEnv,
) -> None:
    manager = jobs_env.manager()
    job_id = manager.submit_job("sleep", jobs_env.config(seconds=0.6))
    first = jobs_env.start_worker("w1")
    jobs_env.wait_for(lambda: bool(jobs_env.marks("started")))
    second = jobs_env.start_worker("w2", "--max-jobs", "1")
    first.send_signal(signal.SIGKILL)
    first.wait()
    finish(second)
    job = manager.get_job(job_id)
    assert (job.status, job.worker_id, job.attempt) == ("completed", "w2", 2)
    assert [(a.worker_id, a.outcome) for a in job.attempts] == [
        ("w1", "lease_expired"),
        ("w2", "completed"),
    ]
    assert "stopped renewing its lease" in (job.attempts[0].error or "")
    assert jobs_env.marks("done") == [f"done-{job_id}-2"]  # w1's child died with it


@pytest.mark.slow
def test_j2_worker_frozen_past_its_lease_changes_nothing_when_resumed(jobs_env: JobsEnv) -> None:
    manager = jobs_env.manager()
    job_id = manager.submit_job("sleep", jobs_env.config(seconds=0.6))
    frozen = jobs_env.start_worker("w1", "--max-jobs", "1")
    jobs_env.wait_for(lambda: bool(jobs_env.marks("started")))
    frozen.send_signal(signal.SIGSTOP)
    try:
        finish(jobs_env.start_worker("w2", "--max-jobs", "1"))
        settled = manager.get_job(job_id)
        assert (settled.status, settled.worker_id, settled.attempt) == ("completed", "w2", 2)
    finally:
        frozen.send_signal(signal.SIGCONT)
    report = json.loads(finish(frozen))
    assert (report["lost"], report["completed"]) == (1, 0)
    assert manager.get_job(job_id) == settled  # its late result changed nothing


@pytest.mark.slow
def test_j9_sigterm_lets_the_job_finish_then_exits_0(jobs_env: JobsEnv) -> None:
    manager = jobs_env.manager()
    job_id = manager.submit_job("sleep", jobs_env.config(seconds=0.6))
    later = manager.submit_job("sleep", jobs_env.config(seconds=0.0), priority=1)
    worker = jobs_env.start_worker("w1")
    jobs_env.wait_for(lambda: bool(jobs_env.marks("started")))
    worker.send_signal(signal.SIGTERM)
    report = json.loads(finish(worker))
    assert (report["completed"], report["stop_reason"]) == (1, "SIGTERM")
    assert manager.get_job(job_id).status == "completed"
    assert manager.get_job(later).status == "pending"  # no claim after SIGTERM


@pytest.mark.slow
def test_j9_sigterm_hands_back_a_job_that_outlasts_the_grace_period(jobs_env: JobsEnv) -> None:
    manager = jobs_env.manager()
    job_id = manager.submit_job("sleep", jobs_env.config(seconds=30.0))
    worker = jobs_env.start_worker("w1", "--shutdown-grace", "0.3")
    jobs_env.wait_for(lambda: bool(jobs_env.marks("started")))
    worker.send_signal(signal.SIGTERM)
    report = json.loads(finish(worker))
    assert (report["handed_back"], report["stop_reason"]) == (1, "SIGTERM")
    job = manager.get_job(job_id)
    assert (job.status, job.retry_count) == ("pending", 0)
    assert job.attempts[0].outcome == "handed_back"
    assert "did not finish within 0.3 s" in (job.attempts[0].error or "")
    # handed back, not failed: the next worker runs it as attempt 2 at once
    assert manager.store.claim("w2", lease_seconds=5) is not None


@pytest.mark.slow
def test_j9_a_second_sigterm_hands_the_job_back_at_once(jobs_env: JobsEnv) -> None:
    manager = jobs_env.manager()
    job_id = manager.submit_job("sleep", jobs_env.config(seconds=30.0))
    worker = jobs_env.start_worker("w1", "--shutdown-grace", "60")
    jobs_env.wait_for(lambda: bool(jobs_env.marks("started")))
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # two signals close together may arrive as one
    assert worker.poll() is None  # the first only stopped the claiming
    worker.send_signal(signal.SIGTERM)
    report = json.loads(finish(worker, 10))  # long before the 60 s grace
    assert report["handed_back"] == 1
    assert manager.get_job(job_id).status == "pending"
