"""A logger's rows written off the training thread: batched, handed to one writer thread.

A metric sink whose write is slow (an event file with CRCs computed in Python, an HTTP or SQL
tracking store) keeps the step fast by appending plain tuples and letting a thread of its own
do the work::

    class AcmeLogger:
        def __init__(self, training_config=None, run_dir=None):
            self._rows = BackgroundWriter(self._write, name="acme")

        def log_metrics(self, metrics, step):
            self._rows.append((step, time.time(), dict(metrics)))   # ~1 us

        def _write(self, rows):           # on the writer thread, a batch at a time
            ...

        def close(self):
            self._rows.close()            # everything written, the thread gone

The training thread hands its buffer over every ``batch_rows`` rows or once the oldest row is
``max_delay_seconds`` old, so a dashboard stays live. :meth:`BackgroundWriter.flush` waits until
every row appended so far is written (call it before a checkpoint records how far the log got).
An error of the writer is raised on the training thread, at the next call.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["BackgroundWriter"]

Row = TypeVar("Row")


class BackgroundWriter(Generic[Row]):
    """Buffers rows and writes them in batches on one daemon thread.

    :param write: called on the writer thread with each batch (a non-empty list), in order.
    :param name: the thread's name (``treadle-<name>``), and how errors name the writer.
    :param batch_rows: buffered rows that trigger a hand-over.
    :param max_delay_seconds: age of the oldest buffered row that triggers a hand-over.
    :raises ValueError: ``batch_rows < 1`` or ``max_delay_seconds <= 0``.
    """

    def __init__(
        self,
        write: Callable[[list[Row]], None],
        *,
        name: str,
        batch_rows: int = 512,
        max_delay_seconds: float = 2.0,
    ) -> None:
        if batch_rows < 1 or not max_delay_seconds > 0:
            msg = (
                f"BackgroundWriter {name!r} needs batch_rows >= 1 and max_delay_seconds > 0: "
                f"{batch_rows}, {max_delay_seconds}"
            )
            raise ValueError(msg)
        self.name = name
        self.batch_rows = batch_rows
        self.max_delay_seconds = max_delay_seconds
        self._write = write
        self._rows: list[Row] = []
        self._oldest = 0.0
        self._queue: queue.SimpleQueue[list[Row] | threading.Event | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closed = False

    def append(self, row: Row) -> None:
        """Buffer ``row``: a list append, and a hand-over every ``batch_rows`` rows.

        :raises RuntimeError: the writer failed on an earlier batch (chained to its error),
            or the writer is closed.
        """
        if self._error is not None or self._closed:
            self._raise_error()
            msg = f"the {self.name} writer is closed; it takes no more rows"
            raise RuntimeError(msg)
        rows = self._rows
        if not rows:
            self._oldest = time.monotonic()
        rows.append(row)
        if (
            len(rows) >= self.batch_rows
            or time.monotonic() - self._oldest >= self.max_delay_seconds
        ):
            self._hand_over()

    def flush(self, timeout: float | None = None) -> None:
        """Hand over what is buffered and wait until every row so far is written.

        :param timeout: seconds to wait at most (``None``: as long as it takes).
        :raises RuntimeError: the writer failed (chained to its error), or did not finish in
            ``timeout`` seconds.
        """
        if self._closed:
            self._raise_error()
            return
        self._hand_over()
        if self._thread is None:
            return
        done = threading.Event()
        self._queue.put(done)
        if not done.wait(timeout):
            msg = f"the {self.name} writer did not finish its rows within {timeout} s"
            raise RuntimeError(msg)
        self._raise_error()

    def close(self, timeout: float | None = None) -> None:
        """Write every buffered row, then end the thread. Calling it again does nothing.

        :raises RuntimeError: the writer failed (chained to its error).
        """
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            self._closed = True
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join(timeout)

    def _hand_over(self) -> None:
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"treadle-{self.name}", daemon=True
            )
            self._thread.start()
        self._queue.put(rows)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
            elif self._error is None:
                try:
                    self._write(item)
                except BaseException as error:  # kept, and raised on the training thread
                    self._error = error

    def _raise_error(self) -> None:
        if self._error is not None:
            msg = f"the {self.name} writer failed: {type(self._error).__name__}: {self._error}"
            raise RuntimeError(msg) from self._error
