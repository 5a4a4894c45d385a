"""One folder per run: claiming a run's folder atomically, the lock a live run holds on it,
and ``run.json``, which names the run (its id) and says how it ended.

A new run takes the first folder of the series ``base``, ``base-2``, ``base-3`` ... that holds
no run: a folder it creates with ``mkdir`` (atomic: of two processes, one creates it), or an
existing one without a run in it. Either way the decision is made while holding the folder's
lock (:mod:`~treadle.engine.checkpoints.lock`), so two processes never take one folder, and a
new run never writes into another run's. A resumed run takes the newest folder of the series
that holds a run, and is refused while that run's process is alive.

``run.json`` (written atomically, never on the per-step path)::

    {"format": "treadle.run", "format_version": 1, "run_id": "3f0c...", "run_name": "...",
     "created_at": "...", "updated_at": "...", "status": "running", "attempt": 1,
     "owner": {"pid": 1234, "host": "gpu-3", "token": "...", "started_at": "..."},
     "results": null, "registered": null}

``status`` is ``running`` while a process owns the run, then ``completed`` (trained to the end
or stopped early by its own rule), ``interrupted`` (stopped by SIGINT or SIGTERM after saving:
resumable) or ``failed``. A run whose file says ``running`` while nobody holds its lock
*died* (``kill -9``, a power cut): :func:`run_status` reports that without anyone cleaning up.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from treadle.engine.checkpoints import files
from treadle.engine.checkpoints.errors import CheckpointError
from treadle.engine.checkpoints.lock import LOCK_NAME, FolderLock, read_lock_owner
from treadle.engine.checkpoints.manifest import MAX_MANIFEST_BYTES, ManifestDamage, decode_manifest
from treadle.engine.checkpoints.names import CHECKPOINT_NAME, INDEX_NAME
from treadle.owner import HEARTBEAT_SECONDS, LEASE_SECONDS, ProcessOwner, current_owner

__all__ = [
    "HEARTBEAT_SECONDS",
    "MAX_RUNS_PER_NAME",
    "RUN_FILE",
    "RunFolder",
    "RunFolderBusyError",
    "RunInfo",
    "claim_existing_run_folder",
    "claim_run_folder",
    "ensure_not_busy",
    "find_run_folder",
    "folder_series",
    "holds_run",
    "last_checkpoint",
    "read_run_info",
    "record_in_run_file",
    "run_status",
]

logger = logging.getLogger(__name__)

#: The run's own file inside its folder.
RUN_FILE = "run.json"
#: After this many seconds without a heartbeat, an owner on another host counts as gone.
STALE_AFTER_SECONDS = LEASE_SECONDS
#: ``base``, ``base-2`` ... ``base-999``.
MAX_RUNS_PER_NAME = 999
_FORMAT = "treadle.run"
_FORMAT_VERSION = 1
_MAX_RUN_FILE_BYTES = 1 << 24
#: statuses ``run.json`` holds; ``died`` is only ever reported, never written
FOLDER_STATUSES = ("running", "interrupted", "completed", "failed")


class RunFolderBusyError(CheckpointError):
    """The run folder belongs to a live run; the message names its process and host.

    :ivar folder: the folder.
    :ivar owner: the live owner, when the lock file names it.
    """

    def __init__(self, message: str, folder: Path, owner: ProcessOwner | None) -> None:
        super().__init__(message)
        self.folder = folder
        self.owner = owner


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@attrs.frozen(kw_only=True)
class RunInfo:
    """What ``run.json`` says about a run.

    :ivar run_id: the run's id (32 hex digits), also in its manifest and every checkpoint.
    :ivar run_name: the config's ``run_name`` (``None`` when unset).
    :ivar status: ``running``, ``interrupted``, ``completed`` or ``failed``.
    :ivar attempt: how many times a process started the run (a resume starts another).
    :ivar owner: the process that started its latest attempt.
    :ivar results: how it ended (JSON data: ``best_checkpoint``, ``best_val_loss``, ...).
    :ivar registered: the model version it was registered as (``model_id``, ``name``,
        ``version``, ``location``), once registered.
    """

    run_id: str
    run_name: str | None
    created_at: str
    updated_at: str
    status: str
    attempt: int
    owner: ProcessOwner | None = None
    results: dict[str, Any] | None = None
    registered: dict[str, Any] | None = None

    def is_complete(self, epochs: int | None = None) -> bool:
        """Whether the run finished: it says ``completed`` and either early stopping ended it
        or it trained ``epochs`` epochs (``None``: any number). A run a hook stopped, or one
        that trained to its end, continues when resumed for more epochs."""
        if self.status != "completed":
            return False
        results = self.results or {}
        if epochs is None or results.get("early_stopped") is True:
            return True
        history = results.get("history")
        last = history[-1] if isinstance(history, list) and history else None
        epoch = last.get("epoch") if isinstance(last, dict) else None
        return not isinstance(epoch, int) or epoch + 1 >= epochs

    def to_json(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "run_id": self.run_id,
            "run_name": self.run_name,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "status": self.status,
            "attempt": self.attempt,
            "owner": None if self.owner is None else self.owner.to_json(),
            "results": self.results,
            "registered": self.registered,
        }

    @classmethod
    def from_json(cls, data: object) -> RunInfo:
        """:raises ValueError: ``data`` is not a run file this treadle reads."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            msg = "it is not a treadle run file (no format 'treadle.run')"
            raise ValueError(msg)
        version = data.get("format_version")
        if type(version) is not int or not 1 <= version <= _FORMAT_VERSION:
            msg = f"its format version {version!r} is not one this treadle reads"
            raise ValueError(msg)
        run_id, status, attempt = data.get("run_id"), data.get("status"), data.get("attempt")
        if not isinstance(run_id, str) or not run_id or status not in FOLDER_STATUSES:
            msg = f"its run_id {run_id!r} or status {status!r} is not valid"
            raise ValueError(msg)
        if type(attempt) is not int or attempt < 1:
            msg = f"its attempt {attempt!r} is not a count"
            raise ValueError(msg)
        results, registered = data.get("results"), data.get("registered")
        name = data.get("run_name")
        return cls(
            run_id=run_id,
            run_name=name if isinstance(name, str) else None,
            created_at=str(data.get("created_at", "")),
            updated_at=str(data.get("updated_at", "")),
            status=status,
            attempt=attempt,
            owner=ProcessOwner.from_json(data.get("owner")),
            results=results if isinstance(results, dict) else None,
            registered=registered if isinstance(registered, dict) else None,
        )


