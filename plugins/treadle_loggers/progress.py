"""The ``progress`` logger: a tqdm bar per epoch and per validation pass while stderr is a
terminal, a plain line every 10 seconds through logging when it is not.

The loggers plugin adds it to every run whose ``TrainingConfig.progress_bar`` is on (the
default), in library use as in ``treadle train``; off, nothing of it is built or bound. In a
distributed run only rank 0 has loggers, so only rank 0 draws.

While a bar is drawn, whatever else writes whole lines to the same terminal (the log handlers
the application or the ``treadle`` command configured, ``warnings``, ``print``) writes through
tqdm: the bars are cleared, the line written, the bars drawn again below it. Nothing is added
to logging: the handlers keep their levels, filters and formats, and get their own streams
back when the run ends.

tqdm rather than rich: it is what PyTorch users already see (Lightning's default bar, HF
Trainer, ``datasets``), its per-batch ``update`` is a counter compare with no lock and no
thread, and it is imported only when a run starts drawing (about 35 ms here).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from treadle import hookimpl
from treadle_loggers.figures import format_value

if TYPE_CHECKING:
    from treadle.config import TrainingConfig
    from treadle.protocols import TrainerView

__all__ = ["PLAIN_LINE_SECONDS", "ProgressDisplay", "shows_bar"]

logger = logging.getLogger(__name__)

#: without a terminal, a progress line at most this often (and one per epoch)
PLAIN_LINE_SECONDS = 10.0
#: how often a bar redraws at most (tqdm's ``mininterval``)
_REDRAW_SECONDS = 0.1
#: epoch metrics a finished epoch's bar keeps; ``val_perplexity`` is ``exp(val_loss)``
_HIDDEN_AT_EPOCH_END = frozenset({"learning_rate", "gradient_norm", "epoch_time"})
_REDUNDANT = frozenset({"val_perplexity"})


def shows_bar(training_config: TrainingConfig | None) -> bool:
    """Whether a run of ``training_config`` draws a bar: ``progress_bar`` is on and stderr is
    a terminal. The console logger asks this too: under a bar it logs at DEBUG."""
    return (
        training_config is not None
        and training_config.progress_bar
        and _terminal_id(sys.stderr) is not None
    )


class _Bar(Protocol):
    """What the display asks of a bar: tqdm's, or :class:`_PlainLines`.

    :ivar n: batches done, counting those a resumed epoch had done before.
    """

    n: int

    def update(self, n: int = 1) -> bool | None: ...

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None: ...

    def refresh(self) -> None: ...

    def close(self) -> None: ...


class ProgressDisplay:
    """Shows a run's progress: a bar on a terminal, plain lines otherwise (see the module).

    Built per run by the ``loggers`` plugin as ``ProgressDisplay(training_config=...,
    run_dir=...)``. As a logger it receives the step figures (``train/batch_loss``,
    ``train/learning_rate``), which the bar shows instead of the console logger's per-step
    lines; its lifecycle hooks move the bars.
    """

    def __init__(
        self, training_config: TrainingConfig | None = None, run_dir: Path | None = None
    ) -> None:
        self.epochs = None if training_config is None else training_config.epochs
        self.draws_bar = shows_bar(training_config)
        self._terminal: TextIO = sys.stderr
        self._epoch_bar: _Bar | None = None
        self._validation_bar: _Bar | None = None
        self._figures = ""
        self._routing: _Routing | None = None

    # -- logger ------------------------------------------------------------------------------

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        loss = metrics.get("train/batch_loss")
        if loss is None:
            return
        figures = f"loss={format_value(loss)}"
        learning_rate = metrics.get("train/learning_rate")
        if learning_rate is not None:
            figures += f", lr={format_value(learning_rate)}"
        self._figures = figures
        if self._epoch_bar is not None:
            self._epoch_bar.set_postfix_str(figures, refresh=False)

    def close(self) -> None:
        """Close the bars (an unfinished one stays on screen as it stood) and give the
        terminal's writers their streams back. Called once per run, also after an error."""
        for bar in (self._validation_bar, self._epoch_bar):
            if bar is not None:
                bar.close()
        self._validation_bar = self._epoch_bar = None
        if self._routing is not None:
            self._routing.stop()
            self._routing = None

    # -- lifecycle ---------------------------------------------------------------------------

    @hookimpl
    def treadle_on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        self._open_epoch(trainer, epoch, 0)

    @hookimpl
    def treadle_on_batch_end(self, trainer: TrainerView, batch_index: int) -> None:
        bar = self._epoch_bar
        if bar is None:  # a resumed run continues inside an epoch: no epoch_start
            bar = self._open_epoch(trainer, trainer.epoch, batch_index)
        bar.update()

    @hookimpl
    def treadle_on_validation_start(self, trainer: TrainerView) -> None:
        if self.draws_bar:
            if self._epoch_bar is not None:
                self._epoch_bar.refresh()  # show its last batch done
            self._validation_bar = self._tqdm(
                desc="Validation", total=trainer.num_validation_batches, leave=False
            )

    @hookimpl
    def treadle_on_validation_batch_end(self) -> None:
        bar = self._validation_bar
        if bar is not None:
            bar.update()

    @hookimpl
    def treadle_on_validation_end(self) -> None:
        bar, self._validation_bar = self._validation_bar, None
        if bar is not None:
            bar.close()

    @hookimpl
    def treadle_on_epoch_end(
        self, trainer: TrainerView, epoch: int, metrics: Mapping[str, float]
    ) -> None:
        bar = self._epoch_bar
        if bar is None:  # an epoch without batches
            bar = self._open_epoch(trainer, epoch, 0)
        self._epoch_bar = None
        line = _epoch_line(
            f"Epoch {epoch + 1}/{self.epochs or trainer.training_config.epochs}",
            bar.n,
            trainer.num_training_batches,
            metrics.get("epoch_time"),
            _epoch_figures(metrics),
        )
        if isinstance(bar, _PlainLines):
            logger.info("%s", line)
            return
        _replace_with_line(bar, line, self._terminal)

    # -- bars --------------------------------------------------------------------------------

    def _open_epoch(self, trainer: TrainerView, epoch: int, done: int) -> _Bar:
        epochs = self.epochs or trainer.training_config.epochs
        total = trainer.num_training_batches
        bar: _Bar
        if self.draws_bar:
            bar = self._tqdm(desc=f"Epoch {epoch + 1}/{epochs}", total=total, initial=done)
        else:
            bar = _PlainLines(f"Epoch {epoch + 1}/{epochs}", total, done)
        if self._figures:
            bar.set_postfix_str(self._figures, refresh=False)
        self._epoch_bar = bar
        return bar

    def _tqdm(self, *, desc: str, total: int | None, initial: int = 0, leave: bool = True) -> _Bar:
        tqdm_class = _tqdm_class()
        if self._routing is None:
            self._routing = _Routing(self._terminal, tqdm_class)
            self._routing.start()
        size = _fixed_size(self._terminal)
        bar: _Bar = tqdm_class(
            desc=desc,
            total=total,
            initial=initial,
            leave=leave,
            file=self._terminal,
            mininterval=_REDRAW_SECONDS,
            dynamic_ncols=size is None,
            ncols=None if size is None else size.columns,
            nrows=None if size is None else size.lines,
        )
        return bar


