"""CheckpointManager: round trips, retention (C5), kills mid-save (C1), a full disk (C2), damaged
files (C3), pickled objects (C6), the manifest (and hostile ones), digests, the backup folder
and asynchronous saving. A test covering a RELIABILITY row ends its name with the row
(``pytest -k C3``)."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from treadle.engine import checkpoints
from treadle.engine.checkpoints import (
    INDEX_NAME,
    CheckpointError,
    CheckpointManager,
    CheckpointMetadata,
)
from treadle.engine.checkpoints import files as files_module
from treadle.engine.checkpoints import folder as folder_module
from treadle.engine.checkpoints import names as names_module

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# -- helpers -------------------------------------------------------------------------------------


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(8, 16)
        self.norm = torch.nn.LayerNorm(16)
        self.out = torch.nn.Linear(16, 4)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden: torch.Tensor = torch.relu(self.norm(self.hidden(features)))
        output: torch.Tensor = self.out(hidden)
        return output


def trained(seed: int = 0, steps: int = 2) -> tuple[Net, torch.optim.Optimizer, Any]:
    """A model, AdamW and a scheduler after ``steps`` real steps (so optimizer state exists)."""
    torch.manual_seed(seed)
    model = Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    for _ in range(steps):
        model(torch.randn(4, 8)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    return model, optimizer, scheduler


def fresh() -> tuple[Net, torch.optim.Optimizer, Any]:
    model = Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.9)
    return model, optimizer, scheduler


def states_equal(left: Any, right: Any) -> bool:
    if isinstance(left, torch.Tensor):
        return isinstance(right, torch.Tensor) and torch.equal(left, right)
    if isinstance(left, dict):
        return (
            isinstance(right, dict)
            and left.keys() == right.keys()
            and all(states_equal(left[key], right[key]) for key in left)
        )
    if isinstance(left, (list, tuple)):
        return len(left) == len(right) and all(map(states_equal, left, right))
    return bool(left == right)


def checkpoint_files(folder: Path) -> set[str]:
    return {path.name for path in folder.glob("epoch_*.pt")}


def temp_files(folder: Path) -> list[str]:
    return [path.name for path in folder.iterdir() if path.name.endswith(".tmp")]


def index_files(folder: Path) -> set[str]:
    document = json.loads((folder / INDEX_NAME).read_text(encoding="utf-8"))
    return {row["file"] for row in document["checkpoints"]}


def flip_bit_in_largest_record(path: Path) -> None:
    """Flip one bit in the middle of the largest tensor's bytes (a stored zip record)."""
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda item: item.file_size)
    with path.open("r+b") as stream:
        stream.seek(info.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", stream.read(4))
        offset = info.header_offset + 30 + name_length + extra_length + info.file_size // 2
        stream.seek(offset)
        byte = stream.read(1)[0]
        stream.seek(offset)
        stream.write(bytes([byte ^ 0x10]))


# -- round trip and layout -----------------------------------------------------------------------


def test_a_checkpoint_round_trips_model_optimizer_scheduler_and_scaler(tmp_path: Path) -> None:
    model, optimizer, scheduler = trained()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    manager = CheckpointManager(tmp_path)
    trainer_state = {"format": 1, "epoch": 2, "epoch_complete": True, "history": [{"x": 1.0}]}
    saved = manager.save_checkpoint(
        2,
        {"val_loss": 0.25, "val_accuracy": torch.tensor(0.75)},
        model,
        optimizer,
        scheduler,
        {"notes": "attention dropout", "best_epoch": 1},
        scaler=scaler,
        trainer_state=trainer_state,
        global_step=40,
    )
    assert saved.path == str(tmp_path / "epoch_002.pt")
    assert saved.is_best
    assert saved.metrics == {"val_loss": 0.25, "val_accuracy": 0.75}
    assert saved.model_size_mb > 0
    assert saved.optimizer_state_size_mb > saved.model_size_mb  # AdamW keeps two moments

    model2, optimizer2, scheduler2 = fresh()
    scaler2 = torch.amp.GradScaler("cpu")
    loaded = manager.load_checkpoint(saved.path, model2, optimizer2, scheduler2, scaler=scaler2)

    assert isinstance(loaded, CheckpointMetadata)
    assert states_equal(model.state_dict(), model2.state_dict())
    assert states_equal(optimizer.state_dict(), optimizer2.state_dict())
    assert scheduler2.state_dict() == scheduler.state_dict()
    assert scaler2.get_scale() == 1024.0
    assert (loaded.epoch, loaded.global_step, loaded.is_best) == (2, 40, True)
    assert loaded.trainer_state == trainer_state
    assert loaded.metadata == {"notes": "attention dropout", "best_epoch": 1}
    assert loaded.metrics == saved.metrics
    assert loaded.timestamp == saved.timestamp
    assert datetime_is_iso(loaded.timestamp)
    assert loaded.rng_state is not None
    assert "torch" in loaded.rng_state

    raw = torch.load(saved.path, weights_only=True)
    assert raw["format_version"] == checkpoints.CHECKPOINT_FORMAT_VERSION
    assert {"model_state_dict", "optimizer_state_dict", "scheduler_state_dict"} <= raw.keys()
    assert {"scaler_state_dict", "epoch", "global_step", "metrics", "trainer_state"} <= raw.keys()


def datetime_is_iso(text: str) -> bool:
    from datetime import datetime

    return datetime.fromisoformat(text).tzinfo is not None


def test_names_carry_epoch_and_step_and_the_manifest_says_which_is_best(tmp_path: Path) -> None:
    model, optimizer, _ = trained()
    manager = CheckpointManager(tmp_path, keep_best_k=2, keep_last_n=2)
    manager.save_checkpoint(0, {"val_loss": 0.5}, model, optimizer)
    mid = manager.save_checkpoint(
        1, {}, model, optimizer, trainer_state={"epoch_complete": False}, global_step=120
    )
    manager.save_checkpoint(1, {"val_loss": 0.4}, model, optimizer, global_step=130)

    assert Path(mid.path).name == "epoch_001_step_000120.pt"
    assert checkpoint_files(tmp_path) == {
        "epoch_000.pt",
        "epoch_001_step_000120.pt",
        "epoch_001.pt",
    }
    assert not any("best" in name for name in os.listdir(tmp_path))
    document = json.loads((tmp_path / INDEX_NAME).read_text(encoding="utf-8"))
    rows = {row["file"]: row for row in document["checkpoints"]}
    assert rows["epoch_001.pt"]["is_best"] is True
    assert rows["epoch_000.pt"]["is_best"] is False
    assert rows["epoch_001_step_000120.pt"]["step"] == 120
    for name, row in rows.items():
        assert row["size_bytes"] == (tmp_path / name).stat().st_size
        assert row["hash"]["algorithm"] == "sha256"
        assert len(row["hash"]["hex"]) == 64
        assert {"epoch", "metrics", "timestamp"} <= row.keys()
    assert manager.get_best_checkpoint() == str(tmp_path / "epoch_001.pt")


def test_history_is_a_dataframe_with_metrics_best_path_and_size(tmp_path: Path) -> None:
    model, optimizer, _ = trained()
    manager = CheckpointManager(tmp_path, keep_best_k=3, keep_last_n=3)
    for epoch, loss in enumerate([0.62, 0.51, 0.42]):
        manager.save_checkpoint(epoch, {"val_loss": loss, "val_accuracy": 0.5}, model, optimizer)
    history = manager.get_checkpoint_history()
    assert list(history.columns) == [
        "epoch",
        "step",
        "val_loss",
        "val_accuracy",
        "is_best",
        "path",
        "timestamp",
        "size_mb",
    ]
    assert history["epoch"].tolist() == [0, 1, 2]
    assert history["is_best"].tolist() == [False, False, True]
    assert history["val_loss"].tolist() == [0.62, 0.51, 0.42]
    assert (history["size_mb"] > 0).all()


def test_saving_an_existing_name_replaces_it_and_its_manifest_row(tmp_path: Path) -> None:
    model, optimizer, _ = trained()
    manager = CheckpointManager(tmp_path)
    manager.save_checkpoint(1, {"val_loss": 0.5}, model, optimizer)
    with torch.no_grad():
        model.out.bias.add_(1.0)
    manager.save_checkpoint(1, {"val_loss": 0.4}, model, optimizer)
    assert index_files(tmp_path) == {"epoch_001.pt"}
    model2, _, _ = fresh()
    loaded = manager.load_checkpoint("epoch_001.pt", model2)  # a bare name means this folder
    assert loaded.metrics == {"val_loss": 0.4}
    assert torch.equal(model2.out.bias, model.out.bias)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keep_best_k": 0, "keep_last_n": 0}, "every checkpoint would be deleted"),
        ({"keep_best_k": -1}, "keep_best_k must be an int >= 0"),
        ({"keep_last_n": 2.5}, "keep_last_n must be an int >= 0"),
        ({"mode": "maximum"}, "mode must be 'min' or 'max'"),
        ({"monitor": ""}, "monitor must name a metric"),
        ({"save_interval_epochs": 0}, "save_interval_epochs must be an int >= 1"),
        ({"drive_backup": True}, "needs drive_backup_path"),
        ({"drive_backup_path": "/tmp/x"}, "drive_backup is False"),
    ],
)
def test_bad_arguments_are_refused_with_the_reason(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        CheckpointManager(tmp_path / "run", **kwargs)


def test_a_file_where_the_folder_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("not a folder")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        CheckpointManager(tmp_path / "run")


def test_save_refuses_values_weights_only_loading_would_refuse(tmp_path: Path) -> None:
    model, optimizer, _ = trained()
    manager = CheckpointManager(tmp_path)
    with pytest.raises(TypeError, match=r"checkpoint\['metadata'\]\['root'\] is a pathlib"):
        manager.save_checkpoint(0, {}, model, optimizer, metadata={"root": tmp_path})
    with pytest.raises(ValueError, match="metric 'val_loss'"):
        manager.save_checkpoint(0, {"val_loss": "low"}, model, optimizer)
    assert checkpoint_files(tmp_path) == set()
    assert temp_files(tmp_path) == []


def test_should_save_follows_the_epoch_interval(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, save_interval_epochs=3)
    assert [manager.should_save(epoch) for epoch in range(6)] == [
        False,
        False,
        True,
        False,
        False,
        True,
    ]


# -- C5: retention -------------------------------------------------------------------------------

metric_values = st.one_of(
    st.floats(min_value=-5, max_value=5, allow_nan=False),
    st.sampled_from([math.nan, 0.5, 1.0]),  # NaN, and repeated values for ties
    st.none(),  # the metric is missing
)


@settings(max_examples=25, deadline=None)
@given(
    values=st.lists(metric_values, min_size=1, max_size=7),
    keep_best_k=st.integers(0, 3),
    keep_last_n=st.integers(0, 3),
    mode=st.sampled_from(["min", "max"]),
)
def test_kept_files_are_best_k_and_last_n_and_nan_is_never_best_c5(
    values: list[float | None], keep_best_k: int, keep_last_n: int, mode: str
) -> None:
    if keep_best_k == keep_last_n == 0:
        keep_last_n = 1
    model = torch.nn.Linear(2, 2)
    sign = 1.0 if mode == "min" else -1.0
    with tempfile.TemporaryDirectory() as folder, mock.patch.object(os, "fsync"):
        manager = CheckpointManager(
            folder, keep_best_k=keep_best_k, keep_last_n=keep_last_n, mode=mode
        )
        for epoch, value in enumerate(values):
            metrics = {} if value is None else {"val_loss": value}
            saved = manager.save_checkpoint(epoch, metrics, model, None)
            if value is None or math.isnan(value):
                assert not saved.is_best

        finite = {i: v for i, v in enumerate(values) if v is not None and math.isfinite(v)}
        ranked = sorted(finite, key=lambda i: (sign * finite[i], i))  # ties: the earlier
        last = set(range(max(0, len(values) - keep_last_n), len(values)))
        expected = set(ranked[:keep_best_k]) | last
        names = {f"epoch_{i:03d}.pt" for i in expected}
        manager.wait()  # dropped files are deleted on a background thread
        assert checkpoint_files(Path(folder)) == names
        assert index_files(Path(folder)) == names
        best = manager.get_best_checkpoint()
        kept_ranked = [i for i in ranked if i in expected]
        if kept_ranked:
            assert best == str(Path(folder) / f"epoch_{kept_ranked[0]:03d}.pt")
        else:
            assert best is None
        history = manager.get_checkpoint_history()
        assert history["is_best"].sum() == (1 if kept_ranked else 0)
        if kept_ranked:
            assert not math.isnan(history.loc[history["is_best"], "val_loss"].iloc[0])


def test_large_files_are_deleted_on_a_thread_that_wait_joins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(folder_module, "_BACKGROUND_BYTES", 0)
    real_unlink = files_module.unlink
    threads: list[str] = []

    def slow_unlink(path: Path) -> None:
        threads.append(threading.current_thread().name)
        time.sleep(0.05)
        real_unlink(path)

    monkeypatch.setattr(files_module, "unlink", slow_unlink)
    manager = CheckpointManager(tmp_path, keep_best_k=0, keep_last_n=1)
    manager.save_checkpoint(0, {}, Net(), None)
    manager.save_checkpoint(1, {}, Net(), None)
    assert index_files(tmp_path) == {"epoch_001.pt"}  # listed at once
    manager.wait()
    assert checkpoint_files(tmp_path) == {"epoch_001.pt"}
    assert threads == ["treadle-checkpoint-deleter"]
    restored = Net()
    manager.load_checkpoint(tmp_path / "epoch_001.pt", restored)


# -- C1: a kill during a save --------------------------------------------------------------------


def _exit_now(*args: Any, **kwargs: Any) -> None:
    os._exit(9)


def _kill_while_writing(manager: CheckpointManager) -> None:
    real_write = os.write
    calls = [0]

    def write(fd: int, data: Any) -> int:
        calls[0] += 1
        if calls[0] > 3:
            os._exit(9)
        return real_write(fd, data)

    os.write = write


def _kill_on_replace(fragment: str) -> Callable[[CheckpointManager], None]:
    def install(manager: CheckpointManager) -> None:
        real_replace = os.replace

        def replace(source: Any, target: Any) -> None:
            if fragment in os.fspath(source):
                os._exit(9)
            real_replace(source, target)

        os.replace = replace  # type: ignore[assignment]

    return install


def _kill_after_rename(manager: CheckpointManager) -> None:
    files_module.fsync_directory = _exit_now


def _kill_before_deleting(manager: CheckpointManager) -> None:
    files_module.unlink = _exit_now


KILL_POINTS: dict[str, Callable[[CheckpointManager], None]] = {
    "while writing the checkpoint": _kill_while_writing,
    "before renaming the checkpoint": _kill_on_replace(".epoch_001.pt."),
    "after the rename, before the index": _kill_after_rename,
    "while replacing the index": _kill_on_replace(f".{INDEX_NAME}."),
    "before deleting what retention drops": _kill_before_deleting,
}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_kill_mid_save_leaves_the_last_finished_checkpoint_and_no_debris_c1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    # as for large checkpoints: hashed beside the fsync, dropped files deleted on a thread
    monkeypatch.setattr(folder_module, "_BACKGROUND_BYTES", 0)
    model, optimizer, _ = trained()
    manager = CheckpointManager(tmp_path, keep_best_k=0, keep_last_n=1)
    manager.save_checkpoint(0, {"val_loss": 1.0}, model, optimizer)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    after = {name: value + 1 for name, value in before.items()}

    pid = os.fork()
    if pid == 0:  # the child saves epoch 1 and dies at the kill point
        try:
            with torch.no_grad():
                for name, value in model.state_dict().items():
                    value.copy_(after[name])
            KILL_POINTS[point](manager)
            manager.save_checkpoint(1, {"val_loss": 0.5}, model, optimizer)
            manager.wait()
        finally:
            os._exit(3)  # the kill point was never reached
    deadline = time.monotonic() + 30
    while (waited := os.waitpid(pid, os.WNOHANG)) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"the child saving through {point!r} hung")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(waited[1]) == 9, "the child died at the kill point"

    reopened = CheckpointManager(tmp_path, keep_best_k=0, keep_last_n=1)
    assert temp_files(tmp_path) == []
    assert index_files(tmp_path) == checkpoint_files(tmp_path)
    latest = reopened.latest_valid_checkpoint()
    assert latest is not None
    restored = Net()
    loaded = reopened.load_checkpoint(latest, restored)
    expected = before if loaded.epoch == 0 else after
    assert states_equal(restored.state_dict(), expected)
    if point in ("after the rename, before the index", "before deleting what retention drops"):
        assert loaded.epoch == 1  # renamed into place: it is the last finished checkpoint


