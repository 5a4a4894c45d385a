"""The progress display: a bar per epoch and per validation pass on a terminal, in library use
as in ``treadle train``; plain lines through logging without one; nothing when switched off;
log lines, warnings and prints never glued onto a bar."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from tests.terminal import PtyRun, render, run_in_pty, stderr_on_a_pty
from tests.trainer_fixtures import (
    TINY_GPT,
    TinyClassifier,
    classification_task,
    engine_plugin_manager,
    loaders,
    needs_engine,
    needs_main_job,
    small_config,
)
from treadle import hookimpl
from treadle.engine.trainer import Trainer

#: a bar as tqdm draws it: ``Epoch 1/2:  50%|█████     | 4/8 [00:00<00:00, 9.8it/s, loss=...]``
BAR = re.compile(r"^(Epoch \d+/\d+|Validation): +\d+%\|.*\|.*\]$")


def is_bar_fragment(line: str) -> bool:
    return "%|" in line or "it/s]" in line


def assert_nothing_glued(lines: list[str]) -> None:
    """Every screen line is a whole bar or holds no piece of one."""
    for line in lines:
        if is_bar_fragment(line):
            assert BAR.match(line), f"a line glued onto a bar: {line!r}"


def train(tmp_path: Path, *extra: tuple[str, object], **overrides: Any) -> dict[str, Any]:
    config = small_config(tmp_path / "run", **{"progress_bar": True, **overrides})
    return Trainer(
        TinyClassifier(),
        None,
        config,
        classification_task(),
        device="cpu",
        plugin_manager=engine_plugin_manager(*extra),
    ).train(*loaders())


class InTheMiddle:
    """At the fourth batch of each epoch: a log line, a warning and a print."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.raw_before: list[int] = []
        self.output: bytearray | None = None

    @hookimpl
    def treadle_on_batch_end(self, batch_index: int) -> None:
        if batch_index != 3:
            return
        if self.output is not None:
            self.raw_before.append(len(self.output))
        self.log.warning("a log line in the middle")
        warnings.warn("a warning in the middle", UserWarning, stacklevel=1)
        print("a print in the middle", file=sys.stderr)


def write_warning_to_stderr(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@needs_engine
def test_a_library_run_on_a_terminal_draws_a_bar_per_epoch_and_per_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with stderr_on_a_pty(monkeypatch) as output:
        train(tmp_path)
    raw = bytes(output).decode()
    assert "Epoch 1/2:" in raw
    assert "%|" in raw, "a bar was drawn"
    assert "Validation:" in raw, "validation has its own bar"
    screen = render(output)
    assert [line.split(" in ")[0] for line in screen] == [
        "Epoch 1/2: 8/8 batches",
        "Epoch 2/2: 8/8 batches",
    ], "each finished epoch stays as one line; the validation bars are gone"
    assert "val_loss=" in screen[0]
    assert "train_loss=" in screen[0]
    assert "val_accuracy=" in screen[1]


@needs_engine
def test_switched_off_a_library_run_on_a_terminal_shows_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with stderr_on_a_pty(monkeypatch) as output:
        train(tmp_path, progress_bar=False)
    assert bytes(output) == b""


@needs_engine
def test_log_lines_warnings_and_prints_during_a_bar_get_lines_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = logging.getLogger("tests.progress.middle")
    with stderr_on_a_pty(monkeypatch) as output:
        terminal = sys.stderr
        handler = logging.StreamHandler(terminal)
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
        middle = InTheMiddle(log)
        middle.output = output
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                # pytest records warnings; write them as Python's default does, to sys.stderr
                # as it is when the warning comes
                monkeypatch.setattr(warnings, "showwarning", write_warning_to_stderr)
                train(tmp_path, ("middle", middle))
        finally:
            log.removeHandler(handler)
            log.propagate = True
        assert handler.stream is terminal, "the handler has its own stream back"
        assert handler.level == logging.WARNING
        assert sys.stderr is terminal, "sys.stderr is itself again"
    raw = bytes(output).decode()
    assert "%|" in raw[: middle.raw_before[0]], "the bar was on screen when the line came"
    screen = render(output)
    assert_nothing_glued(screen)
    assert screen.count("WARNING tests.progress.middle: a log line in the middle") == 2
    assert screen.count("a print in the middle") == 2
    assert sum("UserWarning: a warning in the middle" in line for line in screen) == 2
    assert len([line for line in screen if line.startswith("Epoch ")]) == 2


@needs_engine
def test_without_a_terminal_progress_is_plain_lines_through_logging(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import treadle_loggers.progress

    monkeypatch.setattr(treadle_loggers.progress, "PLAIN_LINE_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="treadle_loggers.progress"):
        train(tmp_path, epochs=1)
    lines = [r.getMessage() for r in caplog.records if r.name == "treadle_loggers.progress"]
    assert lines[0].startswith("Epoch 1/1: batch 1/8 (12%), ")
    assert lines[7].startswith("Epoch 1/1: batch 8/8 (100%), ")
    assert lines[8].startswith("Epoch 1/1: 8/8 batches in ")
    assert "val_loss=" in lines[8]
    assert capsys.readouterr() == ("", ""), "library code prints nothing"


@needs_engine
def test_switched_off_nothing_is_logged_and_nothing_is_bound(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trainer_results = []
    with caplog.at_level(logging.DEBUG, logger="treadle_loggers.progress"):
        config = small_config(tmp_path / "run", progress_bar=False)
        trainer = Trainer(
            TinyClassifier(),
            None,
            config,
            classification_task(),
            device="cpu",
            plugin_manager=engine_plugin_manager(),
        )
        trainer_results.append(trainer.train(*loaders()))
    assert not [r for r in caplog.records if r.name == "treadle_loggers.progress"]
    assert trainer.dispatch is not None
    assert trainer.dispatch.on_batch_end is None, "off, it costs nothing per batch"
    assert trainer.dispatch.on_validation_batch_end is None


@needs_engine
def test_the_console_logger_leaves_step_figures_to_the_bar_and_keeps_them_for_verbose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def console_levels(**overrides: Any) -> set[int]:
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="treadle_loggers.console"):
            train(tmp_path, loggers=("console",), log_every_n_steps=2, **overrides)
        return {r.levelno for r in caplog.records if r.name == "treadle_loggers.console"}

    assert console_levels() == {logging.INFO}, "no bar: the step lines are the progress"
    with stderr_on_a_pty(monkeypatch):
        assert console_levels() == {logging.DEBUG}, "under a bar: for -v"
        assert console_levels(progress_bar=False) == {logging.INFO}


class ValidationRecorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int | None, int | None]] = []

    @hookimpl
    def treadle_on_validation_batch_end(self, trainer: Any, epoch: int, batch_index: int) -> None:
        self.calls.append(
            (epoch, batch_index, trainer.num_validation_batches, trainer.num_training_batches)
        )


@needs_engine
def test_validation_batches_are_announced_with_the_counts_a_bar_needs(tmp_path: Path) -> None:
    recorder = ValidationRecorder()
    train(tmp_path, ("recorder", recorder), progress_bar=False)
    assert recorder.calls == [(epoch, index, 4, 8) for epoch in (0, 1) for index in range(4)]


def test_the_loggers_plugin_adds_the_display_to_runs_whose_config_asks_for_it() -> None:
    import treadle_loggers.plugin
    from treadle.config import TrainingConfig
    from treadle.engine.binding import configure_run
    from treadle.testing import check_hookimpls, isolated_plugin_manager
    from treadle_loggers.progress import ProgressDisplay

    manager = isolated_plugin_manager(("loggers", treadle_loggers.plugin))
    assert configure_run(manager, TrainingConfig()).logger_names == ["progress"]
    assert configure_run(manager, TrainingConfig(progress_bar=False)).logger_names == []
    assert check_hookimpls(ProgressDisplay()) == []


# -- treadle train on a terminal ---------------------------------------------------------------

TINY = [
    *TINY_GPT,
    "--set",
    "max_val_samples=32",
    "--set",
    "experiment_location=null",
]


def cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "treadle", *argv]


