"""Runs a user can trust, from the command line alone (issue 13), with real processes and
real signals: Ctrl-C keeps the work and resumes exactly, a second Ctrl-C aborts, two runs of
one name never share a folder, a live run's folder is refused to a second process, a finished
run resumed changes nothing, run names cannot leave checkpoint_dir, ``kill -9`` shows as
``died``, and a finished run reaches the registry and an export bundle that verifies.

Children are started from Python with SIGINT at its default: a non-interactive shell's
background job ignores SIGINT, and a test sending it that way proves nothing (ENVIRONMENT.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.processes import default_sigint
from tests.trainer_fixtures import TINY_GPT, needs_main_job

ROOT = Path(__file__).resolve().parents[1]
PROBE = "tests.signal_probe:probe"
RESUME_PROBE = "treadle_cli.resume_probe:probe"
# 96 samples / batch 16 = 6 optimizer steps per epoch
TINY = [
    *TINY_GPT,
    "--set",
    "max_train_samples=96",
    "--set",
    "max_val_samples=32",
    "--set",
    "batch_size=16",
    "--set",
    'loggers=["jsonl"]',
    "--set",
    "early_stopping_patience=null",
]

pytest_plugins = ["tests.postgres_fixtures"]
pytestmark = [needs_main_job, pytest.mark.slow]


def environment(
    tmp_path: Path,
    *,
    plugins: Sequence[str] = (),
    record: Path | None = None,
    probe_step: int | None = None,
    hold: bool = False,
) -> dict[str, str]:
    env = {
        **os.environ,
        "TREADLE_DISABLE_PLUGINS": "",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    loaded = list(plugins)
    if record is not None:
        loaded.append(RESUME_PROBE)
        env["TREADLE_RESUME_PROBE_RECORD"] = str(record)
    if probe_step is not None:
        loaded.append(PROBE)
        env["SIGNAL_PROBE_DIR"] = str(tmp_path)
        env["SIGNAL_PROBE_STEP"] = str(probe_step)
        env["SIGNAL_PROBE_HOLD"] = "1" if hold else "0"
    env["TREADLE_PLUGINS"] = ",".join(loaded)
    return env


def treadle(
    *argv: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "treadle", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env if env is not None else environment(cwd),
        timeout=timeout,
        check=False,
        preexec_fn=default_sigint,
    )


def start(*argv: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "treadle", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
        preexec_fn=default_sigint,
    )


def wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"the run ended ({process.returncode}) before {path.name}:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {path.name} within {timeout} s")
        time.sleep(0.01)


def finish(process: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


# -- Ctrl-C ----------------------------------------------------------------------------------


def test_ctrl_c_mid_epoch_saves_and_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    from treadle_cli.commands.verify_resume import compare_records

    common = [*TINY, "--epochs", "2", "--no-register", "--set", "experiment_location=null"]
    reference = treadle(
        "train",
        *common,
        "--run-dir",
        str(tmp_path / "reference"),
        cwd=tmp_path,
        env=environment(tmp_path, record=tmp_path / "reference.json"),
    )
    assert reference.returncode == 0, reference.stderr[-3000:]

    run_dir = tmp_path / "interrupted"
    first = start(
        "train",
        *common,
        "--run-dir",
        str(run_dir),
        cwd=tmp_path,
        env=environment(tmp_path, record=tmp_path / "part1.json", probe_step=3),
    )
    wait_for(tmp_path / "reached", first)  # step 3 of epoch 1: mid-epoch
    first.send_signal(signal.SIGINT)
    code, out, err = finish(first)
    assert code == 130, err[-3000:]
    assert "interrupted by SIGINT: checkpoint saved" in out
    assert "continue with: treadle train" in out
    assert out.rstrip().splitlines()[1].endswith("--resume")
    assert "press Ctrl-C again to abort at once" in err
    assert list(run_dir.glob("epoch_000_step_*.pt")), "a mid-epoch checkpoint was saved"

    second = treadle(
        "train",
        *common,
        "--run-dir",
        str(run_dir),
        "--resume",
        cwd=tmp_path,
        env=environment(tmp_path, record=tmp_path / "part2.json"),
    )
    assert second.returncode == 0, second.stderr[-3000:]
    records = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("part1", "part2")]
    same, lines = compare_records(json.loads((tmp_path / "reference.json").read_text()), records)
    assert same, "\n".join(lines)


def test_a_second_ctrl_c_aborts_at_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    process = start(
        "train",
        *TINY,
        "--epochs",
        "2",
        "--no-register",
        "--set",
        "experiment_location=null",
        "--run-dir",
        str(run_dir),
        cwd=tmp_path,
        env=environment(tmp_path, probe_step=2, hold=True),
    )
    wait_for(tmp_path / "reached", process)
    process.send_signal(signal.SIGINT)
    wait_for(tmp_path / "stopping", process)  # the first asked for a save, and it waits
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    code, _, err = finish(process, timeout=60)
    assert time.monotonic() - sent < 30
    assert code == 130, err[-3000:]
    assert "aborted at once by a second Ctrl-C" in err
    assert "Traceback" not in err
    assert not list(run_dir.glob("epoch_*_step_*.pt")), "the abort saved nothing more"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "interrupted"


# -- one folder per run ----------------------------------------------------------------------


def test_two_runs_of_one_name_started_at_once_get_their_own_folders(tmp_path: Path) -> None:
    processes = {
        seed: start(
            "train",
            *TINY,
            "--epochs",
            "1",
            "--set",
            f"random_seed={seed}",
            "--set",
            "run_name=shared",
            "--set",
            "experiment_location=null",
            "--json",
            cwd=tmp_path,
            env=environment(tmp_path),
        )
        for seed in (1, 2)
    }
    results: dict[int, dict[str, Any]] = {}
    for seed, process in processes.items():
        code, out, err = finish(process)
        assert code == 0, err[-3000:]
        results[seed] = json.loads(out)
    folders = {Path(found["run_dir"]) for found in results.values()}
    root = tmp_path / "checkpoints"
    assert folders == {root / "shared", root / "shared-2"}
    from treadle.model_loading import load_verified_checkpoint

    for seed, found in results.items():
        assert Path(found["best_checkpoint"]).parent == Path(found["run_dir"])
        loaded = load_verified_checkpoint(found["best_checkpoint"])
        assert loaded.training_config.random_seed == seed, "each folder holds its own run"
        assert loaded.run_id == found["run_id"]
    assert {found["registered"]["version"] for found in results.values()} == {"1.0.0", "1.0.1"}


def test_resume_while_the_run_is_alive_is_refused_naming_its_process(tmp_path: Path) -> None:
    common = [*TINY, "--epochs", "2", "--no-register", "--set", "experiment_location=null"]
    owner = start("train", *common, cwd=tmp_path, env=environment(tmp_path, probe_step=2))
    try:
        wait_for(tmp_path / "reached", owner)
        second = treadle("train", *common, "--resume", cwd=tmp_path)
        assert second.returncode == 2
        assert f"belongs to a live run (pid {owner.pid} on host" in second.stderr
        assert "Traceback" not in second.stderr
        new_run = treadle("train", *common, "--plan", cwd=tmp_path)
        assert "quick-prototype-2" in new_run.stdout, "a new run would take the next folder"
    finally:
        owner.send_signal(signal.SIGINT)
        code, _, err = finish(owner)
    assert code == 130, err[-3000:]
    resumed = treadle("train", *common, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]


def test_resume_of_a_finished_run_says_so_and_changes_nothing(tmp_path: Path) -> None:
    from treadle.experiments import ExperimentDB
    from treadle.model_registry import ModelRegistry

    common = [*TINY, "--epochs", "1", "--set", f'experiment_location="{tmp_path / "t.db"}"']
    first = treadle("train", *common, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "checkpoints" / "quick-prototype"

    def snapshot() -> dict[str, tuple[bytes, int]]:
        return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.iterdir()}

    before = snapshot()
    again = treadle("train", *common, "--resume", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "is complete; nothing to resume" in again.stdout
    assert "best val loss:" in again.stdout
    assert snapshot() == before
    with ExperimentDB(tmp_path / "t.db") as db:
        (run,) = db.find_runs()
    assert (run.status, run.attempt) == ("completed", 1)
    with ModelRegistry(tmp_path / "treadle.db") as registry:
        assert len(registry.store.find_models(limit=None)) == 1


@pytest.mark.parametrize("name", ["../escape", "/tmp/treadle-escape", "r" * 300, "a\\u0000b"])
def test_run_name_attacks_are_refused_before_anything_is_written_x1(
    tmp_path: Path, name: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for extra in (["--plan"], ["--epochs", "1"]):
        done = treadle("train", *TINY, "--set", f'run_name="{name}"', *extra, cwd=work)
        assert done.returncode == 2, done.stdout + done.stderr[-2000:]
        assert "'run_name' must be 1 to 100 letters" in done.stderr
        assert "Traceback" not in done.stderr
    assert sorted(tmp_path.rglob("*")) == [work], "nothing was written anywhere"
    assert not Path("/tmp/treadle-escape").exists()


# -- died --------------------------------------------------------------------------------------


def _kill_nine_then_list(tmp_path: Path, location: str) -> None:
    common = [
        *TINY,
        "--epochs",
        "2",
        "--no-register",
        "--set",
        "save_every_n_steps=1",
        "--set",
        f'experiment_location="{location}"',
    ]
    run = start("train", *common, cwd=tmp_path, env=environment(tmp_path, probe_step=3))
    wait_for(tmp_path / "reached", run)
    listing = treadle("runs", "list", "--location", location, "--json", cwd=tmp_path)
    assert [row["status"] for row in json.loads(listing.stdout)] == ["running"]
    run.kill()  # SIGKILL: no handler, no cleanup
    run.communicate(timeout=60)

    listing = treadle("runs", "list", "--location", location, "--json", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    (row,) = json.loads(listing.stdout)
    assert row["status"] == "died"
    assert row["owner_pid"] == run.pid
    assert Path(row["last_checkpoint"]).name == "epoch_000_step_000003.pt"
    table = treadle("runs", "list", "--location", location, cwd=tmp_path)
    assert " died " in table.stdout
    assert "epoch_000_step_000003.pt" in table.stdout
    died = treadle(
        "runs", "list", "--status", "died", "--location", location, "--json", cwd=tmp_path
    )
    assert len(json.loads(died.stdout)) == 1
    running = treadle(
        "runs", "list", "--status", "running", "--location", location, "--json", cwd=tmp_path
    )
    assert json.loads(running.stdout) == []
    # and it resumes from that checkpoint, as the same experiment run's second attempt
    resumed = treadle("train", *common, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    listing = treadle("runs", "list", "--location", location, "--json", cwd=tmp_path)
    (row,) = json.loads(listing.stdout)
    assert (row["status"], row["attempt"]) == ("completed", 2)


def test_a_run_killed_with_sigkill_shows_as_died_sqlite(tmp_path: Path) -> None:
    _kill_nine_then_list(tmp_path, str(tmp_path / "runs.db"))


def test_a_run_killed_with_sigkill_shows_as_died_postgres(
    tmp_path: Path, postgres_database_url: str
) -> None:
    _kill_nine_then_list(tmp_path, postgres_database_url)


# -- the registry ------------------------------------------------------------------------------


def test_train_registers_then_export_verifies_from_the_cli_alone(tmp_path: Path) -> None:
    first = treadle("train", *TINY, "--epochs", "1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "registered: tiny-gpt 1.0.0 (model 1) in treadle.db" in first.stdout
    listing = treadle("registry", "list", "--json", cwd=tmp_path)
    (entry,) = json.loads(listing.stdout)
    assert (entry["name"], entry["version"], entry["training_run_id"]) == ("tiny-gpt", "1.0.0", 1)
    assert Path(entry["checkpoint_path"]).parent == tmp_path / "checkpoints" / "quick-prototype"
    assert len(entry["config_hash"]) == 64
    assert "val_loss" in entry["metrics"]

    exported = treadle(
        "export", "tiny-gpt:1.0.0", "--formats", "pytorch", "--output-dir", "exports", cwd=tmp_path
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    bundle = Path(exported.stdout.strip().splitlines()[-1])
    bundle = bundle if bundle.is_absolute() else tmp_path / bundle
    verified = subprocess.run(
        [sys.executable, "inference.py", "--verify"],
        cwd=bundle,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # a second run registers the next version; --no-register registers nothing
    second = treadle("train", *TINY, "--epochs", "1", cwd=tmp_path)
    assert "registered: tiny-gpt 1.0.1 (model 2)" in second.stdout, second.stderr[-2000:]
    third = treadle("train", *TINY, "--epochs", "1", "--no-register", cwd=tmp_path)
    assert third.returncode == 0
    assert "registered:" not in third.stdout
    listing = treadle("registry", "list", "--json", cwd=tmp_path)
    assert [row["version"] for row in json.loads(listing.stdout)] == ["1.0.1", "1.0.0"]


def test_an_interrupted_run_registers_once_when_its_resume_completes(tmp_path: Path) -> None:
    common = [*TINY, "--epochs", "2"]
    first = start("train", *common, cwd=tmp_path, env=environment(tmp_path, probe_step=2))
    wait_for(tmp_path / "reached", first)
    first.send_signal(signal.SIGINT)
    code, out, _ = finish(first)
    assert code == 130
    assert "registered" not in out, "an interrupted run is not registered"
    resumed = treadle("train", *common, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "registered: tiny-gpt 1.0.0 (model 1)" in resumed.stdout
    again = treadle("train", *common, "--resume", cwd=tmp_path)
    assert "registered as: tiny-gpt 1.0.0 (model 1)" in again.stdout
    listing = treadle("registry", "list", "--json", cwd=tmp_path)
    assert len(json.loads(listing.stdout)) == 1


def test_registry_register_takes_a_checkpoint_trained_elsewhere_and_refuses_a_misfit(
    tmp_path: Path,
) -> None:
    import torch

    trained = treadle("train", *TINY, "--epochs", "1", "--no-register", "--json", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    best = json.loads(trained.stdout)["best_checkpoint"]
    done = treadle(
        "registry", "register", best, "--name", "mine", "--version", "2.0.0", "--tag",
        "staging", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    entry = json.loads(done.stdout)
    assert (entry["name"], entry["version"], entry["tags"]) == ("mine", "2.0.0", ["staging"])
    assert entry["task_type"] == "language_modeling"

    # a checkpoint whose weights are not the architecture its config describes
    payload = torch.load(best, weights_only=True)
    payload["trainer_state"]["config"]["d_model"] = 64
    payload["config"] = payload["trainer_state"]["config"]
    misfit = tmp_path / "misfit.pt"
    torch.save(payload, misfit)
    refused = treadle("registry", "register", str(misfit), "--name", "bad", cwd=tmp_path)
    assert refused.returncode == 2
    assert "does not fit the model that factory 'tiny_gpt' builds" in refused.stderr
    assert "shapes differ" in refused.stderr
    assert "Traceback" not in refused.stderr
    listing = treadle("registry", "list", "--json", cwd=tmp_path)
    assert [row["name"] for row in json.loads(listing.stdout)] == ["mine"]
