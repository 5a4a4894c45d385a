"""SIGINT and SIGTERM in library use (issue 13): ``Trainer.train`` turns the first Ctrl-C into
a checkpoint at the next optimizer step and a clean stop that resumes exactly, a second one
into an immediate ``KeyboardInterrupt``; it installs its handlers only while it runs and only
from the main thread, puts the previous ones back, leaves an ignored signal ignored, and
``handle_signals=False`` leaves signals alone."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.processes import default_sigint
from tests.test_resume import assert_same_run
from tests.trainer_fixtures import (
    TinyClassifier,
    classification_task,
    engine_plugin_manager,
    loaders,
    needs_engine,
    small_config,
)
from treadle import hookimpl
from treadle.engine.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from torch.utils.data import DataLoader
    sys.path.insert(0, {root!r})
    from tests.trainer_fixtures import (
        Blobs, TinyClassifier, classification_task, engine_plugin_manager, small_config)
    from treadle import hookimpl
    from treadle.engine.trainer import Trainer

    run_dir, record, stop_at, times, resume = sys.argv[1:]
    stop_at, times = int(stop_at), int(times)

    class Record:
        losses = []
        sent = False

        @hookimpl
        def treadle_on_batch_end(self, trainer, loss):
            self.losses.append(loss.clone())
            if stop_at >= 0 and trainer.global_step == stop_at and not self.sent:
                self.sent = True
                for _ in range(times):
                    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, as a terminal sends it

    recorder = Record()
    config = small_config(run_dir, epochs=3, resume=resume or None, dropout=0.2)
    torch.manual_seed(0)
    model = TinyClassifier(dropout=0.2)
    train = DataLoader(Blobs(72, seed=0), batch_size=8, shuffle=True)
    val = DataLoader(Blobs(24, seed=1), batch_size=8)
    trainer = Trainer(model, None, config, classification_task(), device="cpu",
                      plugin_manager=engine_plugin_manager(("record", recorder)))
    try:
        results = trainer.train(train, val)
    except KeyboardInterrupt as error:
        torch.save({{"aborted": str(error), "losses": recorder.losses}}, record)
        raise SystemExit(130)
    torch.save({{"losses": recorder.losses, "state": model.state_dict(),
                "stop_reason": results["stop_reason"], "status": results.get("status"),
                "history": results["history"]}}, record)
    """
)


def run_part(
    tmp_path: Path, run_dir: Path, name: str, *, stop_at: int = -1, times: int = 1, resume: str = ""
) -> tuple[int, dict[str, Any]]:
    script = tmp_path / "train_part.py"
    script.write_text(SCRIPT.format(root=str(ROOT)), encoding="utf-8")
    record = tmp_path / f"{name}.pt"
    completed = subprocess.run(
        [sys.executable, str(script), str(run_dir), str(record), str(stop_at), str(times), resume],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=300,
        preexec_fn=default_sigint,
    )
    assert record.exists(), completed.stderr[-3000:]
    loaded: dict[str, Any] = torch.load(record, weights_only=True)
    return completed.returncode, loaded


@needs_engine
@pytest.mark.slow
def test_ctrl_c_mid_epoch_saves_and_resumes_bit_identically(tmp_path: Path) -> None:
    """72 samples / batch 8 = 9 steps per epoch: Ctrl-C at step 12 is inside epoch 1."""
    code, reference = run_part(tmp_path, tmp_path / "reference", "reference")
    assert code == 0
    run_dir = tmp_path / "resumed"
    code, first = run_part(tmp_path, run_dir, "first", stop_at=12)
    assert code == 0, first.get("aborted")
    assert (first["stop_reason"], first["status"]) == ("SIGINT", "interrupted")
    assert list(run_dir.glob("epoch_001_step_*.pt")), "saved mid-epoch"
    code, second = run_part(tmp_path, run_dir, "second", resume="auto")
    assert code == 0
    assert (second["stop_reason"], second["status"]) == (None, "completed")
    assert_same_run(reference, [first, second])


@needs_engine
@pytest.mark.slow
def test_a_second_ctrl_c_raises_keyboard_interrupt_at_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code, aborted = run_part(tmp_path, run_dir, "aborted", stop_at=12, times=2)
    assert code == 130
    assert "aborted at once by a second Ctrl-C" in aborted["aborted"]
    assert not list(run_dir.glob("epoch_*_step_*.pt")), "nothing was saved after the abort"
    from treadle.engine.checkpoints.run_folder import read_run_info

    info = read_run_info(run_dir)
    assert info is not None
    assert info.status == "interrupted"


class _Seen:
    """Records the SIGINT and SIGTERM handlers in place while the run trains."""

    def __init__(self) -> None:
        self.handlers: list[tuple[Any, Any]] = []

    @hookimpl
    def treadle_on_training_start(self) -> None:
        self.handlers.append((signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)))