@pytest.mark.slow
def test_sigkill_at_a_random_moment_of_repeated_saves_c1(tmp_path: Path) -> None:
    script = f"""
import sys, torch
from treadle.engine.checkpoints import CheckpointManager
manager = CheckpointManager({str(tmp_path)!r}, keep_best_k=1, keep_last_n=2)
model = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(8)])
epoch = 0
while True:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float(epoch))
    manager.save_checkpoint(epoch, {{"val_loss": 1.0 / (epoch + 1)}}, model, None)
    print(epoch, flush=True)
    epoch += 1
"""
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if int(line) >= 3:
                break
        time.sleep(0.013)
    finally:
        child.kill()
        child.wait()
    manager = CheckpointManager(tmp_path, keep_best_k=1, keep_last_n=2)
    assert temp_files(tmp_path) == []
    assert index_files(tmp_path) == checkpoint_files(tmp_path)
    latest = manager.latest_valid_checkpoint()
    assert latest is not None
    model = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(8)])
    loaded = manager.load_checkpoint(latest, model)
    assert loaded.epoch >= 3
    assert all(bool((p == float(loaded.epoch)).all()) for p in model.parameters())


def test_stray_temp_files_of_dead_writers_are_swept_and_live_ones_kept_c1(tmp_path: Path) -> None:
    token = names_module.process_token()
    other_token = "0" * 12 if token != "0" * 12 else "1" * 12
    dead = f".epoch_001.pt.{os.getpid()}-{other_token}-0.tmp"  # our pid, a previous process
    live = f".epoch_002.pt.{os.getppid()}-{other_token}-0.tmp"  # a live process's save
    mine = f".epoch_003.pt.{os.getpid()}-{token}-7.tmp"  # this process's save in flight
    unrelated = ".notes.txt.1-000000000000-0.tmp"
    for name in (dead, live, mine, unrelated):
        (tmp_path / name).write_bytes(b"partial")
    CheckpointManager(tmp_path)
    assert sorted(temp_files(tmp_path)) == sorted([live, mine, unrelated])


