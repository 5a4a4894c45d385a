"""What export libraries print, kept in the bundle's ``export.log`` instead of the terminal.

An ONNX export alone prints dozens of INFO lines (onnx_ir, onnxscript), warnings through
torch's own log handlers, FutureWarnings, and onnxruntime or torch may write from C++. While
an exporter runs, :meth:`ExportLog.capture` sends everything written to the process's stdout
and stderr (file descriptors 1 and 2, so C and C++ output too, and ``sys.stdout`` /
``sys.stderr`` when they are other objects) and every Python warning to the log file. With
``echo``, a thread copies the file to the terminal as it grows, so a user who asked for it
sees the lines as they come.

Descriptors 1 and 2 belong to the whole process: captures are serialized by a lock, and
another thread writing to the terminal during an export writes to the log instead. Logging
handlers that write to some other stream than the process's stdout or stderr are left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

__all__ = ["EXPORT_LOG", "ExportLog"]

logger = logging.getLogger(__name__)

EXPORT_LOG = "export.log"
#: fd 1 and 2 are process-wide: two threads capturing at once would restore each other's
#: descriptors. Re-entrant: a capture inside a capture (an exporter exporting) nests cleanly.
_CAPTURE_LOCK = threading.RLock()
_TAIL_POLL_SECONDS = 0.05
_CHUNK = 1 << 16


class ExportLog:
    """The bundle's ``export.log``: one section per captured step, plus treadle's notes.

    :param path: the log file; created, appended to.
    :param echo: also copy what is captured to the terminal (stderr) as it is written.
    """

    def __init__(self, path: Path, *, echo: bool) -> None:
        self.path = path
        self.echo = echo
        #: Lines the libraries wrote during captures, treadle's own notes not counted.
        self.captured_lines = 0
        path.touch()

    def note(self, text: str) -> None:
        """Append treadle's own text (a section title, a traceback) to the log."""
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(text if text.endswith("\n") else text + "\n")

    def note_exception(self, error: BaseException) -> None:
        """Append ``error``'s full traceback: the manifest keeps only its first lines."""
        self.note("".join(traceback.format_exception(error)))

    @contextlib.contextmanager
    def capture(self, title: str) -> Iterator[None]:
        """Within the block, the process's output and Python's warnings go to the log, under
        ``== title ==``."""
        with _CAPTURE_LOCK:
            self.note(f"== {title} ==")
            start = self.path.stat().st_size
            terminal = _dup(2) if self.echo else None
            tail = _Tail(self.path, start, terminal) if terminal is not None else None
            try:
                with _redirected(self.path):
                    if tail is not None:
                        tail.start()
                    yield
            finally:
                if tail is not None:
                    tail.finish()
                if terminal is not None:
                    os.close(terminal)
                self.captured_lines += _count_lines(self.path, start)


def _dup(fd: int) -> int | None:
    try:
        return os.dup(fd)
    except OSError:  # no such descriptor: a daemon started without stdio
        return None


def _flush_c_stdio() -> None:
    # C and C++ code writes through libc's buffers: flush them into the log before the
    # descriptors go back, or the rest would reach the terminal later.
    with contextlib.suppress(OSError, AttributeError, TypeError):  # no libc here (Windows)
        ctypes.CDLL(None).fflush(None)


def _flush(stream: Any) -> None:
    with contextlib.suppress(AttributeError, OSError, ValueError):
        stream.flush()


@contextlib.contextmanager
def _redirected(path: Path) -> Iterator[None]:
    """Descriptors 1 and 2, ``sys.stdout``, ``sys.stderr`` and warnings into ``path``."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        _flush(stream)
    _flush_c_stdio()
    log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    saved = {fd: copy for fd in (1, 2) if (copy := _dup(fd)) is not None}
    text: TextIO = io.TextIOWrapper(
        open(log_fd, "ab", closefd=False),  # noqa: SIM115  (closed below, after the restore)
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=True,
        write_through=True,
    )
    try:
        for fd in saved:
            os.dup2(log_fd, fd)
        with (
            contextlib.redirect_stdout(text),
            contextlib.redirect_stderr(text),
            warnings.catch_warnings(),
        ):
            warnings.showwarning = _warning_writer(text)
            yield
    finally:
        _flush(text)
        for stream in (sys.__stdout__, sys.__stderr__):
            _flush(stream)
        _flush_c_stdio()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        text.close()
        os.close(log_fd)


def _warning_writer(stream: TextIO) -> Any:
    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        stream.write(warnings.formatwarning(message, category, filename, lineno, line))

    return show


def _count_lines(path: Path, start: int) -> int:
    lines = 0
    with path.open("rb") as handle:
        handle.seek(start)
        for block in iter(lambda: handle.read(_CHUNK), b""):
            lines += block.count(b"\n")
    return lines


class _Tail(threading.Thread):
    """Copies what is appended to a file, from ``offset`` on, to descriptor ``fd``."""

    def __init__(self, path: Path, offset: int, fd: int) -> None:
        super().__init__(name="treadle-export-log-echo", daemon=True)
        self._path = path
        self._offset = offset
        self._fd = fd
        self._done = threading.Event()

    def run(self) -> None:
        with self._path.open("rb") as handle:
            handle.seek(self._offset)
            while True:
                finishing = self._done.wait(_TAIL_POLL_SECONDS)
                while block := handle.read(_CHUNK):
                    self._write(block)
                if finishing:
                    return

    def _write(self, block: bytes) -> None:
        view = memoryview(block)
        while view:
            try:
                written = os.write(self._fd, view)
            except OSError:  # the terminal went away: stop echoing, the log has it all
                return
            view = view[written:]

    def finish(self) -> None:
        """Copy what is left, then stop."""
        if self.is_alive():
            self._done.set()
            self.join()
