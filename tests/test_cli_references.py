"""Every command that takes a schedule, run, model or job type accepts the name its ``list``
shows where that name is unique; ids keep working; a shared name is refused listing the ids,
an unknown one listing the names there are (issue 15.7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import treadle_sqlite.plugin
from treadle.cli import main
from treadle.experiments import ExperimentDB
from treadle.model_registry import ModelRegistry
from treadle.testing import isolated_plugin_manager


@pytest.fixture
def location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    return str(tmp_path / "treadle.db")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _out(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    status, out, err = _run(capsys, *argv)
    assert status == 0, err
    return out


def test_schedule_actions_take_the_schedule_name(
    location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    schedule = ("schedule", "--location", location)
    nightly = int(_out(capsys, *schedule, "add", "nightly", "noop", "0 2 * * *"))
    _out(capsys, *schedule, "add", "weekly", "noop", "0 3 * * 0")

    job_id = int(_out(capsys, *schedule, "trigger", "nightly"))
    shown = json.loads(_out(capsys, "jobs", "--location", location, "show", str(job_id), "--json"))
    assert shown["job_type"] == "noop"
    _out(capsys, *schedule, "pause", "nightly")
    listed = {s["name"]: s for s in json.loads(_out(capsys, *schedule, "list", "--json"))}
    assert (listed["nightly"]["is_paused"], listed["weekly"]["is_paused"]) == (True, False)
    _out(capsys, *schedule, "resume", "nightly")
    _out(capsys, *schedule, "pause", str(nightly))  # ids keep working
    assert json.loads(_out(capsys, *schedule, "list", "--json"))[0]["is_paused"]

    status, _, err = _run(capsys, *schedule, "trigger", "nigthly")
    assert status == 2
    assert "No schedule named 'nigthly'. Schedule names: nightly, weekly." in err
    assert "Did you mean 'nightly'?" in err
    _out(capsys, *schedule, "delete", "weekly")
    assert [s["name"] for s in json.loads(_out(capsys, *schedule, "list", "--json"))] == ["nightly"]


@pytest.fixture
def runs_location(location: str) -> str:
    """Runs ``base`` (twice: ids 1 and 3) and ``wide`` (id 2), with metrics."""
    manager = isolated_plugin_manager(("sqlite", treadle_sqlite.plugin))
    with ExperimentDB(location, plugin_manager=manager) as db:
        for name in ("base", "wide", "base"):
            run = db.log_run(name, {"learning_rate": 0.1})
            db.log_metrics(run, {"train_loss": 1.0, "val_loss": 1.1}, epoch=0, step=1)
    return location


def test_runs_actions_take_a_unique_run_name_and_refuse_a_shared_one(
    runs_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = ("runs", "--location", runs_location)
    shown = json.loads(_out(capsys, *runs, "show", "wide", "--json"))
    assert (shown["run_id"], shown["run_name"]) == (2, "wide")
    compared = json.loads(_out(capsys, *runs, "compare", "wide", "1", "--json"))
    assert [row["run_id"] for row in compared] == [2, 1]

    status, _, err = _run(capsys, *runs, "show", "base")
    assert status == 2
    assert "2 runs are named 'base' (ids 1, 3); pass the id of the one you mean" in err
    status, _, err = _run(capsys, *runs, "compare", "wide", "wdie")
    assert status == 2
    assert "No run named 'wdie'. Run names: base, wide. Did you mean 'wide'?" in err


def test_models_are_taken_by_name_by_export_and_registry(
    location: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manager = isolated_plugin_manager(("sqlite", treadle_sqlite.plugin))
    with ModelRegistry(location, plugin_manager=manager) as registry:
        registry.register_model(
            name="gone",
            version="1.0.0",
            checkpoint_path=str(tmp_path / "missing.pt"),
            task_type="classification",
            metrics={},
            config_hash="abc",
        )

    # the name found the entry: the export fails only on its missing checkpoint
    status, _, err = _run(capsys, "export", "gone", "--registry", location)
    assert status == 2
    assert "missing.pt of the registry entry does not exist" in err
    for argv in (
        ("export", "goen", "--registry", location),
        ("registry", "--location", location, "show", "goen"),
    ):
        status, _, err = _run(capsys, *argv)
        assert status == 2
        assert "Model names: gone. Did you mean 'gone'?" in err


def test_jobs_filtered_by_an_unknown_job_type_are_refused_listing_the_types(
    location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = ("jobs", "--location", location)
    _out(capsys, *jobs, "submit", "noop")
    listed = json.loads(_out(capsys, *jobs, "list", "--type", "noop", "--json"))
    assert [job["job_type"] for job in listed] == ["noop"]
    assert json.loads(_out(capsys, *jobs, "list", "--type", "training", "--json")) == []

    assert (
        json.loads(_out(capsys, *jobs, "list", "--type", "noop", "--status", "failed", "--json"))
        == []
    )
    status, _, err = _run(capsys, *jobs, "list", "--type", "trainig")
    assert status == 2
    assert "trainig" in err
    assert "training" in err
    status, _, err = _run(capsys, *jobs, "submit", "trainig")
    assert status == 2
    assert "training" in err
