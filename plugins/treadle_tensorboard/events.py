"""TensorBoard event files: TFRecord framing of ``Event`` protos, as TensorBoard reads them.

Each record is ``length (u64) | masked CRC32C of length | Event bytes | masked CRC32C of the
bytes``. tensorboard's own writer computes CRC32C in pure Python (12 us for a 60-byte event,
measured), more than the rest of a logged step together; ``google-crc32c`` (in the
``treadle[tensorboard]`` extra) does it in C (0.2 us), and the pure-Python one is the fallback.
"""

from __future__ import annotations

import functools
import itertools
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["EventFile", "masked_crc32c"]

_FILE_NUMBERS = itertools.count()  # two files of one process within one second differ


def _crc32c_function() -> Callable[[bytes], int]:
    try:
        import google_crc32c
    except ImportError:
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c

        return crc32c  # type: ignore[no-any-return]
    value: Callable[[bytes], int] = google_crc32c.value
    return value


@functools.cache
def _crc32c() -> Callable[[bytes], int]:
    return _crc32c_function()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C of ``data``."""
    crc = _crc32c()(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class EventFile:
    """One new event file in ``log_dir`` (``events.out.tfevents.<time>.<host>.<pid>.<n>``),
    opened with its ``file_version`` record; :meth:`write` is safe from any thread.

    :param purge_step: write TensorBoard's restart marker (``SessionLog.START``) at this step:
        TensorBoard then drops events at this step and later from the directory's earlier
        files, as after ``SummaryWriter(purge_step=...)``.
    """

    def __init__(self, log_dir: Path, *, purge_step: int | None = None) -> None:
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog

        log_dir.mkdir(parents=True, exist_ok=True)
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{next(_FILE_NUMBERS)}"
        )
        self.path = log_dir / name
        self._lock = threading.Lock()
        self._file: BinaryIO = self.path.open("xb")
        self.write(Event(wall_time=time.time(), file_version="brain.Event:2"))
        if purge_step is not None:
            start = SessionLog(status=SessionLog.START)
            self.write(Event(wall_time=time.time(), step=purge_step, session_log=start))
        self.flush()

    def write(self, event: Any) -> None:
        """Append one ``Event`` record."""
        self.write_many([event])

    def write_many(self, events: list[Any]) -> None:
        """Append ``Event`` records, framed, in one write."""
        records = []
        pack = struct.pack
        for event in events:
            data = event.SerializeToString()
            header = pack("<Q", len(data))
            records.append(
                header + pack("<I", masked_crc32c(header)) + data + pack("<I", masked_crc32c(data))
            )
        with self._lock:
            self._file.write(b"".join(records))

    def flush(self, *, durable: bool = False) -> None:
        """Hand what is written to the OS; ``durable``: and to the disk (``fsync``)."""
        with self._lock:
            self._file.flush()
            if durable:
                os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            self._file.close()
