"""The lock a live run holds on its folder: ``run.lock``, locked with ``flock`` (Windows:
``msvcrt.locking``) for as long as the run's process lives, and naming its owner.

The operating system releases the lock when the process ends, however it ends (``kill -9``
included), so a lock that can be taken means its last owner is gone: no stale lock files to
clean up. The file itself is never deleted (deleting a lock file lets two processes each lock
a different inode). Its content is the owner (:class:`~treadle.owner.ProcessOwner`) as JSON,
for the message that refuses a second process; its modification time is the owner's
heartbeat, for file systems whose locks do not reach other hosts (some NFS set-ups).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import weakref
from pathlib import Path

from treadle.owner import ProcessOwner

__all__ = ["LOCK_NAME", "FolderLock", "read_lock_owner"]

logger = logging.getLogger(__name__)

#: The lock file's name inside a run folder.
LOCK_NAME = "run.lock"
_MAX_OWNER_BYTES = 4096

if sys.platform == "win32":  # pragma: no cover - not exercised on the Linux CI
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


#: locks this process holds; a forked child closes its copies of their descriptors
_HELD: weakref.WeakSet[FolderLock] = weakref.WeakSet()


def _close_in_child() -> None:
    # flock belongs to the open file description, which a fork shares: a child (a DataLoader
    # worker) that kept the descriptor would keep the lock held after its parent died. Closing
    # the child's copy releases nothing while the parent holds its own; unlocking would.
    for lock in list(_HELD):
        lock._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class FolderLock:
    """The lock on one run folder, held by this process until :meth:`release`.

    Take one with :meth:`acquire`.
    """

    def __init__(self, path: Path, fd: int, owner: ProcessOwner) -> None:
        self.path = path
        self.owner = owner
        self._fd: int | None = fd
        _HELD.add(self)

    @classmethod
    def acquire(cls, folder: Path, owner: ProcessOwner) -> FolderLock | None:
        """Lock ``folder`` (which exists) for ``owner``, without waiting; ``None`` when a live
        process holds it. The lock file is created if missing; it still names its previous
        owner until :meth:`write_owner`.

        :raises OSError: the lock file cannot be created or opened (a read-only folder).
        """
        path = folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            if not _try_lock(fd):
                os.close(fd)
                return None
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, owner)

    def write_owner(self) -> None:
        """Name this lock's owner in the lock file (and mark it alive now)."""
        fd = self._fd
        if fd is None:
            return
        data = json.dumps(self.owner.to_json()).encode("utf-8")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)

    @property
    def is_held(self) -> bool:
        return self._fd is not None

    def heartbeat(self) -> None:
        """Mark the owner alive now (the lock file's modification time)."""
        fd = self._fd
        if fd is None:
            return
        try:
            os.utime(fd if os.utime in os.supports_fd else self.path)
        except OSError as err:  # a heartbeat missed is no reason to stop a run
            logger.debug("could not touch %s: %s", self.path, err)

    def release(self) -> None:
        """Unlock and close; calling it again does nothing."""
        fd, self._fd = self._fd, None
        _HELD.discard(self)
        if fd is None:
            return
        try:
            _unlock(fd)
        finally:
            os.close(fd)

    def _forget(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __repr__(self) -> str:
        state = "held" if self.is_held else "released"
        return f"FolderLock({str(self.path)!r}, {state})"


def read_lock_owner(folder: Path) -> tuple[ProcessOwner | None, float | None]:
    """Who the lock file of ``folder`` names (the holder while it is locked, the last holder
    after) and its heartbeat (seconds since it was last touched); ``(None, None)`` when there
    is no readable lock file."""
    path = folder / LOCK_NAME
    try:
        with path.open("rb") as stream:
            raw = stream.read(_MAX_OWNER_BYTES)
            age = time.time() - os.fstat(stream.fileno()).st_mtime
    except OSError:
        return None, None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, age
    return ProcessOwner.from_json(data), age
