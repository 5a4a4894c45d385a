"""Exact resume (RELIABILITY C4): a run stopped by SIGTERM after an epoch, or mid-epoch (0 and
2 loader workers, inside an accumulation window), and resumed in a fresh process gives losses
and parameters ``torch.equal`` to an uninterrupted run on the CPU."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.trainer_fixtures import needs_engine, needs_main_job

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import attrs
    import torch
    from torch.utils.data import DataLoader
    sys.path.insert(0, {root!r})
    from tests.trainer_fixtures import (
        Blobs, TinyClassifier, classification_task, engine_plugin_manager, small_config)
    from treadle import hookimpl
    from treadle.engine.trainer import Trainer

    run_dir, record, workers, accumulation, stop_at, resume, source = sys.argv[1:]
    workers, accumulation, stop_at = int(workers), int(accumulation), int(stop_at)

    class Record:
        losses = []

        @hookimpl
        def treadle_on_batch_end(self, trainer, loss):
            self.losses.append(loss.clone())
            if stop_at >= 0 and trainer.global_step == stop_at and not self.sent:
                self.sent = True
                os.kill(os.getpid(), signal.SIGTERM)  # saved at the next step boundary
        sent = False

    recorder = Record()
    config = small_config(
        run_dir, epochs=3, gradient_accumulation_steps=accumulation, num_workers=workers,
        resume=resume or None, dropout=0.2, save_every_n_epochs=1)
    torch.manual_seed(0)
    model = TinyClassifier(dropout=0.2)
    if source == "loader":
        train = DataLoader(Blobs(72, seed=0), batch_size=8, shuffle=True, num_workers=workers)
        val = DataLoader(Blobs(24, seed=1), batch_size=8)
    else:
        train, val = Blobs(72, seed=0), Blobs(24, seed=1)
    manager = engine_plugin_manager(("record", recorder))
    task = classification_task()
    if source != "loader":  # batched by treadle's DataLoaderFactory through this collator
        manager.registry("collators").register("stack", torch.utils.data.default_collate)
        task = attrs.evolve(task, collator="stack")
    results = Trainer(model, None, config, task, device="cpu",
                      plugin_manager=manager).train(train, val)
    torch.save({{"losses": recorder.losses, "state": model.state_dict(),
                "stop_reason": results["stop_reason"], "history": results["history"]}}, record)
    """
)