def _replace_with_line(bar: Any, line: str, terminal: TextIO) -> None:
    """Erase ``bar`` and write ``line`` in its place: a finished epoch stays as a written line,
    not as a bar, which is cut at the terminal's width, and the figures are what it is for."""
    bar.leave = False
    bar.close()
    bar.write(line, file=terminal)


def _epoch_line(
    label: str, done: int, total: int | None, seconds: float | None, figures: str
) -> str:
    """``Epoch 1/3: 120/120 batches in 12 s, 9.71 it/s | train_loss=0.4105 val_loss=0.395``,
    where ``seconds`` is the epoch's training time (validation not included)."""
    of = f"/{total}" if total is not None else ""
    line = f"{label}: {done}{of} batches"
    if seconds is not None:
        rate = done / seconds if seconds > 0 else 0.0
        line += f" in {_duration(seconds)}, {rate:.2f} it/s"
    return f"{line} | {figures}" if figures else line


def _epoch_figures(metrics: Mapping[str, float]) -> str:
    return " ".join(
        f"{name}={format_value(value)}"
        for name, value in metrics.items()
        if name not in _HIDDEN_AT_EPOCH_END and name not in _REDUNDANT
    )


class _PlainLines:
    """A bar's counterpart without a terminal: an INFO line at most every
    :data:`PLAIN_LINE_SECONDS`, and one when the epoch ends."""

    def __init__(self, label: str, total: int | None, done: int) -> None:
        self.label = label
        self.total = total
        self.n = done
        self.started_at = done
        self.started = time.monotonic()
        self.next_line = self.started + PLAIN_LINE_SECONDS
        self.figures = ""

    def update(self, n: int = 1) -> bool | None:
        self.n += n
        now = time.monotonic()
        if now < self.next_line:
            return None
        self.next_line = now + PLAIN_LINE_SECONDS
        if logger.isEnabledFor(logging.INFO):
            logger.info("%s", self._line(now))
        return True

    def _line(self, now: float) -> str:
        rate = (self.n - self.started_at) / max(now - self.started, 1e-9)
        position = f"batch {self.n}"
        if self.total:
            position += f"/{self.total} ({100 * self.n / self.total:.0f}%)"
        parts = [position, f"{rate:.2f} it/s"]
        if self.total and rate > 0:
            parts.append(f"eta {_duration((self.total - self.n) / rate)}")
        if self.figures:
            parts.append(self.figures)
        return f"{self.label}: " + ", ".join(parts)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.figures = s

    def refresh(self) -> None:
        """Lines are written when due, never redrawn."""

    def close(self) -> None:
        """Nothing to clear."""


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}:{rest:02d}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{rest:02d}"


