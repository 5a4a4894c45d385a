"""Atomic file writing for a checkpoint folder: a temporary file beside the target, fsynced,
renamed into place, the folder fsynced; a full disk named as such; debris of killed writers
swept."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from treadle.engine.checkpoints.digests import Digest, FileHasher, HashKind
from treadle.engine.checkpoints.errors import CheckpointError
from treadle.engine.checkpoints.names import (
    CHECKPOINT_NAME,
    INDEX_NAME,
    TEMP_NAME,
    process_token,
    temp_name,
)

__all__ = [
    "FileWriter",
    "copy_file",
    "fsync_directory",
    "inode",
    "sweep_temp_files",
    "unlink",
    "write_atomically",
]

logger = logging.getLogger(__name__)

_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_COPY_CHUNK_BYTES = 1 << 23


class FileWriter:
    """The file object ``torch.save`` writes through: raw ``os.write`` calls on ``fd``,
    keeping the OSError a write raised (torch may re-raise it as a RuntimeError without the
    cause) and telling ``hasher`` how far the file is written."""

    def __init__(self, fd: int, hasher: FileHasher | None) -> None:
        self._fd = fd
        self._hasher = hasher
        self.size = 0
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        length = len(view)
        try:
            written = 0
            while written < length:
                written += os.write(self._fd, view[written:])
        except OSError as err:
            self.error = err
            raise
        self.size += length
        if self._hasher is not None:
            self._hasher.advance(self.size)
        return length

    def flush(self) -> None:
        """Nothing is buffered here; the caller fsyncs."""


def write_atomically(
    target: Path,
    write: Callable[[FileWriter], object],
    what: str,
    *,
    hashing: HashKind | None = None,
) -> tuple[Digest | None, int]:
    """Write ``target`` through a temporary file in its folder: write, fsync, rename, fsync
    the folder. Returns the digest of the kind ``hashing`` names (``None`` without one) and
    the size of what was written.

    The digest is taken block by block on helper threads that read back (from the page
    cache) what the writer has written so far, and finished while the fsync waits on the
    disk: on the writing path it costs only the hand-off.

    :raises CheckpointError: the disk is full (the temporary file is removed), or another
        OS error stopped the write.
    """
    temp = target.with_name(temp_name(target.name))
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    writer = FileWriter(-1, None)
    try:
        fd = os.open(temp, flags | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as err:
        raise _write_error(target, what, err, writer) from err
    digest: Digest | None = None
    try:
        hasher = FileHasher(fd, hashing) if hashing is not None else None
        try:
            writer = FileWriter(fd, hasher)
            write(writer)
            if hasher is not None:
                hasher.finish(writer.size)
            os.fsync(fd)
            if hasher is not None:
                digest = hasher.result()
        finally:
            if hasher is not None:
                hasher.cancel()
            os.close(fd)
        os.replace(temp, target)
    except BaseException as err:
        unlink(temp)
        if isinstance(err, Exception):
            raise _write_error(target, what, err, writer) from err
        raise
    fsync_directory(target.parent)
    return digest, writer.size


def _write_error(target: Path, what: str, err: BaseException, writer: FileWriter) -> BaseException:
    found = _find_os_error(err) or writer.error
    if found is not None and found.errno in _DISK_FULL_ERRNOS:
        msg = (
            f"cannot write {what} {target}: the disk is full ({os.strerror(found.errno)}). "
            "Older checkpoints are untouched and nothing was deleted; free space, or lower "
            "keep_last_n / keep_best_k."
        )
        return CheckpointError(msg)
    if found is not None:
        msg = f"cannot write {what} {target}: {found}"
        return CheckpointError(msg)
    err.add_note(f"while writing {what} {target}")
    return err


def _find_os_error(err: BaseException | None) -> OSError | None:
    """The OSError in ``err``'s chain: torch's zip writer reports a full disk as a
    RuntimeError with the ENOSPC error underneath."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno is not None:
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def copy_file(source: Path, writer: FileWriter) -> None:
    """Copy ``source`` into ``writer`` (a backup: written and hashed like a save)."""
    buffer = bytearray(_COPY_CHUNK_BYTES)
    view = memoryview(buffer)
    with source.open("rb", buffering=0) as stream:
        while count := stream.readinto(buffer):
            writer.write(view[:count])


def fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    if os.name != "posix":  # Windows cannot open a directory to fsync it
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def inode(path: Path) -> int | None:
    """``path``'s inode number, ``None`` when it is gone."""
    try:
        return path.stat().st_ino
    except OSError:
        return None


def unlink(path: Path) -> None:
    """Delete ``path`` if it exists; a failure is logged, not raised."""
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        logger.warning("could not delete %s: %s", path, err)


def sweep_temp_files(folder: Path) -> None:
    """Remove temporary files that a killed save left behind; a live writer's are kept."""
    for name in os.listdir(folder):
        match = TEMP_NAME.match(name)
        if match is None:
            continue
        target = match["target"]
        if target != INDEX_NAME and not CHECKPOINT_NAME.match(target):
            continue
        pid, token = int(match["pid"]), match["token"]
        if token == process_token() or (pid != os.getpid() and _pid_alive(pid)):
            continue
        logger.info("removing %s, left by an interrupted save", folder / name)
        unlink(folder / name)


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # os.kill(pid, 0) terminates the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True
