"""Who owns a run: the process (pid, host, start time) that holds a run folder's lock and
keeps its experiment record's heartbeat, and whether that process is still alive.

A pid alone does not name a process: pids are reused, and two containers on one machine (or
two machines) have the same ones. So an owner also carries a *token*: the machine's boot id
and pid namespace, and the process's start time in clock ticks since boot. Another process
can tell whether the owner is alive only when it shares the owner's machine and pid namespace
(:meth:`ProcessOwner.is_alive` says ``None`` otherwise); elsewhere the heartbeat decides.
"""

from __future__ import annotations

import functools
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

__all__ = [
    "HEARTBEAT_SECONDS",
    "LEASE_SECONDS",
    "ProcessOwner",
    "current_owner",
    "local_machine",
]

#: How often a live run marks itself alive: its folder's lock file, its experiment record.
HEARTBEAT_SECONDS = 30.0
#: How long a heartbeat vouches for its run: three beats, so one late beat (a slow disk, a
#: busy database) is no death. Past it, a run whose process cannot be seen from here (another
#: host) counts as gone.
LEASE_SECONDS = 3 * HEARTBEAT_SECONDS


@functools.cache
def local_machine() -> str:
    """This machine and pid namespace: ``<boot id>/<pid namespace inode>`` on Linux, the host
    name elsewhere (where a reused pid cannot be told from the owner, see
    :meth:`ProcessOwner.is_alive`)."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return f"host:{socket.gethostname()}"
    return f"{boot_id}/{namespace}"


def _process_started(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat``,
    field 22), or ``None`` where there is no such file or process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces and parentheses itself
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[19].decode("ascii") if len(fields) > 19 else None


@attrs.frozen(kw_only=True)
class ProcessOwner:
    """A process that owns a run.

    :ivar pid: its process id.
    :ivar host: its host name, for people.
    :ivar token: ``<machine>:<start time>`` (:func:`local_machine`), by which a process on the
        same machine tells it from another process that reused its pid.
    :ivar started_at: when it took ownership, ISO 8601 in UTC.
    """

    pid: int
    host: str
    token: str
    started_at: str

    @property
    def machine(self) -> str:
        """The machine and pid namespace part of :attr:`token`."""
        return self.token.rpartition(":")[0]

    def is_alive(self) -> bool | None:
        """Whether the process still runs, as far as this process can tell: ``None`` when it
        lives on another machine or pid namespace (the heartbeat decides then)."""
        if self.machine != local_machine():
            return None
        started = _process_started(self.pid)
        if started is not None:
            return self.token == f"{self.machine}:{started}"
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # it exists, under another user
            return True
        return True

    def describe(self) -> str:
        """``pid 1234 on host gpu-3, started 2026-01-02T03:04:05Z``."""
        return f"pid {self.pid} on host {self.host}, started {self.started_at}"

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: object) -> ProcessOwner | None:
        """The owner ``data`` describes, or ``None`` when it is not one."""
        if not isinstance(data, dict):
            return None
        pid, host, token, started_at = (data.get(k) for k in ("pid", "host", "token", "started_at"))
        if type(pid) is not int or not all(isinstance(v, str) for v in (host, token, started_at)):
            return None
        return cls(pid=pid, host=host, token=token, started_at=started_at)  # type: ignore[arg-type]


def current_owner() -> ProcessOwner:
    """This process, taking ownership now."""
    pid = os.getpid()
    started = _process_started(pid) or "?"
    return ProcessOwner(
        pid=pid,
        host=socket.gethostname(),
        token=f"{local_machine()}:{started}",
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
