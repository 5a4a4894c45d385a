"""Workers as real processes (``treadle worker``) over a PostgreSQL queue: the multi-worker
tests of tests/test_worker.py (4 workers run each job exactly once, J3; a SIGKILLed worker's
job is reclaimed and finished once, J1; a frozen worker's late writes change nothing, J2), run
again here with every worker a separate process connected to a throwaway server."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest

from tests.conftest import FakeDist
from tests.test_jobs_helpers import JobsEnv, disabled_plugins, finish, make_jobs_env
from tests.test_worker import (  # the SQLite suite, run again on PostgreSQL
    test_j1_sigkilled_worker_job_is_reclaimed_and_finished_once_as_attempt_2,
    test_j2_worker_frozen_past_its_lease_changes_nothing_when_resumed,
    test_j3_four_workers_run_each_of_200_jobs_exactly_once,
)

pytest_plugins = ["tests.postgres_fixtures"]

#: every test here starts worker processes: seconds each
pytestmark = pytest.mark.slow

__all__ = [
    "test_j3_four_workers_run_each_of_200_jobs_exactly_once",
    "test_j1_sigkilled_worker_job_is_reclaimed_and_finished_once_as_attempt_2",
    "test_j2_worker_frozen_past_its_lease_changes_nothing_when_resumed",
]


def _disabled() -> str:
    """The test workers' disabled plugins (every one but sqlite and the test job types), less
    the postgres plugin, which they need here."""
    names = set(disabled_plugins().split(",")) - {"postgres", ""}
    return ",".join(sorted(names))


@attrs.frozen
class PostgresJobsEnv(JobsEnv):
    """:class:`JobsEnv` whose workers keep the postgres plugin."""

    def env(self) -> dict[str, str]:
        return {**JobsEnv.env(self), "TREADLE_DISABLE_PLUGINS": _disabled()}


@pytest.fixture
def jobs_env(
    tmp_path: Path,
    fake_plugin_dist: FakeDist,
    monkeypatch: pytest.MonkeyPatch,
    postgres_url: str,
) -> JobsEnv:
    base = make_jobs_env(tmp_path, fake_plugin_dist, monkeypatch)
    monkeypatch.setenv("TREADLE_DISABLE_PLUGINS", _disabled())
    return PostgresJobsEnv(base.tmp, base.site, postgres_url)


def test_the_workers_here_really_use_postgresql(jobs_env: JobsEnv) -> None:
    assert jobs_env.location.startswith("postgresql://")
    manager = jobs_env.manager()
    assert type(manager.store).__module__ == "treadle_postgres.job_store"
    job_id = manager.submit_job("sleep", jobs_env.config(seconds=0.0))
    report = json.loads(finish(jobs_env.start_worker("w1", "--max-jobs", "1")))
    assert report["completed"] == 1
    job = manager.get_job(job_id)
    assert (job.status, job.worker_id, job.result) == (
        "completed",
        "w1",
        {"attempt": 1, "worker": "w1"},
    )
    assert not Path(jobs_env.tmp / "jobs.db").exists()  # nothing went to an SQLite file