# -- C2: a full disk -----------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
@pytest.mark.parametrize("full_at", ["checkpoint", "index"])
def test_a_full_disk_names_the_path_and_changes_nothing_c2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, full_at: str
) -> None:
    model, optimizer, _ = trained()
    manager = CheckpointManager(tmp_path, keep_best_k=0, keep_last_n=1)
    manager.save_checkpoint(0, {"val_loss": 1.0}, model, optimizer)
    old = (tmp_path / "epoch_000.pt").read_bytes()
    old_index = (tmp_path / INDEX_NAME).read_bytes()
    real_write = os.write
    fragment = ".epoch_001.pt." if full_at == "checkpoint" else f".{INDEX_NAME}."

    def write(fd: int, data: Any) -> int:
        if fragment in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(CheckpointError, match="the disk is full") as caught:
        manager.save_checkpoint(1, {"val_loss": 0.5}, model, optimizer)
    monkeypatch.undo()
    target = "epoch_001.pt" if full_at == "checkpoint" else INDEX_NAME
    assert str(tmp_path / target) in str(caught.value)
    assert (tmp_path / "epoch_000.pt").read_bytes() == old, "the older checkpoint is untouched"
    assert (tmp_path / INDEX_NAME).read_bytes() == old_index
    assert temp_files(tmp_path) == []
    assert CheckpointManager(tmp_path).latest_valid_checkpoint() is not None


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_a_full_disk_while_replacing_a_name_keeps_the_old_file_listed_c2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, optimizer, _ = trained()
    manager = CheckpointManager(tmp_path)
    manager.save_checkpoint(0, {"val_loss": 1.0}, model, optimizer)
    old = (tmp_path / "epoch_000.pt").read_bytes()
    real_write = os.write

    def write(fd: int, data: Any) -> int:
        if ".epoch_000.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(CheckpointError, match="the disk is full"):
        manager.save_checkpoint(0, {"val_loss": 0.5}, model, optimizer)
    monkeypatch.undo()
    assert (tmp_path / "epoch_000.pt").read_bytes() == old
    assert index_files(tmp_path) == {"epoch_000.pt"}
    assert manager.latest_valid_checkpoint() == tmp_path / "epoch_000.pt"