def _train(tmp_path: Path, seen: _Seen, **overrides: Any) -> dict[str, Any]:
    torch.manual_seed(0)
    trainer = Trainer(
        TinyClassifier(),
        None,
        small_config(tmp_path / "run", epochs=1, **overrides),
        classification_task(),
        device="cpu",
        plugin_manager=engine_plugin_manager(("seen", seen)),
    )
    return trainer.train(*loaders())


def _mine(signum: int, frame: Any) -> None:
    """An application's own handler."""


@needs_engine
def test_train_installs_its_handlers_only_while_it_runs(tmp_path: Path) -> None:
    previous = signal.signal(signal.SIGINT, _mine), signal.signal(signal.SIGTERM, _mine)
    try:
        seen = _Seen()
        _train(tmp_path, seen)
        (during,) = seen.handlers
        assert during[0] is not _mine, "SIGINT is the Trainer's while it trains"
        assert during[1] is not _mine
        assert signal.getsignal(signal.SIGINT) is _mine, "put back afterwards"
        assert signal.getsignal(signal.SIGTERM) is _mine

        class Boom:
            @hookimpl
            def treadle_on_epoch_end(self) -> None:
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            Trainer(
                TinyClassifier(),
                None,
                small_config(tmp_path / "failing", epochs=1),
                classification_task(),
                device="cpu",
                plugin_manager=engine_plugin_manager(("boom", Boom())),
            ).train(*loaders())
        assert signal.getsignal(signal.SIGINT) is _mine, "put back after a failure too"
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


@needs_engine
def test_handle_signals_false_and_an_ignored_signal_are_left_alone(tmp_path: Path) -> None:
    previous = signal.signal(signal.SIGINT, _mine), signal.signal(signal.SIGTERM, _mine)
    try:
        seen = _Seen()
        _train(tmp_path, seen, handle_signals=False)
        assert seen.handlers == [(_mine, _mine)]
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # nohup, a background job
        seen = _Seen()
        _train(tmp_path / "second", seen)
        (during,) = seen.handlers
        assert during[0] is signal.SIG_IGN, "an ignored Ctrl-C stays ignored"
        assert during[1] is not _mine
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


@needs_engine
def test_train_in_a_thread_installs_nothing(tmp_path: Path) -> None:
    previous = signal.signal(signal.SIGINT, _mine)
    try:
        seen = _Seen()
        failures: list[BaseException] = []

        def work() -> None:
            try:
                _train(tmp_path, seen)
            except BaseException as error:
                failures.append(error)

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        assert not failures
        assert seen.handlers[0][0] is _mine
        assert signal.getsignal(signal.SIGINT) is _mine
    finally:
        signal.signal(signal.SIGINT, previous)


@needs_engine
def test_a_run_a_signal_stopped_is_interrupted_in_the_experiment_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process: SIGTERM at step 3 stops the run after saving; its experiment record says
    ``interrupted``, names this process, was beating, and its heartbeat thread is gone."""
    import os
    import time

    import treadle_loggers.plugin
    import treadle_losses.plugin
    import treadle_metrics.plugin
    import treadle_tracking.logger
    import treadle_tracking.plugin
    from treadle.experiments import ExperimentDB
    from treadle.testing import isolated_plugin_manager

    monkeypatch.setattr(treadle_tracking.logger, "HEARTBEAT_SECONDS", 0.02)
    beats: list[str | None] = []

    class StopAtThree:
        @hookimpl
        def treadle_on_batch_end(self, trainer: Any) -> None:
            if trainer.global_step == 3 and not beats:
                time.sleep(0.2)  # a few heartbeats
                with ExperimentDB(tmp_path / "runs.db") as db:
                    beats.append(db.find_runs()[0].heartbeat_at)
                os.kill(os.getpid(), signal.SIGTERM)

    manager = isolated_plugin_manager(
        ("losses", treadle_losses.plugin),
        ("metrics", treadle_metrics.plugin),
        ("loggers", treadle_loggers.plugin),
        ("tracking", treadle_tracking.plugin),
        ("stop", StopAtThree()),
    )
    torch.manual_seed(0)
    config = small_config(tmp_path / "run", epochs=2, experiment_location=str(tmp_path / "runs.db"))
    results = Trainer(
        TinyClassifier(), None, config, classification_task(), device="cpu", plugin_manager=manager
    ).train(*loaders())
    assert (results["status"], results["stop_reason"]) == ("interrupted", "SIGTERM")
    with ExperimentDB(tmp_path / "runs.db") as db:
        (run,) = db.find_runs()
    assert (run.status, run.owner_pid) == ("interrupted", os.getpid())
    assert beats[0] is not None
    assert run.summary["run_folder_id"] == results["run_id"]
    assert not [t for t in threading.enumerate() if t.name.startswith("treadle-experiment-heart")]
