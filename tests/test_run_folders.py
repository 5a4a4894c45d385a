"""One folder per run (issue 13): two runs configured with one folder never mix their
checkpoints, a run folder is claimed atomically and locked by its live run, run names cannot
leave ``checkpoint_dir`` (RELIABILITY X1), and a finished run resumed changes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.trainer_fixtures import (
    TinyClassifier,
    classification_task,
    engine_plugin_manager,
    loaders,
    needs_engine,
    small_config,
)
from treadle.config import TrainingConfig
from treadle.engine.checkpoints import CheckpointError, CheckpointManager
from treadle.engine.trainer import Trainer
from treadle.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


class WideClassifier(torch.nn.Module):
    """Another model: other keys and shapes than :class:`TinyClassifier`."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU())
        self.head = torch.nn.Linear(32, 2)

    def forward(self, features: torch.Tensor, **unused: Any) -> torch.Tensor:
        return self.head(self.body(features))


def _train(model: torch.nn.Module, checkpoint_dir: Path, **overrides: Any) -> dict[str, Any]:
    torch.manual_seed(0)
    config = small_config(checkpoint_dir, **overrides)
    trainer = Trainer(
        model,
        None,
        config,
        classification_task(),
        device="cpu",
        plugin_manager=engine_plugin_manager(),
    )
    return trainer.train(*loaders())


def _digests(folder: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.iterdir())
        if path.is_file() and path.suffix == ".pt"
    }