# -- C3: damaged files ---------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _empty(path: Path) -> None:
    os.truncate(path, 0)


def _garbage(path: Path) -> None:
    size = path.stat().st_size
    path.write_bytes((b"GARBAGE!" * size)[:size])


DAMAGE: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # damage -> (how, message for a listed file, message for an unlisted one)
    "truncated": (_truncate, "truncated", "truncated"),
    "empty": (_empty, "empty", "empty"),
    "garbage": (_garbage, "sha256", "not a torch checkpoint archive"),
    "bit flip": (flip_bit_in_largest_record, "flipped bit", "CRC-32"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("listed", [True, False], ids=["listed", "unlisted"])
def test_a_damaged_file_is_refused_naming_it_and_the_damage_c3(
    tmp_path: Path, damage: str, listed: bool
) -> None:
    model, optimizer, _ = trained()
    manager = CheckpointManager(tmp_path / "run")
    saved = manager.save_checkpoint(0, {"val_loss": 1.0}, model, optimizer)
    path = Path(saved.path)
    if not listed:  # a file from elsewhere: only its zip CRCs vouch for it
        path = path.rename(tmp_path / "copied.pt")
    how, listed_message, unlisted_message = DAMAGE[damage]
    how(path)
    with pytest.raises(
        CheckpointError, match=listed_message if listed else unlisted_message
    ) as caught:
        manager.load_checkpoint(path, fresh()[0])
    assert str(path) in str(caught.value)


def test_a_torch_file_that_is_no_checkpoint_is_refused_c3(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path / "run")
    tensor_file, state_file = tmp_path / "tensor.pt", tmp_path / "state.pt"
    torch.save(torch.ones(3), tensor_file)
    torch.save(Net().state_dict(), state_file)
    with pytest.raises(CheckpointError, match=r"tensor\.pt holds a Tensor, not a treadle"):
        manager.load_checkpoint(tensor_file, Net())
    with pytest.raises(CheckpointError, match=r"state\.pt is a bare state_dict"):
        manager.load_checkpoint(state_file, Net())
    with pytest.raises(CheckpointError, match="does not exist"):
        manager.load_checkpoint(tmp_path / "missing.pt", Net())


def test_a_checkpoint_of_another_model_is_refused_naming_the_file(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    saved = manager.save_checkpoint(0, {}, torch.nn.Linear(3, 3), None)
    with pytest.raises(CheckpointError, match=r"epoch_000\.pt does not fit the model"):
        manager.load_checkpoint(saved.path, Net())


def test_resume_falls_back_past_damaged_checkpoints_and_says_which_c3(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model, optimizer, _ = trained()
    manager = CheckpointManager(tmp_path, keep_last_n=5)
    for epoch in range(4):
        manager.save_checkpoint(epoch, {"val_loss": 1.0}, model, optimizer)
    flip_bit_in_largest_record(tmp_path / "epoch_003.pt")
    _truncate(tmp_path / "epoch_002.pt")
    with caplog.at_level(logging.WARNING, logger="treadle.engine.checkpoints"):
        latest = CheckpointManager(tmp_path, keep_last_n=5).latest_valid_checkpoint()
    assert latest == tmp_path / "epoch_001.pt"
    warned = " ".join(record.getMessage() for record in caplog.records)
    assert "epoch_003.pt: its sha256" in warned
    assert "epoch_002.pt: it is truncated" in warned
    manager.load_checkpoint(latest, fresh()[0])


def test_no_valid_checkpoint_gives_none_c3(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    assert manager.latest_valid_checkpoint() is None
    saved = manager.save_checkpoint(0, {}, Net(), None)
    _empty(Path(saved.path))
    assert manager.latest_valid_checkpoint() is None


# -- C6: pickled objects ---------------------------------------------------------------------------

RAN: list[str] = []


def _record_call(tag: str) -> str:
    RAN.append(tag)
    return tag


class Payload:
    """Unpickling this calls :func:`_record_call`: stands in for code a file could run."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_record_call, ("unpickled",))


@pytest.mark.parametrize("force_no_weights_only", [False, True])
def test_a_checkpoint_carrying_pickled_objects_is_refused_c6(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, force_no_weights_only: bool
) -> None:
    if force_no_weights_only:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    manager = CheckpointManager(tmp_path)
    path = tmp_path / "epoch_000.pt"
    torch.save({"model_state_dict": Net().state_dict(), "extra": Payload()}, path)
    RAN.clear()
    with pytest.raises(CheckpointError, match="carries arbitrary pickled objects") as caught:
        manager.load_checkpoint(path, Net())
    assert str(path) in str(caught.value)
    assert "_record_call" in str(caught.value)
    assert RAN == [], "nothing in the file ran"


# -- the manifest ----------------------------------------------------------------------------------


def test_the_manifest_is_rebuilt_from_the_files_when_deleted(tmp_path: Path) -> None:
    model, optimizer, _ = trained()
    manager = CheckpointManager(tmp_path, keep_best_k=1, keep_last_n=1)
    for epoch, loss in enumerate([0.3, 0.5, 0.4]):
        manager.save_checkpoint(epoch, {"val_loss": loss}, model, optimizer)
    before = json.loads((tmp_path / INDEX_NAME).read_text(encoding="utf-8"))
    (tmp_path / INDEX_NAME).unlink()

    rebuilt = CheckpointManager(tmp_path, keep_best_k=1, keep_last_n=1)
    after = json.loads((tmp_path / INDEX_NAME).read_text(encoding="utf-8"))
    for row in before["checkpoints"] + after["checkpoints"]:
        del row["sequence"]  # an ordering key: renumbered, the order kept
    assert after["checkpoints"] == before["checkpoints"]
    assert rebuilt.get_best_checkpoint() == str(tmp_path / "epoch_000.pt")
    assert rebuilt.latest_valid_checkpoint() == tmp_path / "epoch_002.pt"


def test_a_corrupt_manifest_is_set_aside_and_rebuilt(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    manager.save_checkpoint(0, {"val_loss": 0.3}, Net(), None)
    (tmp_path / INDEX_NAME).write_text('{"format": "treadle.checkpoints", "checkp')
    rebuilt = CheckpointManager(tmp_path)
    assert (tmp_path / f"{INDEX_NAME}.corrupt").exists()
    assert index_files(tmp_path) == {"epoch_000.pt"}
    assert rebuilt.get_best_checkpoint() == str(tmp_path / "epoch_000.pt")


def test_a_manifest_naming_files_outside_the_folder_deletes_nothing_there(tmp_path: Path) -> None:
    run = tmp_path / "run"
    outside = tmp_path / "precious.pt"
    outside.write_bytes(b"keep me")
    manager = CheckpointManager(run, keep_best_k=0, keep_last_n=1)
    manager.save_checkpoint(0, {}, Net(), None)
    document = json.loads((run / INDEX_NAME).read_text(encoding="utf-8"))
    document["checkpoints"][0]["file"] = "../precious.pt"
    document["deleting"] = ["../precious.pt"]
    (run / INDEX_NAME).write_text(json.dumps(document))

    reopened = CheckpointManager(run, keep_best_k=0, keep_last_n=1)
    for epoch in (1, 2):
        reopened.save_checkpoint(epoch, {}, Net(), None)
    reopened.wait()
    assert outside.read_bytes() == b"keep me"
    assert checkpoint_files(run) == {"epoch_002.pt"}
    with pytest.raises(CheckpointError, match="not a checkpoint name"):
        reopened.load_checkpoint("precious.txt", Net())
    with pytest.raises(CheckpointError, match="NUL"):
        reopened.load_checkpoint("epoch_002.pt\x00../precious.pt", Net())


def test_a_listed_file_that_vanished_is_dropped_from_the_manifest(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    manager.save_checkpoint(0, {}, Net(), None)
    manager.save_checkpoint(1, {}, Net(), None)
    (tmp_path / "epoch_001.pt").unlink()
    reopened = CheckpointManager(tmp_path)
    assert index_files(tmp_path) == {"epoch_000.pt"}
    assert reopened.latest_valid_checkpoint() == tmp_path / "epoch_000.pt"


# -- backup folder ---------------------------------------------------------------------------------


def test_drive_backup_mirrors_finished_checkpoints_and_the_manifest(tmp_path: Path) -> None:
    model, optimizer, _ = trained()
    backup = tmp_path / "drive" / "run"
    manager = CheckpointManager(
        tmp_path / "run", keep_best_k=1, keep_last_n=1, drive_backup=True, drive_backup_path=backup
    )
    for epoch, loss in enumerate([0.3, 0.5, 0.4]):
        manager.save_checkpoint(epoch, {"val_loss": loss}, model, optimizer)
    manager.close()
    assert (
        checkpoint_files(backup)
        == checkpoint_files(tmp_path / "run")
        == {
            "epoch_000.pt",
            "epoch_002.pt",
        }
    )
    for name in checkpoint_files(backup):
        assert (backup / name).read_bytes() == (tmp_path / "run" / name).read_bytes()
    from_backup = CheckpointManager(backup)
    latest = from_backup.latest_valid_checkpoint()
    assert latest == backup / "epoch_002.pt"
    restored = Net()
    from_backup.load_checkpoint(latest, restored)
    assert states_equal(restored.state_dict(), model.state_dict())


def test_a_failing_backup_warns_and_keeps_the_local_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backup = tmp_path / "drive"
    manager = CheckpointManager(tmp_path / "run", drive_backup=True, drive_backup_path=backup)
    backup.rmdir()
    backup.write_text("the mount went away")  # a file where the folder was
    with caplog.at_level(logging.WARNING, logger="treadle.engine.checkpoints"):
        saved = manager.save_checkpoint(0, {}, Net(), None)
    assert Path(saved.path).is_file()
    assert f"to {backup} failed" in caplog.text


# -- asynchronous saving ---------------------------------------------------------------------------


def test_async_save_writes_the_state_as_it_was_at_the_call(tmp_path: Path) -> None:
    model, optimizer, _ = trained()
    expected_model = {name: value.clone() for name, value in model.state_dict().items()}
    manager = CheckpointManager(tmp_path, async_save=True)
    saved = manager.save_checkpoint(0, {"val_loss": 0.5}, model, optimizer)
    with torch.no_grad():  # training goes on while the copy is written
        for parameter in model.parameters():
            parameter.add_(1.0)
    manager.close()
    restored = Net()
    manager.load_checkpoint(saved.path, restored)
    assert states_equal(restored.state_dict(), expected_model)
    assert saved.is_best
    assert index_files(tmp_path) == {"epoch_000.pt"}


def test_async_keeps_one_save_in_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = folder_module._torch_save
    running: list[int] = []
    overlaps: list[int] = []

    def slow_save(payload: dict[str, Any], writer: Any) -> None:
        running.append(1)
        overlaps.append(len(running))
        time.sleep(0.05)
        real_save(payload, writer)
        running.pop()

    monkeypatch.setattr(folder_module, "_torch_save", slow_save)
    manager = CheckpointManager(tmp_path, async_save=True, keep_last_n=5)
    for epoch in range(3):
        manager.save_checkpoint(epoch, {}, Net(), None)
    manager.close()
    assert overlaps == [1, 1, 1]
    assert index_files(tmp_path) == {"epoch_000.pt", "epoch_001.pt", "epoch_002.pt"}


@pytest.mark.parametrize("surfaces_at", ["next save", "close"])
def test_an_async_error_is_raised_at_the_next_save_or_at_close_c2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, surfaces_at: str
) -> None:
    manager = CheckpointManager(tmp_path, async_save=True)
    manager.save_checkpoint(0, {}, Net(), None)
    manager.close()
    real_write = os.write

    def full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    manager.save_checkpoint(1, {}, Net(), None)  # returns at once; the write fails behind it
    manager._join_pending()
    monkeypatch.setattr(os, "write", real_write)
    surface: Callable[[], object] = (
        (lambda: manager.save_checkpoint(2, {}, Net(), None))
        if surfaces_at == "next save"
        else manager.close
    )
    with pytest.raises(CheckpointError, match="the disk is full") as caught:
        surface()
    assert "asynchronous save" in "".join(getattr(caught.value, "__notes__", []))
    manager.close()  # raised once only
    assert index_files(tmp_path) == {"epoch_000.pt"}
    assert temp_files(tmp_path) == []


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    yield
    assert not [
        thread for thread in threading.enumerate() if thread.name.startswith("treadle-checkpoint")
    ]


# -- the manifest, read by a hostile user (issue 14) -----------------------------------------------


def _valid_manifest(folder: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((folder / INDEX_NAME).read_text(encoding="utf-8"))
    return document


def _with_row_value(key: str, raw_value: str) -> Callable[[Path], bytes]:
    """A valid manifest whose first row's ``key`` holds ``raw_value`` (JSON text as written)."""

    def make(folder: Path) -> bytes:
        document = _valid_manifest(folder)
        document["checkpoints"][0][key] = "@@VALUE@@"
        return json.dumps(document).replace('"@@VALUE@@"', raw_value).encode()

    return make


HOSTILE_MANIFESTS: dict[str, Callable[[Path], bytes]] = {
    "nested 100000 deep": lambda folder: b"[" * 100_000,
    "objects nested 100000 deep": lambda folder: b'{"a":' * 100_000,
    "size_bytes Infinity": _with_row_value("size_bytes", "Infinity"),
    "size_bytes NaN": _with_row_value("size_bytes", "NaN"),
    "epoch 1e400": _with_row_value("epoch", "1e400"),
    "epoch of 5000 digits": _with_row_value("epoch", "9" * 5000),
    "epoch a float": _with_row_value("epoch", "1.5"),
    "sequence a string": _with_row_value("sequence", '"3"'),
    "metrics a list": _with_row_value("metrics", "[1, 2]"),
    "an unknown hash": _with_row_value(
        "hash", json.dumps({"algorithm": "md5", "block_bytes": None, "hex": "0" * 32})
    ),
    "a key twice": lambda folder: (
        (folder / INDEX_NAME).read_bytes().replace(b'"format": ', b'"format": "x", "format": ', 1)
    ),
    "not UTF-8": lambda folder: b"\xff\xfe" + (folder / INDEX_NAME).read_bytes(),
    "a row listed twice": lambda folder: json.dumps(
        {
            **_valid_manifest(folder),
            "checkpoints": _valid_manifest(folder)["checkpoints"][:1] * 2,
        }
    ).encode(),
}


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding epoch_000.pt and epoch_001.pt and their manifest: copy it, don't
    change it."""
    folder = tmp_path_factory.mktemp("two_checkpoints")
    manager = CheckpointManager(folder, keep_last_n=5)
    for epoch, loss in enumerate([0.5, 0.4]):
        manager.save_checkpoint(epoch, {"val_loss": loss}, Net(), None)
    manager.close()
    return folder


def _open_with_manifest(template: Path, root: Path, raw: bytes) -> None:
    """Open a copy of ``template`` whose manifest is ``raw``: it opens (a damaged manifest is
    rebuilt, never raised), quickly, lists exactly the checkpoint files, and every file a
    valid manifest does not mark for deletion is byte for byte as it was (RELIABILITY C1)."""
    from treadle.engine.checkpoints.manifest import ManifestDamage, decode_manifest

    folder = root / "run"
    shutil.copytree(template, folder)
    (folder / INDEX_NAME).write_bytes(raw)
    before = {name: (folder / name).read_bytes() for name in checkpoint_files(folder)}
    deleted: set[str] = set()
    try:
        manifest = decode_manifest(raw)
    except ManifestDamage:
        pass
    else:
        deleted = set(manifest.deleting) - {entry.file for entry in manifest.entries}
    started = time.monotonic()
    with mock.patch.object(os, "fsync"):
        manager = CheckpointManager(folder, keep_last_n=5)
    assert time.monotonic() - started < 20, "opening the folder must not hang"
    assert checkpoint_files(folder) == set(before) - deleted
    for name in checkpoint_files(folder):
        assert (folder / name).read_bytes() == before[name], name
    assert index_files(folder) == checkpoint_files(folder)
    if manager.get_best_checkpoint() is not None:
        assert Path(manager.get_best_checkpoint() or "").name in checkpoint_files(folder)


@pytest.mark.parametrize("hostile", list(HOSTILE_MANIFESTS))
def test_a_damaged_manifest_is_rebuilt_from_the_files_whatever_it_holds_c1(
    tmp_path: Path, two_checkpoints: Path, hostile: str
) -> None:
    raw = HOSTILE_MANIFESTS[hostile](two_checkpoints)
    _open_with_manifest(two_checkpoints, tmp_path, raw)
    assert (tmp_path / "run" / f"{INDEX_NAME}.corrupt").read_bytes() == raw
    reopened = CheckpointManager(tmp_path / "run", keep_last_n=5)
    assert reopened.get_best_checkpoint() == str(tmp_path / "run" / "epoch_001.pt")
    restored = Net()
    reopened.load_checkpoint("epoch_001.pt", restored)


def test_a_manifest_past_the_size_limit_is_rebuilt_c1(
    tmp_path: Path, two_checkpoints: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from treadle.engine.checkpoints import manifest

    raw = (two_checkpoints / INDEX_NAME).read_bytes()
    monkeypatch.setattr(manifest, "MAX_MANIFEST_BYTES", len(raw) - 1)
    _open_with_manifest(two_checkpoints, tmp_path, raw)
    assert (tmp_path / "run" / f"{INDEX_NAME}.corrupt").exists()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=50, deadline=None)
@given(raw=st.binary(max_size=1024))
def test_arbitrary_bytes_as_the_manifest_are_rebuilt_from_the_files_c1(
    two_checkpoints: Path, raw: bytes
) -> None:
    with tempfile.TemporaryDirectory() as root:
        _open_with_manifest(two_checkpoints, Path(root), raw)


@settings(max_examples=50, deadline=None)
@given(value=json_values)
def test_arbitrary_json_as_the_manifest_is_rebuilt_from_the_files_c1(
    two_checkpoints: Path, value: Any
) -> None:
    with tempfile.TemporaryDirectory() as root:
        _open_with_manifest(two_checkpoints, Path(root), json.dumps(value).encode())


@settings(max_examples=80, deadline=None)
@given(
    where=st.sampled_from(["row", "row", "row", "top"]),
    key_index=st.integers(0, 20),
    value=json_values,
    drop=st.booleans(),
)
def test_a_manifest_with_any_field_changed_or_missing_opens_and_agrees_with_the_files_c1(
    two_checkpoints: Path, where: str, key_index: int, value: Any, drop: bool
) -> None:
    document = _valid_manifest(two_checkpoints)
    target = document["checkpoints"][0] if where == "row" else document
    key = sorted(target)[key_index % len(target)]
    if drop:
        del target[key]
    else:
        target[key] = value
    with tempfile.TemporaryDirectory() as root:
        _open_with_manifest(two_checkpoints, Path(root), json.dumps(document).encode())


# -- C6: legacy and raw pickle files found in the folder -----------------------------------------


def test_a_pickle_file_found_at_start_up_is_refused_as_carrying_pickled_objects_c6(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw_pickle = tmp_path / "epoch_000.pt"
    raw_pickle.write_bytes(pickle.dumps({"model_state_dict": {}, "extra": Payload()}, protocol=2))
    legacy = tmp_path / "epoch_001.pt"
    torch.save(
        {"model_state_dict": Net().state_dict(), "extra": Payload()},
        legacy,
        _use_new_zipfile_serialization=False,
    )
    RAN.clear()
    with caplog.at_level(logging.WARNING, logger="treadle.engine.checkpoints"):
        manager = CheckpointManager(tmp_path)
    warnings = [record.getMessage() for record in caplog.records]
    for path in (raw_pickle, legacy):
        (warning,) = [message for message in warnings if str(path) in message]
        assert "carries arbitrary pickled objects" in warning
        assert "is refused" in warning
        assert "mmap" not in warning
    assert RAN == [], "nothing in the files ran"
    assert index_files(tmp_path) == set()
    assert manager.latest_valid_checkpoint() is None


def test_a_legacy_format_checkpoint_of_plain_values_is_listed_and_loads(tmp_path: Path) -> None:
    model = Net()
    torch.save(
        {"model_state_dict": model.state_dict(), "epoch": 0, "metrics": {"val_loss": 0.5}},
        tmp_path / "epoch_000.pt",
        _use_new_zipfile_serialization=False,
    )
    manager = CheckpointManager(tmp_path)
    assert index_files(tmp_path) == {"epoch_000.pt"}
    restored = Net()
    loaded = manager.load_checkpoint("epoch_000.pt", restored)
    assert loaded.metrics == {"val_loss": 0.5}
    assert states_equal(restored.state_dict(), model.state_dict())


# -- pending deletions in the manifest -------------------------------------------------------------


@pytest.mark.parametrize("on_a_thread", [False, True], ids=["inline", "background"])
def test_after_close_the_manifest_lists_no_deletion_of_a_file_that_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_a_thread: bool
) -> None:
    if on_a_thread:
        monkeypatch.setattr(folder_module, "_BACKGROUND_BYTES", 0)
    manager = CheckpointManager(tmp_path, keep_best_k=0, keep_last_n=1)
    for epoch in range(3):
        manager.save_checkpoint(epoch, {}, Net(), None)
    manager.close()
    assert checkpoint_files(tmp_path) == {"epoch_002.pt"}
    assert _valid_manifest(tmp_path)["deleting"] == []


def test_opening_a_folder_drops_finished_deletions_from_the_manifest(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_best_k=0, keep_last_n=1)
    for epoch in range(2):
        manager.save_checkpoint(epoch, {}, Net(), None)
    manager._join_pending()  # as a process ending without close()
    assert _valid_manifest(tmp_path)["deleting"] == ["epoch_000.pt"]
    CheckpointManager(tmp_path, keep_best_k=0, keep_last_n=1)
    assert _valid_manifest(tmp_path)["deleting"] == []
    assert index_files(tmp_path) == checkpoint_files(tmp_path) == {"epoch_001.pt"}


# -- digests ---------------------------------------------------------------------------------------


def _blocks_by_hand(data: bytes, algorithm: str, block_bytes: int) -> str:
    """The block digest as docs/checkpoints.md tells a user to compute it."""
    blocks = [
        hashlib.new(algorithm, data[start : start + block_bytes]).digest()
        for start in range(0, max(len(data), 1), block_bytes)
    ]
    return hashlib.new(algorithm, b"".join(blocks)).hexdigest()


def test_the_manifest_names_its_hash_and_the_digest_is_the_documented_one(tmp_path: Path) -> None:
    from treadle.engine.checkpoints.digests import BLOCK_BYTES

    manager = CheckpointManager(tmp_path)
    saved = manager.save_checkpoint(0, {}, Net(), None)
    (row,) = _valid_manifest(tmp_path)["checkpoints"]
    assert row["hash"]["algorithm"] == "sha256"
    assert row["hash"]["block_bytes"] == BLOCK_BYTES == 16 << 20
    data = Path(saved.path).read_bytes()
    assert row["hash"]["hex"] == _blocks_by_hand(data, "sha256", BLOCK_BYTES)
    assert _valid_manifest(tmp_path)["format_version"] == 3


@pytest.mark.parametrize("algorithm", ["sha256", "blake2b"])
def test_a_file_written_in_pieces_hashes_block_by_block_as_by_hand(
    tmp_path: Path, algorithm: str
) -> None:
    from treadle.engine.checkpoints.digests import HashKind, hash_file

    kind = HashKind(algorithm=algorithm, block_bytes=1 << 16)
    data = os.urandom(5 * (1 << 16) + 12_345)
    pieces = [data[start : start + 7_777] for start in range(0, len(data), 7_777)]

    def write(writer: files_module.FileWriter) -> None:
        for piece in pieces:
            writer.write(piece)

    target = tmp_path / "blocks.bin"
    digest, size = files_module.write_atomically(target, write, "test file", hashing=kind)
    assert size == len(data)
    assert target.read_bytes() == data
    assert digest is not None
    assert digest.hex == _blocks_by_hand(data, algorithm, 1 << 16)
    assert hash_file(target, kind) == digest
    whole = hash_file(target, HashKind(algorithm=algorithm, block_bytes=None))
    assert whole.hex == hashlib.new(algorithm, data).hexdigest()


def _rewrite_row_hash(folder: Path, name: str, **row_changes: Any) -> None:
    document = _valid_manifest(folder)
    for row in document["checkpoints"]:
        if row["file"] == name:
            del row["hash"]
            row.update(row_changes)
    document["format_version"] = 1 if "sha256" in row_changes else 2
    (folder / INDEX_NAME).write_text(json.dumps(document), encoding="utf-8")


@pytest.mark.parametrize("kind", ["treadle 0.1 sha256 of the whole file", "blake2b blocks"])
def test_older_and_other_digests_still_verify_and_catch_a_flipped_bit_c3(
    tmp_path: Path, kind: str
) -> None:
    model, optimizer, _ = trained()
    saved = CheckpointManager(tmp_path).save_checkpoint(0, {"val_loss": 1.0}, model, optimizer)
    data = Path(saved.path).read_bytes()
    if kind.startswith("treadle 0.1"):
        _rewrite_row_hash(tmp_path, "epoch_000.pt", sha256=hashlib.sha256(data).hexdigest())
        described = "its sha256 is"
    else:
        digest = {"algorithm": "blake2b", "block_bytes": 1 << 16}
        digest["hex"] = _blocks_by_hand(data, "blake2b", 1 << 16)
        _rewrite_row_hash(tmp_path, "epoch_000.pt", hash=digest)
        described = "its blake2b over 64 KiB blocks is"
    manager = CheckpointManager(tmp_path)
    assert not (tmp_path / f"{INDEX_NAME}.corrupt").exists()
    assert manager.latest_valid_checkpoint() == Path(saved.path)
    restored, restored_optimizer, _ = fresh()
    manager.load_checkpoint(saved.path, restored, restored_optimizer)
    assert states_equal(restored.state_dict(), model.state_dict())
    flip_bit_in_largest_record(Path(saved.path))
    with pytest.raises(CheckpointError, match=described):
        manager.load_checkpoint(saved.path, fresh()[0])
