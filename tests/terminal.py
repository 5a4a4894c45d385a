"""Pseudo-terminals for tests of what a person sees: run a command (or a stretch of code) with
a sized pty as its terminal, keep the raw bytes, and render them as the screen would show them.

A progress bar is drawn only on a terminal, so it is tested on one; the renderer understands
what tqdm and log lines write (text, ``\\r``, ``\\n``, cursor up ``ESC [ A``, erase to the end
of the line ``ESC [ K``), which is enough to see a line glued onto a bar.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from tests.processes import default_sigint

__all__ = ["PtyRun", "drain", "open_pty", "render", "run_in_pty", "stderr_on_a_pty"]

_ESCAPE = re.compile(r"\x1b\[(\d*)([A-Za-z])")


def open_pty(columns: int = 120, lines: int = 40) -> tuple[int, int]:
    """A pseudo-terminal pair ``(controller, terminal)`` of the given size (an unsized pty is
    0 x 0, and tqdm hides bars below a screen of 0 lines)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    return controller, terminal


def drain(controller: int, into: bytearray, stop: threading.Event) -> None:
    """Read the controller side into ``into`` until ``stop`` is set and nothing is left (a
    writer to a full pty blocks: someone must read)."""
    while True:
        ready, _, _ = select.select([controller], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal side closed
                return
            if not chunk:
                return
            into += chunk
        elif stop.is_set():
            return


class PtyRun:
    """A command running with a pty as stdin, stdout and stderr; :attr:`output` grows."""

    def __init__(self, argv: Sequence[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.controller, terminal = open_pty()
        self.output = bytearray()
        self._stop = threading.Event()
        self.process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            start_new_session=True,
            preexec_fn=default_sigint,
        )
        os.close(terminal)
        self._reader = threading.Thread(
            target=drain, args=(self.controller, self.output, self._stop), daemon=True
        )
        self._reader.start()

    def wait(self, timeout: float) -> int:
        try:
            status = self.process.wait(timeout=timeout)
        finally:
            self._stop.set()
            self._reader.join(timeout=10)
            os.close(self.controller)
        return status


def run_in_pty(
    argv: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> tuple[int, bytes]:
    """Run ``argv`` on a 120 x 40 pty; its exit status and every byte it wrote."""
    run = PtyRun(argv, cwd=cwd, env={**os.environ, **(env or {})})
    status = run.wait(timeout)
    return status, bytes(run.output)


@contextmanager
def stderr_on_a_pty(monkeypatch: Any) -> Iterator[bytearray]:
    """``sys.stderr`` is a 120 x 40 pty for the block; yields the bytes written to it so far
    (complete once the block ends)."""
    controller, terminal = open_pty()
    stream: IO[str] = open(terminal, "w", encoding="utf-8", buffering=1, closefd=True)  # noqa: SIM115
    output = bytearray()
    stop = threading.Event()
    reader = threading.Thread(target=drain, args=(controller, output, stop), daemon=True)
    reader.start()
    monkeypatch.setattr(sys, "stderr", stream)
    try:
        yield output
    finally:
        stream.flush()
        stop.set()
        reader.join(timeout=10)
        stream.close()
        os.close(controller)


def render(raw: bytes | bytearray | str) -> list[str]:
    """The screen's lines after ``raw`` was written to a terminal wide enough for every line,
    trailing blanks cut."""
    text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8", "replace")
    screen: list[list[str]] = [[]]
    row = column = 0
    position = 0
    while position < len(text):
        char = text[position]
        escape = _ESCAPE.match(text, position) if char == "\x1b" else None
        if escape is not None:
            count = int(escape.group(1) or 1)
            code = escape.group(2)
            if code == "A":
                row = max(0, row - count)
            elif code == "B":
                row += count
            elif code == "K":
                del screen[row][column:]
            position = escape.end()
            while len(screen) <= row:
                screen.append([])
            continue
        if char == "\r":
            column = 0
        elif char == "\n":
            row += 1
            column = 0
            while len(screen) <= row:
                screen.append([])
        else:
            line = screen[row]
            while len(line) < column:
                line.append(" ")
            if column < len(line):
                line[column] = char
            else:
                line.append(char)
            column += 1
        position += 1
    lines = ["".join(line).rstrip() for line in screen]
    while lines and not lines[-1]:
        lines.pop()
    return lines