@needs_engine
def test_two_trainer_runs_in_one_folder_each_report_and_keep_their_own_best(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "checkpoints"
    first = _train(TinyClassifier(), folder, epochs=2, keep_last_n=1)
    first_files = _digests(Path(first["run_dir"]))
    second = _train(WideClassifier(), folder, epochs=3, keep_last_n=1)

    # the first run's checkpoints are untouched: not pruned, not replaced
    assert _digests(Path(first["run_dir"])) == first_files
    # each best checkpoint is its own run's and loads into its own model
    for results, model in ((first, TinyClassifier()), (second, WideClassifier())):
        loaded = CheckpointManager(results["run_dir"]).load_checkpoint(
            results["best_checkpoint"], model
        )
        assert loaded.run_id == results["run_id"]
    assert first["run_id"] != second["run_id"]
    assert first["run_dir"] != second["run_dir"]
    assert Path(first["best_checkpoint"]).parent == Path(first["run_dir"])
    assert Path(second["best_checkpoint"]).parent == Path(second["run_dir"])
    history = CheckpointManager(second["run_dir"]).get_checkpoint_history()
    assert sorted(history["epoch"]) == sorted(set(history["epoch"]))
    assert all(Path(path).parent == Path(second["run_dir"]) for path in history["path"])


@needs_engine
def test_a_new_run_never_adopts_a_folder_of_an_older_treadle(tmp_path: Path) -> None:
    """A folder written before runs had ids (checkpoints, no run.json) is another run's too."""
    folder = tmp_path / "checkpoints"
    manager = CheckpointManager(folder)
    manager.save_checkpoint(0, {"val_loss": 0.001}, TinyClassifier(), None)
    before = _digests(folder)
    results = _train(TinyClassifier(), folder, epochs=1)
    assert _digests(folder) == before
    assert Path(results["run_dir"]) == tmp_path / "checkpoints-2"
    assert Path(results["best_checkpoint"]).parent == tmp_path / "checkpoints-2"


def test_a_manager_refuses_a_folder_of_another_run(tmp_path: Path) -> None:
    CheckpointManager(tmp_path, run_id="a" * 32).save_checkpoint(
        0, {"val_loss": 1.0}, TinyClassifier(), None
    )
    with pytest.raises(CheckpointError, match=f"holds the checkpoints of run {'a' * 32}"):
        CheckpointManager(tmp_path, run_id="b" * 32)
    # without a run id the manager continues the folder's own run, as the spec's API does
    assert CheckpointManager(tmp_path).run_id == "a" * 32


def test_a_checkpoint_of_another_run_dropped_into_a_folder_is_neither_listed_nor_deleted(
    tmp_path: Path,
) -> None:
    other = tmp_path / "other"
    saved = CheckpointManager(other, run_id="b" * 32).save_checkpoint(
        5, {"val_loss": 0.0}, TinyClassifier(), None
    )
    mine = tmp_path / "mine"
    CheckpointManager(mine, run_id="a" * 32).save_checkpoint(
        0, {"val_loss": 1.0}, TinyClassifier(), None
    )
    stray = mine / Path(saved.path).name
    stray.write_bytes(Path(saved.path).read_bytes())
    manager = CheckpointManager(mine, run_id="a" * 32, keep_last_n=1, keep_best_k=0)
    assert manager.get_best_checkpoint() == str(mine / "epoch_000.pt")
    manager.save_checkpoint(1, {"val_loss": 0.5}, TinyClassifier(), None)
    manager.save_checkpoint(2, {"val_loss": 0.4}, TinyClassifier(), None)
    assert stray.is_file(), "another run's file is never deleted"
    assert [Path(p).name for p in manager.get_checkpoint_history()["path"]] == ["epoch_002.pt"]


def test_claims_take_distinct_folders_and_a_live_owner_refuses_a_resume(tmp_path: Path) -> None:
    from treadle.engine.checkpoints.run_folder import (
        RunFolderBusyError,
        claim_run_folder,
        read_run_info,
        run_status,
    )

    base = tmp_path / "runs" / "name"
    first = claim_run_folder(base, resume=False, run_name="name")
    second = claim_run_folder(base, resume=False, run_name="name")
    try:
        assert (first.path, second.path) == (base, base.with_name("name-2"))
        assert first.run_id != second.run_id
        with pytest.raises(RunFolderBusyError, match=f"pid {os.getpid()} on host") as caught:
            claim_run_folder(base, resume=True)  # the newest, name-2, is alive
        assert caught.value.folder == second.path
        assert run_status(first.path) == "running"
    finally:
        first.release()
        second.release()
    info = read_run_info(second.path)
    assert info is not None
    assert info.status == "running"
    assert run_status(second.path) == "died", "running, and nobody holds its lock"
    resumed = claim_run_folder(base, resume=True)
    try:
        assert (resumed.path, resumed.run_id, resumed.info.attempt) == (
            second.path,
            second.run_id,
            2,
        )
    finally:
        resumed.release()


CLAIM_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from treadle.engine.checkpoints.run_folder import claim_run_folder
    folder = claim_run_folder(sys.argv[1], resume=False)
    print(json.dumps([str(folder.path), folder.run_id]), flush=True)
    sys.stdin.readline()  # held until the parent says
    """
)


def test_processes_claiming_one_name_at_once_get_distinct_folders(tmp_path: Path) -> None:
    from treadle.engine.checkpoints.run_folder import read_run_info

    base = tmp_path / "runs" / "race"
    script = tmp_path / "claim.py"
    script.write_text(CLAIM_SCRIPT, encoding="utf-8")
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(base)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(6)
    ]
    try:
        claims = [json.loads(process.stdout.readline()) for process in processes]  # type: ignore[union-attr]
    finally:
        for process in processes:
            process.communicate("\n", timeout=60)
    folders = [folder for folder, _ in claims]
    assert len(set(folders)) == 6, claims
    assert len({run_id for _, run_id in claims}) == 6
    for folder, run_id in claims:
        info = read_run_info(folder)
        assert info is not None
        assert info.run_id == run_id


@pytest.mark.parametrize(
    "name",
    ["../escape", "/tmp/absolute", "a/b", "x\x00y", "r" * 300, "", ".hidden", "two words"],
)
def test_run_name_attacks_are_one_clear_config_error_x1(name: str) -> None:
    with pytest.raises(ConfigError, match="'run_name' must be 1 to 100 letters") as caught:
        TrainingConfig(run_name=name)
    assert "Traceback" not in str(caught.value)


@needs_engine
def test_a_finished_run_resumed_reports_complete_and_changes_nothing(tmp_path: Path) -> None:
    from treadle.engine.checkpoints.lock import LOCK_NAME
    from treadle.engine.checkpoints.run_folder import read_run_info

    folder = tmp_path / "run"
    first = _train(TinyClassifier(), folder, epochs=2)
    assert first["status"] == "completed"
    snapshot = {
        path.name: (path.read_bytes(), path.stat().st_mtime_ns)
        for path in Path(first["run_dir"]).iterdir()
        if path.name != LOCK_NAME
    }
    again = _train(TinyClassifier(), folder, epochs=2, resume="auto")
    assert again["status"] == "already_completed"
    assert again["best_checkpoint"] == first["best_checkpoint"]
    assert again["run_id"] == first["run_id"]
    after = {
        path.name: (path.read_bytes(), path.stat().st_mtime_ns)
        for path in Path(first["run_dir"]).iterdir()
        if path.name != LOCK_NAME
    }
    assert after == snapshot
    info = read_run_info(first["run_dir"])
    assert info is not None
    assert (info.status, info.attempt) == ("completed", 1)
    # asked for more epochs, the finished run continues
    more = _train(TinyClassifier(), folder, epochs=3, resume="auto")
    assert (more["status"], len(more["history"]), more["run_id"]) == (
        "completed",
        3,
        first["run_id"],
    )


@needs_engine
def test_a_run_that_fails_before_it_starts_leaves_its_folder_to_the_next_run(
    tmp_path: Path,
) -> None:
    from treadle import hookimpl
    from treadle.engine.checkpoints.run_folder import read_run_info

    class Broken:
        @hookimpl
        def treadle_configure_run(self) -> None:
            raise RuntimeError("set-up failed")

    folder = tmp_path / "checkpoints"
    with pytest.raises(RuntimeError, match="set-up failed"):
        Trainer(
            TinyClassifier(),
            None,
            small_config(folder, epochs=1),
            classification_task(),
            device="cpu",
            plugin_manager=engine_plugin_manager(("broken", Broken())),
        ).train(*loaders())
    assert read_run_info(folder) is None, "the claim was undone"
    results = _train(TinyClassifier(), folder, epochs=1)
    assert Path(results["run_dir"]) == folder


@needs_engine
def test_a_run_early_stopping_ended_is_complete_one_a_hook_stopped_resumes(
    tmp_path: Path,
) -> None:
    from treadle import hookimpl

    # the model learns, so val_loss falls: watching for a rise, patience 1 stops at epoch 1
    stopped = _train(
        TinyClassifier(), tmp_path / "early", epochs=5, early_stopping_patience=1,
        monitor_mode="max",
    )  # fmt: skip
    assert len(stopped["history"]) == 2
    again = _train(
        TinyClassifier(), tmp_path / "early", epochs=5, early_stopping_patience=1,
        monitor_mode="max", resume="auto",
    )  # fmt: skip
    assert again["status"] == "already_completed"

    class StopAfterFirstEpoch:
        @hookimpl
        def treadle_on_epoch_end(self, epoch: int, control: Any) -> None:
            if epoch == 0:
                control.request_stop("paused by a plugin")

    torch.manual_seed(0)
    Trainer(
        TinyClassifier(),
        None,
        small_config(tmp_path / "paused", epochs=3),
        classification_task(),
        device="cpu",
        plugin_manager=engine_plugin_manager(("pause", StopAfterFirstEpoch())),
    ).train(*loaders())
    resumed = _train(TinyClassifier(), tmp_path / "paused", epochs=3, resume="auto")
    assert (resumed["status"], len(resumed["history"])) == ("completed", 3)