def new_run_id() -> str:
    """A fresh run id: 32 hex digits."""
    return uuid.uuid4().hex


def read_run_info(folder: str | os.PathLike[str]) -> RunInfo | None:
    """The run ``folder``'s ``run.json`` describes; ``None`` when it has none (a folder of an
    older treadle, or none at all).

    :raises CheckpointError: the file is there but damaged; names it.
    """
    path = Path(folder) / RUN_FILE
    try:
        with path.open("rb") as stream:
            raw = stream.read(_MAX_RUN_FILE_BYTES)
    except FileNotFoundError:
        return None
    except OSError as err:
        msg = f"cannot read run file {path}: {err}"
        raise CheckpointError(msg) from err
    try:
        return RunInfo.from_json(json.loads(raw.decode("utf-8")))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        msg = f"run file {path} is damaged: {err}"
        raise CheckpointError(msg) from err


def _write_run_info(folder: Path, info: RunInfo) -> None:
    data = (json.dumps(info.to_json(), indent=2, allow_nan=False) + "\n").encode("utf-8")
    files.write_atomically(folder / RUN_FILE, lambda writer: writer.write(data), "run file")


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` holds a run: its ``run.json``, a checkpoint manifest or checkpoint
    files (a folder of an older treadle)."""
    if (folder / RUN_FILE).exists() or (folder / INDEX_NAME).exists():
        return True
    try:
        return any(CHECKPOINT_NAME.match(entry.name) for entry in os.scandir(folder))
    except (NotADirectoryError, FileNotFoundError):
        return False


def folder_series(base: str | os.PathLike[str]) -> Iterator[Path]:
    """``base``, ``base-2``, ``base-3`` ... ``base-999``, absolute."""
    base = Path(os.path.abspath(base))
    yield base
    for number in range(2, MAX_RUNS_PER_NAME + 1):
        yield base.with_name(f"{base.name}-{number}")


def find_run_folder(base: str | os.PathLike[str]) -> Path | None:
    """The newest folder of ``base``'s series that holds a run (what a resume continues)."""
    newest = None
    for candidate in folder_series(base):
        if candidate.is_dir() and holds_run(candidate):
            newest = candidate
    return newest


def last_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """The newest checkpoint the manifest of ``folder`` lists (what a resume would try
    first), read without writing anything; ``None`` when there is none or no readable
    manifest."""
    path = Path(folder) / INDEX_NAME
    try:
        with path.open("rb") as stream:
            manifest = decode_manifest(stream.read(MAX_MANIFEST_BYTES + 1))
    except (OSError, ManifestDamage):
        return None
    if not manifest.entries:
        return None
    newest = max(manifest.entries, key=lambda entry: entry.sequence)
    return Path(folder) / newest.file


def run_status(folder: str | os.PathLike[str], info: RunInfo | None = None) -> str:
    """``run.json``'s status, or ``died`` for a run it says is running whose lock nobody
    holds (its process ended without a word: ``kill -9``, a crash of the machine).

    :raises CheckpointError: ``run.json`` is damaged.
    """
    folder = Path(folder)
    info = info if info is not None else read_run_info(folder)
    if info is None:
        return "unknown"
    if info.status != "running":
        return info.status
    if not (folder / LOCK_NAME).exists():
        return "died"  # a live run creates its lock file before it writes run.json
    lock = FolderLock.acquire(folder, current_owner())
    if lock is None:
        return "running"
    try:
        return "running" if _owner_elsewhere_alive(folder, info) else "died"
    finally:
        lock.release()


def _owner_elsewhere_alive(folder: Path, info: RunInfo) -> bool:
    """Whether the lock file names an owner on another machine that beat recently: its lock
    may not reach this host (some network file systems), so it may still be alive."""
    owner, age = read_lock_owner(folder)
    if owner is None or age is None or info.status != "running":
        return False
    return owner.is_alive() is None and age < STALE_AFTER_SECONDS


class RunFolder:
    """A run's folder, owned by this process until :meth:`release`: its lock, its
    ``run.json`` and a heartbeat thread. Get one from :func:`claim_run_folder`.

    :ivar path: the folder.
    :ivar info: what ``run.json`` says now.
    :ivar is_new: the run starts here (not a resume).
    :ivar is_complete: a resumed run that had finished: there is nothing to do (``run.json``
        was left as it was).
    """

    def __init__(
        self,
        path: Path,
        info: RunInfo,
        lock: FolderLock,
        *,
        is_new: bool,
        is_complete: bool = False,
    ) -> None:
        self.path = path
        self.info = info
        self.is_new = is_new
        self.is_complete = is_complete
        self._lock = lock
        self._stop = threading.Event()
        self._heart: threading.Thread | None = None

    @property
    def run_id(self) -> str:
        return self.info.run_id

    @property
    def is_held(self) -> bool:
        return self._lock.is_held

    def update(self, **changes: Any) -> RunInfo:
        """Write ``run.json`` with ``changes`` (fields of :class:`RunInfo`).

        :raises CheckpointError: it cannot be written (a full disk); the old file stands.
        """
        info = attrs.evolve(self.info, updated_at=_now(), **changes)
        _write_run_info(self.path, info)
        self.info = info
        return info

    def finish(self, status: str, results: Mapping[str, Any] | None = None) -> None:
        """Record how this attempt ended (``completed``, ``interrupted``, ``failed``); a
        failure to write is logged, not raised (the checkpoints are what matters)."""
        try:
            self.update(status=status, results=None if results is None else dict(results))
        except (OSError, CheckpointError) as err:
            logger.warning("could not record the run's end in %s: %s", self.path / RUN_FILE, err)

    def start_heartbeat(self, interval: float = HEARTBEAT_SECONDS) -> None:
        """Touch the lock file every ``interval`` seconds on a daemon thread until
        :meth:`release`: one ``utime`` call per beat, nothing on the training path."""
        if self._heart is not None:
            return
        lock, stop = self._lock, self._stop

        def beat() -> None:
            while not stop.wait(interval):
                lock.heartbeat()

        self._heart = threading.Thread(target=beat, name="treadle-run-heartbeat", daemon=True)
        self._heart.start()

    def release(self) -> None:
        """Stop the heartbeat and unlock; calling it again does nothing."""
        self._stop.set()
        heart, self._heart = self._heart, None
        if heart is not None:
            heart.join()
        self._lock.release()

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}, run_id={self.run_id!r}, status={self.info.status!r})"


def claim_run_folder(
    base: str | os.PathLike[str],
    *,
    resume: bool,
    run_name: str | None = None,
    epochs: int | None = None,
    owner: ProcessOwner | None = None,
) -> RunFolder:
    """Take the folder of a run, for this process.

    New (``resume`` false): the first folder of ``base``'s series (:func:`folder_series`) that
    no live process holds and that holds no run, created with ``mkdir`` where missing; it gets
    a fresh run id and a ``run.json`` saying ``running``.

    Resumed: the newest folder of the series holding a run (:func:`find_run_folder`), with its
    run id; ``run.json`` counts another attempt, unless the run is complete for ``epochs``
    (:meth:`RunInfo.is_complete`; then nothing is written and :attr:`RunFolder.is_complete`
    says so: the caller has nothing to do). Without such a folder, a new run is claimed.

    :raises RunFolderBusyError: resuming a run whose process is alive; names its pid and host.
    :raises CheckpointError: 999 runs of ``base`` exist, or ``run.json`` is damaged.
    :raises OSError: the folder cannot be created or locked (permissions, a read-only disk).
    """
    owner = owner or current_owner()
    base = Path(os.path.abspath(base))
    base.parent.mkdir(parents=True, exist_ok=True)
    if resume:
        existing = find_run_folder(base)
        if existing is not None:
            return _claim_existing(existing, owner, run_name, epochs)
        logger.info("no run in %s to resume; starting a new run", base)
    for candidate in folder_series(base):
        try:
            candidate.mkdir()
        except FileExistsError:
            if not candidate.is_dir():
                continue
        lock = FolderLock.acquire(candidate, owner)
        if lock is None:
            logger.info("%s belongs to a live run; trying the next folder", candidate)
            continue
        try:
            # decided under the lock: no other process can be claiming it now
            if holds_run(candidate):
                lock.release()
                continue
            lock.write_owner()
            now = _now()
            info = RunInfo(
                run_id=new_run_id(),
                run_name=run_name,
                created_at=now,
                updated_at=now,
                status="running",
                attempt=1,
                owner=owner,
            )
            _write_run_info(candidate, info)
        except BaseException:
            lock.release()
            raise
        if candidate != base:
            logger.warning(
                "%s holds another run; this new run writes to %s (resume that run with "
                "resume='auto', or treadle train --resume)",
                base,
                candidate,
            )
        return RunFolder(candidate, info, lock, is_new=True)
    msg = f"{base} and {base.name}-2 ... -{MAX_RUNS_PER_NAME} all hold runs; choose another name"
    raise CheckpointError(msg)


def claim_existing_run_folder(
    folder: str | os.PathLike[str], *, run_name: str | None = None, epochs: int | None = None
) -> RunFolder:
    """Take ``folder`` (which holds a run) to continue its run: as a resume does.

    :raises RunFolderBusyError: its process is alive.
    """
    return _claim_existing(Path(os.path.abspath(folder)), current_owner(), run_name, epochs)


def _acquire_patiently(folder: Path, owner: ProcessOwner) -> FolderLock | None:
    # a few tries: a reader checking whether the run is alive (run_status) holds the lock
    # for a moment
    for _ in range(5):
        lock = FolderLock.acquire(folder, owner)
        if lock is not None:
            return lock
        time.sleep(0.02)
    return None


def _claim_existing(
    folder: Path, owner: ProcessOwner, run_name: str | None, epochs: int | None
) -> RunFolder:
    lock = _acquire_patiently(folder, owner)
    if lock is None:
        raise _busy(folder)
    try:
        info = read_run_info(folder)
        if info is not None and _owner_elsewhere_alive(folder, info):
            raise _busy(folder)
        if info is not None and info.is_complete(epochs):
            return RunFolder(folder, info, lock, is_new=False, is_complete=True)
        lock.write_owner()
        now = _now()
        if info is None:  # a folder of an older treadle: the run gets its id now
            info = RunInfo(
                run_id=new_run_id(),
                run_name=run_name,
                created_at=now,
                updated_at=now,
                status="running",
                attempt=1,
                owner=owner,
            )
        else:
            previous = "died" if info.status == "running" else info.status
            logger.info(
                "resuming run %s in %s (attempt %d; it was %s)",
                info.run_id,
                folder,
                info.attempt + 1,
                previous,
            )
            info = attrs.evolve(
                info, status="running", attempt=info.attempt + 1, owner=owner, updated_at=now
            )
        _write_run_info(folder, info)
    except BaseException:
        lock.release()
        raise
    return RunFolder(folder, info, lock, is_new=False)


def ensure_not_busy(folder: str | os.PathLike[str]) -> None:
    """Refuse a folder a live run holds, naming its process; takes nothing.

    :raises RunFolderBusyError: a live run holds it.
    """
    path = Path(os.path.abspath(folder))
    lock = _acquire_patiently(path, current_owner())
    if lock is None:
        raise _busy(path)
    try:
        info = read_run_info(path)
        if info is not None and _owner_elsewhere_alive(path, info):
            raise _busy(path)
    finally:
        lock.release()


def record_in_run_file(folder: str | os.PathLike[str], **changes: Any) -> RunInfo:
    """Write ``changes`` (fields of :class:`RunInfo`, such as ``registered``) into the
    ``run.json`` of a run that has ended, under its lock.

    :raises RunFolderBusyError: a live run holds the folder.
    :raises CheckpointError: the folder has no ``run.json``, or it cannot be written.
    """
    path = Path(os.path.abspath(folder))
    lock = _acquire_patiently(path, current_owner())
    if lock is None:
        raise _busy(path)
    try:
        info = read_run_info(path)
        if info is None:
            msg = f"{path} has no {RUN_FILE}"
            raise CheckpointError(msg)
        info = attrs.evolve(info, updated_at=_now(), **changes)
        _write_run_info(path, info)
        return info
    finally:
        lock.release()


def _busy(folder: Path) -> RunFolderBusyError:
    owner, age = read_lock_owner(folder)
    if owner is None:
        who = "another process"
    else:
        who = owner.describe()
        if age is not None:
            who += f", last heartbeat {age:.0f} s ago"
    msg = (
        f"run folder {folder} belongs to a live run ({who}); wait for it to end or stop it "
        "(Ctrl-C saves and stops it), then resume"
    )
    return RunFolderBusyError(msg, folder, owner)