def run_part(
    tmp_path: Path,
    run_dir: Path,
    name: str,
    *,
    workers: int,
    accumulation: int,
    stop_at: int = -1,
    resume: str = "",
    source: str = "loader",
) -> dict[str, Any]:
    script = tmp_path / "train_part.py"
    script.write_text(SCRIPT.format(root=str(ROOT)), encoding="utf-8")
    record = tmp_path / f"{name}.pt"
    completed = subprocess.run(
        [
            sys.executable,
            str(script),
            str(run_dir),
            str(record),
            str(workers),
            str(accumulation),
            str(stop_at),
            resume,
            source,
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    loaded: dict[str, Any] = torch.load(record, weights_only=True)
    return loaded


def assert_same_run(reference: dict[str, Any], parts: list[dict[str, Any]]) -> None:
    losses = [loss for part in parts for loss in part["losses"]]
    assert len(losses) == len(reference["losses"])
    for index, (resumed, expected) in enumerate(zip(losses, reference["losses"], strict=True)):
        assert torch.equal(resumed, expected), f"batch {index}: {resumed} != {expected}"
    final = parts[-1]["state"]
    for name, tensor in reference["state"].items():
        assert torch.equal(final[name], tensor), name

    def without_time(history: list[dict[str, float]]) -> list[dict[str, float]]:
        return [{k: v for k, v in row.items() if k != "epoch_time"} for row in history]

    assert without_time(parts[-1]["history"]) == without_time(reference["history"])


# 72 samples / batch 8 = 9 batches per epoch; with accumulation 2: 5 steps per epoch, the last
# on a single batch. A SIGTERM at a batch end inside a window saves at the window's end.
CASES = [
    pytest.param(0, 1, 9, id="after-epoch-boundary"),  # signal after epoch 0's last step
    pytest.param(0, 1, 12, id="mid-epoch-0-workers"),
    pytest.param(2, 1, 12, id="mid-epoch-2-workers"),
    pytest.param(0, 2, 7, id="mid-epoch-inside-accumulation-window"),
]


@needs_engine
@pytest.mark.slow
@pytest.mark.parametrize(("workers", "accumulation", "stop_at"), CASES)
def test_sigterm_then_resume_in_a_fresh_process_is_bit_identical_c4(
    tmp_path: Path, workers: int, accumulation: int, stop_at: int
) -> None:
    reference = run_part(
        tmp_path, tmp_path / "reference", "reference", workers=workers, accumulation=accumulation
    )
    run_dir = tmp_path / "resumed"
    first = run_part(
        tmp_path, run_dir, "first", workers=workers, accumulation=accumulation, stop_at=stop_at
    )
    assert first["stop_reason"] == "SIGTERM"
    assert len(first["losses"]) < len(reference["losses"])
    second = run_part(
        tmp_path, run_dir, "second", workers=workers, accumulation=accumulation, resume="auto"
    )
    assert second["stop_reason"] is None
    assert_same_run(reference, [first, second])


@needs_main_job
@pytest.mark.slow
def test_resume_through_the_data_factory_may_change_the_worker_count_c4(tmp_path: Path) -> None:
    reference = run_part(
        tmp_path, tmp_path / "reference", "reference", workers=0, accumulation=1, source="dataset"
    )
    run_dir = tmp_path / "resumed"
    first = run_part(
        tmp_path, run_dir, "first", workers=0, accumulation=1, stop_at=11, source="dataset"
    )
    second = run_part(
        tmp_path, run_dir, "second", workers=2, accumulation=1, resume="auto", source="dataset"
    )
    assert_same_run(reference, [first, second])


@needs_engine
def test_resume_auto_falls_back_past_a_damaged_checkpoint_and_says_which_c3(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """RELIABILITY C3 through the Trainer: the newest checkpoint has a flipped bit, so
    ``resume="auto"`` starts from the one before and warns naming the damaged file."""
    from tests.test_checkpoints import flip_bit_in_largest_record
    from tests.trainer_fixtures import (
        TinyClassifier,
        classification_task,
        engine_plugin_manager,
        loaders,
        small_config,
    )
    from treadle import hookimpl
    from treadle.engine.trainer import Trainer

    class EpochStarts:
        def __init__(self) -> None:
            self.epochs: list[int] = []

        @hookimpl
        def treadle_on_epoch_start(self, epoch: int) -> None:
            self.epochs.append(epoch)

    started = EpochStarts()

    def train(epochs: int, resume: str | None) -> dict[str, Any]:
        torch.manual_seed(0)
        config = small_config(tmp_path, epochs=epochs, resume=resume, keep_last_n=5)
        trainer = Trainer(
            TinyClassifier(),
            None,
            config,
            classification_task(),
            device="cpu",
            plugin_manager=engine_plugin_manager(("epochs", started)),
        )
        return trainer.train(*loaders())

    train(2, None)
    started.epochs.clear()
    damaged = tmp_path / "epoch_001.pt"
    flip_bit_in_largest_record(damaged)
    with caplog.at_level(logging.WARNING, logger="treadle.engine.checkpoints"):
        results = train(3, "auto")
    warned = [r.getMessage() for r in caplog.records if str(damaged) in r.getMessage()]
    assert any("skipping damaged checkpoint" in message for message in warned), warned
    assert started.epochs == [1, 2], "resumed after epoch 0, the last sound checkpoint"
    assert [row["epoch"] for row in results["history"]] == [0, 1, 2]
    assert results["stop_reason"] is None
