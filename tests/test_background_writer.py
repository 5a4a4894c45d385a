"""BackgroundWriter: a logger's rows written in order on a thread of its own."""

from __future__ import annotations

import threading
import time

import pytest

from treadle.background import BackgroundWriter


def test_rows_arrive_in_order_in_batches_and_flush_waits_for_them() -> None:
    written: list[list[int]] = []
    threads: set[str] = set()

    def write(rows: list[int]) -> None:
        threads.add(threading.current_thread().name)
        written.append(list(rows))

    writer: BackgroundWriter[int] = BackgroundWriter(write, name="test", batch_rows=4)
    for row in range(10):
        writer.append(row)
    writer.flush()
    assert [row for batch in written for row in batch] == list(range(10))
    assert [len(batch) for batch in written] == [4, 4, 2]
    assert threads == {"treadle-test"}
    writer.close()
    writer.close()  # again: nothing


def test_the_append_itself_never_writes() -> None:
    started = threading.Event()

    def slow(rows: list[int]) -> None:
        started.set()
        time.sleep(0.5)

    writer: BackgroundWriter[int] = BackgroundWriter(slow, name="slow", batch_rows=1)
    writer.append(1)
    assert started.wait(5)
    entered = time.perf_counter()
    writer.append(2)  # the writer is busy: the row waits in the queue, the caller does not
    assert time.perf_counter() - entered < 0.1
    writer.close()


def test_old_rows_are_handed_over_after_max_delay() -> None:
    written: list[int] = []
    writer: BackgroundWriter[int] = BackgroundWriter(
        written.extend, name="delay", batch_rows=1000, max_delay_seconds=0.05
    )
    writer.append(1)
    time.sleep(0.1)
    writer.append(2)  # the oldest row is older than 0.05 s: both go
    deadline = time.monotonic() + 5
    while written != [1, 2] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert written == [1, 2]
    writer.close()


def test_a_writer_error_is_raised_on_the_callers_thread() -> None:
    def broken(rows: list[int]) -> None:
        msg = "store is gone"
        raise OSError(msg)

    writer: BackgroundWriter[int] = BackgroundWriter(broken, name="broken", batch_rows=1)
    writer.append(1)
    with pytest.raises(RuntimeError, match="the broken writer failed: OSError: store is gone"):
        writer.flush()
    with pytest.raises(RuntimeError, match="store is gone"):
        writer.append(2)
    with pytest.raises(RuntimeError, match="store is gone"):
        writer.close()


def test_a_closed_writer_takes_no_rows() -> None:
    writer: BackgroundWriter[int] = BackgroundWriter(lambda rows: None, name="closed")
    writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer.append(1)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="batch_rows >= 1"):
        BackgroundWriter(lambda rows: None, name="x", batch_rows=0)