@needs_main_job
@pytest.mark.slow
@pytest.mark.parametrize("verbose", [False, True])
def test_treadle_train_on_a_terminal_keeps_log_lines_off_the_bar(
    tmp_path: Path, verbose: bool
) -> None:
    argv = cli(
        *(["-v"] if verbose else []),
        "train",
        *TINY,
        "--set",
        "max_train_samples=96",
        "--set",
        'loggers=["console"]',
        "--set",
        "log_every_n_steps=2",
        "--set",
        "save_every_n_steps=2",  # "saved checkpoint" lines while the bar is drawn
        "--epochs",
        "2",
    )
    status, raw = run_in_pty(argv, cwd=tmp_path, env={"TREADLE_DISABLE_PLUGINS": ""})
    screen = render(raw)
    assert status == 0, "\n".join(screen)
    assert b"%|" in raw, "a bar was drawn"
    assert_nothing_glued(screen)
    saved = [line for line in screen if "saved checkpoint" in line]
    assert len(saved) >= 6
    assert all(line.startswith(("INFO ", "DEBUG ")) for line in saved)
    steps = [line for line in screen if "treadle_loggers.console: step" in line]
    if verbose:
        assert steps
        assert all(line.startswith("DEBUG treadle_loggers.console: ") for line in steps)
    else:
        assert steps == [], "the bar shows the step figures"
        assert len(screen) <= 20, "\n".join(screen)
    assert any(line.startswith("Epoch 2/2: 6/6 batches in ") for line in screen)
    assert "best epoch: 2 of 2" in screen


@needs_main_job
@pytest.mark.slow
@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_bar_leaves_every_line_whole(
    tmp_path: Path, signal_number: int
) -> None:
    argv = cli("train", *TINY, "--set", "max_train_samples=3000", "--epochs", "2")
    run = PtyRun(argv, cwd=tmp_path, env={**os.environ, "TREADLE_DISABLE_PLUGINS": ""})
    deadline = time.monotonic() + 240
    while b"%|" not in run.output or b"it/s, loss=" not in run.output:
        assert run.process.poll() is None, render(run.output)
        assert time.monotonic() < deadline, "no bar drawn"
        time.sleep(0.1)
    run.process.send_signal(signal_number)
    run.wait(timeout=120)
    screen = render(run.output)
    assert_nothing_glued(screen)
    assert any("SIGTERM" in line or "interrupted" in line for line in screen), screen