# -- tqdm, imported when the first bar opens -------------------------------------------------


@functools.cache
def _tqdm_class() -> Any:
    """tqdm's bar class, imported on first use; one class, so one lock and one set of bars."""
    from tqdm.std import tqdm

    class TreadleBar(tqdm):  # type: ignore[misc]
        """tqdm without its monitor thread: redraws come from ``update`` alone."""

        monitor_interval = 0

    return TreadleBar


def _fixed_size(terminal: TextIO) -> os.terminal_size | None:
    """``None`` to let tqdm follow the terminal's size as it changes; a fixed size (``COLUMNS``
    and ``LINES``, else 80 x 24) where the terminal reports none: a pseudo-terminal nobody
    sized says 0 x 0, and tqdm then hides every bar as below the screen."""
    try:
        size = os.get_terminal_size(terminal.fileno())
    except (AttributeError, OSError, ValueError):
        size = os.terminal_size((0, 0))
    if size.columns > 0 and size.lines > 0:
        return None
    return shutil.get_terminal_size()


# -- the other writers of the bar's terminal -------------------------------------------------


def _terminal_id(stream: object) -> tuple[int, int, int] | None:
    """Which terminal ``stream`` writes to, ``None`` when it is no terminal."""
    if isinstance(stream, _LineProxy):
        return None  # another run routes it already
    try:
        if not stream.isatty():  # type: ignore[attr-defined]
            return None
        status = os.fstat(stream.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None
    return (status.st_dev, status.st_ino, status.st_rdev)


class _LineProxy:
    """Stands in for a stream that writes to the bar's terminal: whole lines go through
    ``tqdm.external_write_mode`` (bars cleared, the lines written, bars drawn again below);
    a partial line waits for its end, so that a redraw never overwrites it."""

    def __init__(self, stream: Any, terminal: TextIO, tqdm_class: Any) -> None:
        self._stream = stream
        self._terminal = terminal
        self._tqdm_class = tqdm_class
        self._pending = ""

    def write(self, text: str) -> int:
        complete, newline, rest = (self._pending + text).rpartition("\n")
        if not newline:
            self._pending = rest
            return len(text)
        self._pending = rest
        with self._tqdm_class.external_write_mode(file=self._terminal):
            self._stream.write(complete + "\n")
            self._stream.flush()
        return len(text)

    def flush(self) -> None:
        """A partial line waits for its end; whole lines were flushed when written."""

    def drain(self) -> None:
        """Write a waiting partial line as it is (the bars are gone by then)."""
        if self._pending:
            self._stream.write(self._pending)
            self._stream.flush()
            self._pending = ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Routing:
    """Routes the log handlers, ``sys.stdout`` and ``sys.stderr`` that write to ``terminal``
    through :class:`_LineProxy` while bars are drawn, and gives them their streams back."""

    def __init__(self, terminal: TextIO, tqdm_class: Any) -> None:
        self.terminal = terminal
        self.tqdm_class = tqdm_class
        self.handlers: list[tuple[logging.StreamHandler[Any], Any, _LineProxy]] = []
        self.system: list[tuple[str, Any, _LineProxy]] = []

    def start(self) -> None:
        target = _terminal_id(self.terminal)
        if target is None:
            return
        for handler in _stream_handlers():
            stream = handler.stream
            if _terminal_id(stream) != target:
                continue
            proxy = _LineProxy(stream, self.terminal, self.tqdm_class)
            try:
                handler.setStream(proxy)
            except AttributeError:  # logging.lastResort: its stream is sys.stderr, below
                continue
            self.handlers.append((handler, stream, proxy))
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if _terminal_id(stream) == target:
                proxy = _LineProxy(stream, self.terminal, self.tqdm_class)
                setattr(sys, name, proxy)
                self.system.append((name, stream, proxy))

    def stop(self) -> None:
        for handler, stream, proxy in self.handlers:
            proxy.drain()
            if handler.stream is proxy:
                handler.setStream(stream)
        for name, stream, proxy in self.system:
            proxy.drain()
            if getattr(sys, name) is proxy:  # unless someone replaced it since
                setattr(sys, name, stream)
        self.handlers = []
        self.system = []


def _stream_handlers() -> list[logging.StreamHandler[Any]]:
    """Every stream handler of every logger, once each."""
    loggers: list[logging.Logger] = [logging.getLogger()]
    known = logging.Logger.manager.loggerDict.values()
    loggers += [item for item in known if isinstance(item, logging.Logger)]
    found: dict[int, logging.StreamHandler[Any]] = {}
    for each in loggers:
        for handler in each.handlers:
            if isinstance(handler, logging.StreamHandler):
                found.setdefault(id(handler), handler)
    return list(found.values())
