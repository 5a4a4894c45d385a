"""``treadle jobs``, ``treadle schedule`` and ``treadle worker`` from the command line."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import FakeDist
from tests.test_jobs_helpers import JobsEnv, make_jobs_env
from treadle.cli import main


@pytest.fixture
def jobs_env(
    tmp_path: Path, fake_plugin_dist: FakeDist, monkeypatch: pytest.MonkeyPatch
) -> JobsEnv:
    return make_jobs_env(tmp_path, fake_plugin_dist, monkeypatch)


def _out(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    status = main(list(argv))
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return captured.out


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 2
    return capsys.readouterr().err


def test_jobs_submit_list_show_cancel(
    jobs_env: JobsEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = ("jobs", "--location", jobs_env.location)
    config = json.dumps({"log": "x.log"})
    first = int(_out(capsys, *jobs, "submit", "touch", "--config", config, "--priority", "7"))
    second = int(_out(capsys, *jobs, "submit", "touch", "--config", config))
    listed = json.loads(_out(capsys, *jobs, "list", "--json"))
    assert [(job["job_id"], job["priority"]) for job in listed] == [(second, 5), (first, 7)]
    table = _out(capsys, *jobs, "list", "--status", "pending")
    assert table.splitlines()[0].split() == [
        "id",
        "type",
        "status",
        "priority",
        "attempts",
        "worker",
        "created",
    ]
    assert _out(capsys, *jobs, "cancel", str(first)) == f"job {first}: cancelled\n"
    shown = _out(capsys, *jobs, "show", str(first))
    assert "status: cancelled" in shown
    assert json.loads(_out(capsys, *jobs, "show", str(second), "--json"))["config"] == {
        "log": "x.log"
    }
    assert f"Job {first} is already cancelled" in _error(capsys, *jobs, "cancel", str(first))
    assert "Unknown job type 'tuch'" in _error(capsys, *jobs, "submit", "tuch")
    assert "--config: not JSON" in _error(capsys, *jobs, "submit", "touch", "--config", "{x")
    assert "priority must lie in 1..10" in _error(
        capsys, *jobs, "submit", "touch", "--priority", "11"
    )


def test_schedule_add_list_pause_resume_trigger_run_delete(
    jobs_env: JobsEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    schedule = ("schedule", "--location", jobs_env.location)
    assert "'61 * * * *'" in _error(capsys, *schedule, "add", "bad", "touch", "61 * * * *")
    assert "Unknown time zone 'Nowhere/Town'" in _error(
        capsys, *schedule, "add", "bad", "touch", "0 2 * * *", "--timezone", "Nowhere/Town"
    )
    config = json.dumps({"log": str(jobs_env.tmp / "x.log")})
    schedule_id = _out(
        capsys,
        *schedule,
        "add",
        "nightly",
        "touch",
        "30 2 * * *",
        "--timezone",
        "Europe/Berlin",
        "--config",
        config,
    ).strip()
    (listed,) = json.loads(_out(capsys, *schedule, "list", "--json"))
    assert (listed["name"], listed["timezone"], listed["is_paused"]) == (
        "nightly",
        "Europe/Berlin",
        False,
    )
    assert listed["next_fire_at"] is not None
    _out(capsys, *schedule, "pause", schedule_id)
    assert "paused" in _out(capsys, *schedule, "list")
    _out(capsys, *schedule, "resume", schedule_id)
    job_id = int(_out(capsys, *schedule, "trigger", schedule_id))
    shown = json.loads(
        _out(capsys, "jobs", "--location", jobs_env.location, "show", str(job_id), "--json")
    )
    assert (shown["job_type"], shown["status"]) == ("touch", "pending")
    assert _out(capsys, *schedule, "run", "--once").startswith("nothing was due; next: ")
    _out(capsys, *schedule, "delete", schedule_id)
    assert json.loads(_out(capsys, *schedule, "list", "--json")) == []
    assert f"No schedule {schedule_id}" in _error(capsys, *schedule, "delete", schedule_id)


def test_schedule_run_once_says_what_fired_and_what_was_enqueued_or_the_next_fire_time(
    jobs_env: JobsEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    schedule = ("schedule", "--location", jobs_env.location)
    assert _out(capsys, *schedule, "run", "--once") == ("nothing was due: no active schedules\n")
    config = json.dumps({"log": str(jobs_env.tmp / "x.log")})
    schedule_id = int(
        _out(capsys, *schedule, "add", "hourly", "touch", "@hourly", "--config", config)
    )
    _out(capsys, *schedule, "add", "nightly", "touch", "0 2 * * *", "--config", config)
    listed = {s["name"]: s for s in json.loads(_out(capsys, *schedule, "list", "--json"))}
    first = min(listed.values(), key=lambda s: s["next_fire_at"])
    assert _out(capsys, *schedule, "run", "--once") == (
        f"nothing was due; next: schedule {first['name']!r} at {first['next_fire_at']}\n"
    )

    # an hour ago: one fire time of 'hourly' is due now
    with sqlite3.connect(jobs_env.location) as db:
        db.execute(
            "UPDATE job_schedules SET fires_after = ? WHERE schedule_id = ?",
            (time.time() - 3600, schedule_id),
        )
    lines = _out(capsys, *schedule, "run", "--once").splitlines()
    (job,) = jobs_env.manager().list_jobs()
    assert re.fullmatch(
        rf"schedule 'hourly' \({schedule_id}\) fired for \S+: enqueued touch job {job.job_id}",
        lines[0],
    ), lines
    assert lines[1] == "1 fired, 1 enqueued"
    assert lines[2].startswith("next: schedule ")
    _out(capsys, *schedule, "pause", "hourly")
    _out(capsys, *schedule, "pause", "nightly")
    assert _out(capsys, *schedule, "run", "--once") == (
        "nothing was due: no active schedules (every schedule is paused)\n"
    )


def test_worker_command_runs_jobs_and_reports(
    jobs_env: JobsEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    log = jobs_env.tmp / "x.log"
    manager = jobs_env.manager()
    job_id = manager.submit_job("touch", {"log": str(log)})
    out = _out(
        capsys,
        "worker",
        "--location",
        jobs_env.location,
        "--worker-id",
        "cli",
        "--max-jobs",
        "1",
        "--output-root",
        str(jobs_env.tmp / "runs"),
    )
    assert out == "worker cli: 1 completed; stopped: max_jobs (1) reached\n"
    assert manager.get_job(job_id).status == "completed"
    assert log.read_text().split() == [str(job_id), "1", "cli"]
    assert "lease_seconds must be > 0" in _error(
        capsys, "worker", "--location", jobs_env.location, "--lease-seconds", "0"
    )
