"""Checkpoints: atomic saves listed in a sha256 manifest, best-k and last-n retention, verified
weights-only loads, a backup folder and asynchronous writing.

A save writes a temporary file beside its target, fsyncs it, renames it into place and fsyncs
the folder; only then is the manifest (``checkpoints.json``, written the same way) updated and
are the checkpoints retention no longer wants deleted. A process killed at any point leaves the
last finished checkpoint loadable and, at most, a stray temporary file that the next
:class:`CheckpointManager` on the folder removes. Which checkpoints are best lives in the
manifest, never in a file name.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import math
import os
import pickle
import re
import secrets
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import attrs
import torch

from treadle.errors import TreadleError
from treadle.seed import capture_rng_state

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "INDEX_NAME",
    "CheckpointError",
    "CheckpointManager",
    "CheckpointMetadata",
]

logger = logging.getLogger(__name__)

#: Version of the checkpoint dict's layout; a newer file is refused with an upgrade hint.
CHECKPOINT_FORMAT_VERSION = 1
#: The manifest's file name inside the checkpoint folder.
INDEX_NAME = "checkpoints.json"
_INDEX_FORMAT = "treadle.checkpoints"
_INDEX_FORMAT_VERSION = 1
_CHECKPOINT_FORMAT = "treadle.checkpoint"

_CHECKPOINT_NAME = re.compile(r"^epoch_(?P<epoch>\d{3,})(?:_step_(?P<step>\d{6,}))?\.pt$")
#: ``.<target>.<pid>-<process token>-<counter>.tmp``: the pid and a token drawn once per
#: process tell a live writer's file from one a killed process left behind (containers reuse
#: pids, so a pid alone is not enough).
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)-(?P<token>[0-9a-f]{12})-\d+\.tmp$")
_PROCESS_TOKEN = secrets.token_hex(6)
_temp_counter = iter(range(1 << 62))


def _new_process_token() -> None:
    global _PROCESS_TOKEN
    _PROCESS_TOKEN = secrets.token_hex(6)


if hasattr(os, "register_at_fork"):  # a forked child is another writer, with a pid of its own
    os.register_at_fork(after_in_child=_new_process_token)
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_READ_CHUNK_BYTES = 1 << 23
#: Below this, hashing beside the fsync and deleting on a thread cost more than they save.
_BACKGROUND_BYTES = 1 << 25
_MIB = float(1 << 20)
_SEQUENCE_KEYS = (list, tuple, set)
_LEAF_TYPES = (type(None), bool, int, float, complex, str, bytes, bytearray)
_TORCH_LEAF_TYPES = (torch.dtype, torch.device, torch.Size)


class CheckpointError(TreadleError):
    """A checkpoint cannot be written, read or trusted; the message names the file and what is
    wrong with it (damaged, not a checkpoint, carrying pickled objects, disk full)."""


@attrs.frozen(kw_only=True)
class CheckpointMetadata:
    """One checkpoint, as :meth:`CheckpointManager.save_checkpoint` wrote it or
    :meth:`CheckpointManager.load_checkpoint` read it.

    :ivar path: the checkpoint file.
    :ivar epoch: the epoch it was written in (the Trainer counts from 0).
    :ivar metrics: the metrics it was saved with (validation metrics at an epoch's end,
        empty for a mid-epoch save).
    :ivar is_best: best by the monitored metric among the checkpoints kept (at save time for
        a save, per the manifest for a load).
    :ivar timestamp: when it was saved, ISO 8601 in UTC.
    :ivar model_size_mb: size of the model's weights and buffers, MiB.
    :ivar optimizer_state_size_mb: size of the optimizer state's tensors, MiB.
    :ivar global_step: optimizer steps taken when it was saved.
    :ivar trainer_state: the Trainer's exact-resume state, ``None`` when saved without one.
    :ivar metadata: free-form values the caller saved with it.
    :ivar rng_state: every RNG at save time (:func:`treadle.seed.restore_rng_state` takes it).
    """

    path: str
    epoch: int
    metrics: dict[str, float]
    is_best: bool
    timestamp: str
    model_size_mb: float
    optimizer_state_size_mb: float
    global_step: int = 0
    trainer_state: dict[str, Any] | None = attrs.field(default=None, repr=False)
    metadata: dict[str, Any] = attrs.field(factory=dict)
    rng_state: dict[str, Any] | None = attrs.field(default=None, repr=False)


@attrs.define(kw_only=True)
class _Entry:
    """A row of the manifest."""

    file: str
    epoch: int
    step: int
    mid_epoch: bool
    sequence: int
    sha256: str
    size_bytes: int
    metrics: dict[str, float]
    timestamp: str
    model_size_mb: float
    optimizer_state_size_mb: float
    is_best: bool = False

    def to_json(self) -> dict[str, Any]:
        row = attrs.asdict(self)
        row["metrics"] = {name: _metric_to_json(value) for name, value in self.metrics.items()}
        return row

    @classmethod
    def from_json(cls, row: Any) -> _Entry:
        """:raises ValueError: the row is malformed or names a file outside the folder."""
        if not isinstance(row, dict):
            msg = f"an entry is a {type(row).__name__}, not an object"
            raise ValueError(msg)
        name = row.get("file")
        if not isinstance(name, str) or not _CHECKPOINT_NAME.match(name):
            msg = f"entry file {name!r} is not a checkpoint name in this folder"
            raise ValueError(msg)
        metrics = row.get("metrics")
        if not isinstance(metrics, dict):
            msg = f"entry {name}: metrics are not an object"
            raise ValueError(msg)
        try:
            return cls(
                file=name,
                epoch=int(row["epoch"]),
                step=int(row["step"]),
                mid_epoch=bool(row["mid_epoch"]),
                sequence=int(row["sequence"]),
                sha256=str(row["sha256"]),
                size_bytes=int(row["size_bytes"]),
                metrics={str(key): _metric_from_json(value) for key, value in metrics.items()},
                timestamp=str(row["timestamp"]),
                model_size_mb=float(row["model_size_mb"]),
                optimizer_state_size_mb=float(row["optimizer_state_size_mb"]),
                is_best=bool(row.get("is_best", False)),
            )
        except (KeyError, TypeError, ValueError) as err:
            msg = f"entry {name}: {type(err).__name__}: {err}"
            raise ValueError(msg) from err


@attrs.frozen
class _SaveJob:
    """What a save writes; built on the caller's thread, written on it or a background one."""

    name: str
    payload: dict[str, Any]
    epoch: int
    step: int
    mid_epoch: bool
    metrics: dict[str, float]
    timestamp: str
    model_size_mb: float
    optimizer_state_size_mb: float


class _FileWriter:
    """The file object ``torch.save`` writes through: raw ``os.write`` calls on ``fd``,
    optionally hashed as they pass, keeping the OSError a write raised (torch may re-raise it
    as a RuntimeError without the cause)."""

    def __init__(self, fd: int, *, hashing: bool) -> None:
        self._fd = fd
        self._hash = hashlib.sha256() if hashing else None
        self.size = 0
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        length = len(view)
        if self._hash is not None:
            self._hash.update(view)
        try:
            written = 0
            while written < length:
                written += os.write(self._fd, view[written:])
        except OSError as err:
            self.error = err
            raise
        self.size += length
        return length

    def flush(self) -> None:
        """Nothing is buffered here; the caller fsyncs."""

    def hexdigest(self) -> str:
        assert self._hash is not None
        return self._hash.hexdigest()


class CheckpointManager:
    """Saves, lists, prunes and loads the checkpoints of one run folder.

    :param checkpoint_dir: folder for the checkpoints and their manifest (created if missing).
    :param keep_best_k: keep the K best checkpoints by ``monitor``.
    :param keep_last_n: keep the N most recent checkpoints. A checkpoint is kept when either
        rule wants it; both 0 is refused.
    :param monitor: the metric that ranks checkpoints (``val_loss``); a checkpoint whose value
        is missing, NaN or infinite is never best.
    :param mode: ``'min'`` (lower is better) or ``'max'``.
    :param save_interval_epochs: :meth:`should_save` is true every this many epochs.
    :param drive_backup: also copy each finished checkpoint and the manifest to
        ``drive_backup_path`` (any mounted folder: Google Drive on Colab, a network share).
    :param drive_backup_path: the backup folder; required with ``drive_backup``.
    :param async_save: copy the state to CPU memory on the caller's thread and write it on a
        background thread; one save at a time is in flight (the next waits for it), and its
        error is raised by the next :meth:`save_checkpoint` or by :meth:`close`.
    :raises ValueError: an argument is out of range, or the folder is a file.
    """

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike[str],
        keep_best_k: int = 3,
        keep_last_n: int = 5,
        monitor: str = "val_loss",
        mode: str = "min",
        save_interval_epochs: int = 1,
        drive_backup: bool = False,
        drive_backup_path: str | os.PathLike[str] | None = None,
        async_save: bool = False,
    ) -> None:
        _check_count("keep_best_k", keep_best_k, minimum=0)
        _check_count("keep_last_n", keep_last_n, minimum=0)
        _check_count("save_interval_epochs", save_interval_epochs, minimum=1)
        if keep_best_k == 0 and keep_last_n == 0:
            msg = "keep_best_k and keep_last_n are both 0, so every checkpoint would be deleted"
            raise ValueError(msg)
        if not isinstance(monitor, str) or not monitor:
            msg = f"monitor must name a metric (such as 'val_loss'), got {monitor!r}"
            raise ValueError(msg)
        if mode not in ("min", "max"):
            msg = f"mode must be 'min' or 'max', got {mode!r}"
            raise ValueError(msg)
        self.checkpoint_dir = _folder("checkpoint_dir", checkpoint_dir)
        self.drive_backup_path: Path | None = None
        if drive_backup:
            if drive_backup_path is None:
                msg = "drive_backup=True needs drive_backup_path, the folder to copy checkpoints to"
                raise ValueError(msg)
            backup = _folder("drive_backup_path", drive_backup_path)
            if backup.resolve() == self.checkpoint_dir.resolve():
                msg = f"drive_backup_path {backup} is the checkpoint folder itself"
                raise ValueError(msg)
            self.drive_backup_path = backup
        elif drive_backup_path is not None:
            msg = (
                f"drive_backup_path={os.fspath(drive_backup_path)!r} is set but drive_backup is "
                "False: pass drive_backup=True to back up, or leave the path out"
            )
            raise ValueError(msg)
        self.keep_best_k = keep_best_k
        self.keep_last_n = keep_last_n
        self.monitor = monitor
        self.mode = mode
        self.save_interval_epochs = save_interval_epochs
        self.async_save = bool(async_save)
        self._lock = threading.RLock()
        self._entries: list[_Entry] = []
        #: Checkpoint files found at start-up that could not be listed, with the damage.
        self._unreadable: dict[str, str] = {}
        #: path -> (inode, size, mtime, ctime) of a file whose sha256 was just checked; one use.
        self._verified: dict[str, tuple[int, int, int, int]] = {}
        self._pending: threading.Thread | None = None
        self._deleting: threading.Thread | None = None
        self._pending_error: BaseException | None = None
        self._open()

    # -- public API --------------------------------------------------------------------------

    @property
    def index_path(self) -> Path:
        """The manifest: every kept checkpoint with its sha256, size, epoch, step and metrics."""
        return self.checkpoint_dir / INDEX_NAME

    def should_save(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (counted from 0) is due under ``save_interval_epochs``.
        :meth:`save_checkpoint` itself always writes."""
        return (epoch + 1) % self.save_interval_epochs == 0

    def save_checkpoint(
        self,
        epoch: int,
        metrics: Mapping[str, Any],
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        scheduler: Any = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        scaler: Any = None,
        trainer_state: Mapping[str, Any] | None = None,
        global_step: int = 0,
    ) -> CheckpointMetadata:
        """Write a checkpoint atomically, list it in the manifest and apply retention.

        The file is ``epoch_003.pt``, or ``epoch_003_step_000120.pt`` for a mid-epoch save
        (``trainer_state['epoch_complete']`` false). Saving a name that exists replaces it.
        With ``async_save`` the call returns once the state is copied to CPU memory. The
        files retention drops leave the manifest at once and the disk on a background thread
        (freeing a large file's blocks can take a second); :meth:`wait` waits for that.

        :param epoch: the epoch, from 0.
        :param metrics: metric name to number (floats, ints, 0-d tensors).
        :param metadata: extra plain values (str, int, float, bool, None, lists, dicts,
            tensors) stored with the checkpoint.
        :param scaler: a ``torch.amp.GradScaler`` (or anything with ``state_dict``).
        :param trainer_state: the Trainer's resume state, stored as given.
        :param global_step: optimizer steps taken so far.
        :returns: the checkpoint's metadata (``is_best`` as ranked when it was saved).
        :raises CheckpointError: the disk is full, or the write failed; older checkpoints are
            untouched and nothing was deleted. Also the error of a failed asynchronous save,
            in which case this save was not made.
        :raises TypeError: the state holds a value ``torch.load(weights_only=True)`` refuses
            (a ``Path``, a NumPy scalar, an arbitrary object); the message gives its location.
        :raises ValueError: ``epoch``, ``global_step`` or a metric is not a number.
        """
        self.wait()
        _check_count("epoch", epoch, minimum=0)
        _check_count("global_step", global_step, minimum=0)
        clean_metrics = _clean_metrics(metrics)
        state = dict(trainer_state) if trainer_state is not None else None
        mid_epoch = state is not None and state.get("epoch_complete") is False
        name = f"epoch_{epoch:03d}" + (f"_step_{global_step:06d}" if mid_epoch else "") + ".pt"
        timestamp = datetime.now(UTC).isoformat(timespec="microseconds")
        payload = self._payload(
            epoch=epoch,
            global_step=global_step,
            mid_epoch=mid_epoch,
            timestamp=timestamp,
            metrics=clean_metrics,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            trainer_state=state,
            metadata=dict(metadata or {}),
        )
        _check_loadable(payload, "checkpoint")
        if self.async_save:
            payload = _copy_to_cpu(payload, {})
        job = _SaveJob(
            name=name,
            payload=payload,
            epoch=epoch,
            step=global_step,
            mid_epoch=mid_epoch,
            metrics=clean_metrics,
            timestamp=timestamp,
            model_size_mb=_tensor_bytes(payload["model_state_dict"]) / _MIB,
            optimizer_state_size_mb=_tensor_bytes(payload["optimizer_state_dict"]) / _MIB,
        )
        if self.async_save:
            is_best = self._would_be_best(job)
            thread = threading.Thread(
                target=self._write_in_background, args=(job,), name="treadle-checkpoint-writer"
            )
            self._pending = thread
            thread.start()
        else:
            is_best = self._write_and_commit(job).is_best
        return CheckpointMetadata(
            path=str(self.checkpoint_dir / name),
            epoch=epoch,
            metrics=dict(clean_metrics),
            is_best=is_best,
            timestamp=timestamp,
            model_size_mb=job.model_size_mb,
            optimizer_state_size_mb=job.optimizer_state_size_mb,
            global_step=global_step,
            trainer_state=state,
            metadata=dict(payload["metadata"]),
            rng_state=payload["rng_state"],
        )

    def load_checkpoint(
        self,
        path: str | os.PathLike[str],
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        *,
        scaler: Any = None,
    ) -> CheckpointMetadata:
        """Verify a checkpoint and load it into the given parts.

        A file listed in the manifest must match its recorded size and sha256; any other file
        must pass its zip CRC-32 checks. Loading always uses ``torch.load(weights_only=True)``,
        so a file cannot run code while it loads.

        :param path: the checkpoint file, or the bare name of one in this folder.
        :returns: its metadata, with ``trainer_state`` and ``global_step`` for a resume.
        :raises CheckpointError: the file is missing, empty, truncated, damaged, not a
            checkpoint, carries arbitrary pickled objects, or does not fit the model; the
            message names the file and the problem.
        """
        self._join_pending()
        file = self._resolve(path)
        payload = self._read_verified(file)
        self._apply(file, payload, model, optimizer, scheduler, scaler)
        entry = self._entry_for(file)
        state = payload.get("trainer_state")
        metadata = payload.get("metadata")
        logger.info("loaded checkpoint %s", file)
        return CheckpointMetadata(
            path=str(file),
            epoch=int(payload.get("epoch", -1)),
            metrics=_clean_metrics(payload.get("metrics") or {}),
            is_best=entry.is_best if entry is not None else False,
            timestamp=str(payload.get("timestamp", "")),
            model_size_mb=_tensor_bytes(payload.get("model_state_dict")) / _MIB,
            optimizer_state_size_mb=_tensor_bytes(payload.get("optimizer_state_dict")) / _MIB,
            global_step=int(payload.get("global_step", 0) or 0),
            trainer_state=dict(state) if isinstance(state, dict) else None,
            metadata=dict(metadata) if isinstance(metadata, dict) else {},
            rng_state=payload.get("rng_state"),
        )

    def latest_valid_checkpoint(self) -> Path | None:
        """The newest checkpoint whose size and sha256 match the manifest, or ``None``.

        Each damaged or missing checkpoint passed over is named in a warning.
        """
        self._join_pending()
        with self._lock:
            candidates = sorted(self._entries, key=lambda entry: entry.sequence, reverse=True)
        for name, reason in self._unreadable.items():
            logger.warning("skipping checkpoint %s: %s", self.checkpoint_dir / name, reason)
        for entry in candidates:
            file = self.checkpoint_dir / entry.file
            damage = self._verify_listed(file, entry, remember=True)
            if damage is None:
                return file
            logger.warning("skipping damaged checkpoint %s: %s", file, damage)
        return None

    def get_best_checkpoint(self) -> str | None:
        """Path of the best kept checkpoint by ``monitor``; ``None`` when none has a finite
        value. Ties go to the earlier checkpoint."""
        self._join_pending()
        with self._lock:
            ranked = self._ranked(self._entries)
        return str(self.checkpoint_dir / ranked[0].file) if ranked else None

    def get_checkpoint_history(self) -> pd.DataFrame:
        """The kept checkpoints, oldest first: ``epoch``, ``step``, one column per metric,
        ``is_best``, ``path``, ``timestamp`` and ``size_mb`` (file size, MiB)."""
        import pandas as pd

        self._join_pending()
        with self._lock:
            entries = sorted(self._entries, key=lambda entry: entry.sequence)
        metric_names = sorted({name for entry in entries for name in entry.metrics})
        if self.monitor in metric_names:
            metric_names.remove(self.monitor)
            metric_names.insert(0, self.monitor)
        columns = ["epoch", "step", *metric_names, "is_best", "path", "timestamp", "size_mb"]
        rows = [
            {
                "epoch": entry.epoch,
                "step": entry.step,
                **{name: entry.metrics.get(name, math.nan) for name in metric_names},
                "is_best": entry.is_best,
                "path": str(self.checkpoint_dir / entry.file),
                "timestamp": entry.timestamp,
                "size_mb": entry.size_bytes / _MIB,
            }
            for entry in entries
        ]
        return pd.DataFrame(rows, columns=columns)

    def wait(self) -> None:
        """Wait for an asynchronous save in flight and for the deletions of the last save.

        :raises BaseException: that save's error (once), with a note naming the save.
        """
        self._join_pending()
        error, self._pending_error = self._pending_error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Finish a pending asynchronous save and raise its error, if any. The manager stays
        usable."""
        self.wait()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        else:
            self._join_pending()

    def __repr__(self) -> str:
        return (
            f"CheckpointManager({str(self.checkpoint_dir)!r}, keep_best_k={self.keep_best_k}, "
            f"keep_last_n={self.keep_last_n}, monitor={self.monitor!r}, mode={self.mode!r})"
        )

    # -- start-up ----------------------------------------------------------------------------

    def _open(self) -> None:
        """Sweep stray temporary files, read the manifest (rebuilding it from the files when
        it is missing or corrupt), finish interrupted deletions, list unlisted files."""
        for folder in (self.checkpoint_dir, self.drive_backup_path):
            if folder is not None and folder.is_dir():
                _sweep_temp_files(folder)
        index = self._read_index()
        changed = index is None
        entries, deleting = index if index is not None else ([], [])
        listed = {entry.file for entry in entries}
        for name in deleting:
            if name not in listed:
                _unlink(self.checkpoint_dir / name)
        present = [entry for entry in entries if (self.checkpoint_dir / entry.file).is_file()]
        for entry in entries:
            if entry not in present:
                logger.warning(
                    "checkpoint %s is listed in %s but missing; dropping it from the index",
                    self.checkpoint_dir / entry.file,
                    self.index_path,
                )
                changed = True
        adopted = self._adopt_unlisted({entry.file for entry in present} | set(deleting))
        if adopted:
            changed = True
        entries = sorted(present, key=lambda entry: entry.sequence)
        if adopted:  # merged by save time; the manifest's order stands otherwise
            entries = sorted(
                entries + adopted, key=lambda entry: (entry.timestamp, entry.epoch, entry.step)
            )
        for sequence, entry in enumerate(entries):
            entry.sequence = sequence
        self._entries = entries
        self._mark_best(entries)
        if changed:
            try:
                self._write_index(entries, [])
            except (OSError, CheckpointError) as err:  # a read-only folder can still be read
                logger.warning("could not rewrite %s: %s", self.index_path, err)

    def _read_index(self) -> tuple[list[_Entry], list[str]] | None:
        """The manifest's entries and pending deletions; ``None`` when missing or corrupt."""
        try:
            raw = self.index_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("format") != _INDEX_FORMAT:
                msg = "not a treadle checkpoint index"
                raise ValueError(msg)
            if int(data.get("format_version", 0)) > _INDEX_FORMAT_VERSION:
                msg = f"index format {data['format_version']} is newer than this treadle's"
                raise ValueError(msg)
            entries = [_Entry.from_json(row) for row in data["checkpoints"]]
            deleting = [str(name) for name in data.get("deleting", [])]
            if not all(_CHECKPOINT_NAME.match(name) for name in deleting):
                msg = "a pending deletion is not a checkpoint name in this folder"
                raise ValueError(msg)
        except (ValueError, KeyError, TypeError) as err:
            corrupt = self.index_path.with_name(INDEX_NAME + ".corrupt")
            logger.warning(
                "checkpoint index %s is corrupt (%s); kept as %s and rebuilt from the files",
                self.index_path,
                err,
                corrupt.name,
            )
            try:
                os.replace(self.index_path, corrupt)
            except OSError as move_error:
                logger.warning("could not move the corrupt index aside: %s", move_error)
            return None
        if data.get("monitor") != self.monitor or data.get("mode") != self.mode:
            logger.info(
                "%s ranked checkpoints by %s (%s); now ranking by %s (%s)",
                self.index_path,
                data.get("monitor"),
                data.get("mode"),
                self.monitor,
                self.mode,
            )
        return entries, deleting

    def _adopt_unlisted(self, listed: set[str]) -> list[_Entry]:
        """Entries for checkpoint files the manifest does not list (a lost manifest, or a
        process killed between renaming a checkpoint into place and listing it)."""
        adopted: list[_Entry] = []
        for file in sorted(self.checkpoint_dir.iterdir()):
            if file.name in listed or not _CHECKPOINT_NAME.match(file.name) or not file.is_file():
                continue
            try:
                adopted.append(self._inspect(file))
            except CheckpointError as err:
                self._unreadable[file.name] = str(err)
                logger.warning("not listing checkpoint %s: %s", file, err)
            else:
                logger.info("listed checkpoint %s, which the index lacked", file)
        return adopted

    def _inspect(self, file: Path) -> _Entry:
        """A manifest entry for an unlisted file, after checking its CRCs."""
        damage = _empty_or_crc_damage(file)
        if damage is not None:
            msg = f"checkpoint {file} is damaged: {damage}"
            raise CheckpointError(msg)
        try:
            payload = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # torch raises many types for a bad file; all mean the same
            raise _load_error(file, err) from err
        _check_payload(file, payload)
        match = _CHECKPOINT_NAME.match(file.name)
        assert match is not None  # the caller matched it
        try:
            entry = _Entry(
                file=file.name,
                epoch=int(payload.get("epoch", match["epoch"])),
                step=int(payload.get("global_step", match["step"] or 0)),
                mid_epoch=bool(payload.get("mid_epoch", match["step"] is not None)),
                sequence=0,
                sha256=_sha256_file(file),
                size_bytes=file.stat().st_size,
                metrics=_clean_metrics(payload.get("metrics") or {}),
                timestamp=str(payload.get("timestamp", "")),
                model_size_mb=_tensor_bytes(payload.get("model_state_dict")) / _MIB,
                optimizer_state_size_mb=_tensor_bytes(payload.get("optimizer_state_dict")) / _MIB,
            )
        except (TypeError, ValueError) as err:
            msg = f"checkpoint {file} has malformed epoch, step or metrics: {err}"
            raise CheckpointError(msg) from err
        finally:
            del payload  # unmaps the file
        return entry

    # -- saving ------------------------------------------------------------------------------

    def _payload(
        self,
        *,
        epoch: int,
        global_step: int,
        mid_epoch: bool,
        timestamp: str,
        metrics: dict[str, float],
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        scheduler: Any,
        scaler: Any,
        trainer_state: dict[str, Any] | None,
        metadata: dict[str, Any],
    ) -> dict[str, Any]:
        trainer_state = trainer_state or {}
        # the Trainer's state already holds these; pickling shares one copy of each
        rng_state = trainer_state.get("rng_state") or capture_rng_state()
        return {
            "format": _CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "epoch": epoch,
            "global_step": global_step,
            "mid_epoch": mid_epoch,
            "timestamp": timestamp,
            "metrics": metrics,
            "monitor": self.monitor,
            "model_state_dict": model.state_dict(),
            "optimizer_state_dict": None if optimizer is None else optimizer.state_dict(),
            "scheduler_state_dict": None if scheduler is None else scheduler.state_dict(),
            "scaler_state_dict": None if scaler is None else scaler.state_dict(),
            "trainer_state": trainer_state or None,
            "rng_state": rng_state,
            "config": trainer_state.get("config"),
            "task": trainer_state.get("task"),
            "metadata": metadata,
            "torch_version": str(torch.__version__),
        }

    def _write_in_background(self, job: _SaveJob) -> None:
        try:
            self._write_and_commit(job)
        except BaseException as err:
            err.add_note(
                f"raised by the asynchronous save of {self.checkpoint_dir / job.name}, "
                "surfaced at the next save_checkpoint() or close()"
            )
            self._pending_error = err

    def _join_pending(self) -> None:
        """Wait for the save in flight and for the deletions of the last save."""
        thread, self._pending = self._pending, None
        if thread is not None:
            thread.join()
        self._join_deletions()

    def _join_deletions(self) -> None:
        thread, self._deleting = self._deleting, None
        if thread is not None:
            thread.join()

    def _delete_in_background(self, files: list[Path]) -> None:
        """Delete what retention dropped, large files off the caller's path: freeing a 1 GB
        file's blocks takes most of a second on some disks. The manifest already lists them
        as deleting, so a kill before they go leaves nothing stale (the next start deletes
        them)."""
        self._join_deletions()
        sizes = [file.stat().st_size for file in files if file.is_file()]
        if sum(sizes) < _BACKGROUND_BYTES:
            for file in files:
                _unlink(file)
            return

        def delete() -> None:
            for file in files:
                _unlink(file)

        self._deleting = threading.Thread(target=delete, name="treadle-checkpoint-deleter")
        self._deleting.start()

    def _write_and_commit(self, job: _SaveJob) -> _Entry:
        started = time.perf_counter()
        target = self.checkpoint_dir / job.name
        self._join_deletions()  # the name may be one being deleted
        with self._lock:
            replaced = next((entry for entry in self._entries if entry.file == job.name), None)
            if replaced is not None:
                # unlist before replacing, so a kill mid-replace leaves no stale sha256
                others = [entry for entry in self._entries if entry.file != job.name]
                self._write_index(others, [])
                self._entries = others
            sequence = 1 + max((entry.sequence for entry in self._entries), default=-1)
        replaced_inode = _inode(target) if replaced is not None else None
        try:
            digest, size = _write_atomically(
                target,
                functools.partial(_torch_save, job.payload),
                "checkpoint",
                hash_during_fsync=True,
            )
        except BaseException:
            if replaced is not None and _inode(target) == replaced_inode:
                self._relist(replaced)  # the failed save left the old file as it was
            raise
        entry = _Entry(
            file=job.name,
            epoch=job.epoch,
            step=job.step,
            mid_epoch=job.mid_epoch,
            sequence=sequence,
            sha256=digest,
            size_bytes=size,
            metrics=job.metrics,
            timestamp=job.timestamp,
            model_size_mb=job.model_size_mb,
            optimizer_state_size_mb=job.optimizer_state_size_mb,
        )
        with self._lock:
            kept, removed = self._retain([*self._entries, entry])
            self._write_index(kept, [old.file for old in removed])
            self._entries = kept
        self._delete_in_background([self.checkpoint_dir / old.file for old in removed])
        seconds = time.perf_counter() - started
        logger.info("saved checkpoint %s (%.1f MiB) in %.2f s", target, size / _MIB, seconds)
        if entry not in kept:
            logger.warning(
                "checkpoint %s was deleted at once: it is not among the last %d and its %s "
                "(%s) is not among the best %d",
                target,
                self.keep_last_n,
                self.monitor,
                entry.metrics.get(self.monitor, "missing"),
                self.keep_best_k,
            )
        if self.drive_backup_path is not None:
            self._back_up(entry, removed)
        return entry

    def _would_be_best(self, job: _SaveJob) -> bool:
        """Whether ``job`` ranks first once saved (an asynchronous save answers early)."""
        value = job.metrics.get(self.monitor, math.nan)
        if not math.isfinite(value):
            return False
        with self._lock:
            ranked = self._ranked([entry for entry in self._entries if entry.file != job.name])
        if not ranked:
            return True
        best = ranked[0].metrics[self.monitor]
        return value < best if self.mode == "min" else value > best

    def _ranked(self, entries: Iterable[_Entry]) -> list[_Entry]:
        """Entries with a finite monitored value, best first; ties to the earlier save."""
        sign = 1.0 if self.mode == "min" else -1.0
        eligible = [
            entry for entry in entries if math.isfinite(entry.metrics.get(self.monitor, math.nan))
        ]
        return sorted(
            eligible, key=lambda entry: (sign * entry.metrics[self.monitor], entry.sequence)
        )

    def _retain(self, entries: list[_Entry]) -> tuple[list[_Entry], list[_Entry]]:
        """(kept, removed): the best ``keep_best_k`` by the monitor and the last
        ``keep_last_n`` are kept."""
        by_age = sorted(entries, key=lambda entry: entry.sequence)
        wanted = {entry.file for entry in self._ranked(by_age)[: self.keep_best_k]}
        if self.keep_last_n:
            wanted |= {entry.file for entry in by_age[-self.keep_last_n :]}
        kept = [entry for entry in by_age if entry.file in wanted]
        removed = [entry for entry in by_age if entry.file not in wanted]
        self._mark_best(kept)
        return kept, removed

    def _mark_best(self, entries: list[_Entry]) -> None:
        ranked = self._ranked(entries)
        for entry in entries:
            entry.is_best = bool(ranked) and entry is ranked[0]

    def _index_bytes(self, entries: list[_Entry], deleting: list[str]) -> bytes:
        document = {
            "format": _INDEX_FORMAT,
            "format_version": _INDEX_FORMAT_VERSION,
            "monitor": self.monitor,
            "mode": self.mode,
            "keep_best_k": self.keep_best_k,
            "keep_last_n": self.keep_last_n,
            "checkpoints": [entry.to_json() for entry in entries],
            "deleting": deleting,
        }
        return (json.dumps(document, indent=2, allow_nan=False) + "\n").encode("utf-8")

    def _relist(self, entry: _Entry) -> None:
        with self._lock:
            entries = sorted([*self._entries, entry], key=lambda row: row.sequence)
            self._mark_best(entries)
            try:
                self._write_index(entries, [])
            except (OSError, CheckpointError) as err:
                logger.warning("could not list %s again: %s", entry.file, err)
            self._entries = entries

    def _write_index(self, entries: list[_Entry], deleting: list[str]) -> None:
        data = self._index_bytes(entries, deleting)
        _write_atomically(
            self.index_path,
            lambda writer: writer.write(data),
            "checkpoint index",
            hash_during_fsync=False,
        )

    def _back_up(self, entry: _Entry, removed: list[_Entry]) -> None:
        """Copy a finished checkpoint and the manifest to the backup folder; a failure is
        logged, since the local checkpoint is sound."""
        backup = self.drive_backup_path
        assert backup is not None
        source = self.checkpoint_dir / entry.file
        try:
            backup.mkdir(parents=True, exist_ok=True)
            digest, _ = _write_atomically(
                backup / entry.file,
                functools.partial(_copy_file, source),
                "checkpoint backup",
                hash_during_fsync=False,
            )
            if digest != entry.sha256:
                msg = f"the copy's sha256 {digest} differs from the checkpoint's {entry.sha256}"
                raise CheckpointError(msg)
            for old in removed:
                _unlink(backup / old.file)
            with self._lock:
                present = [e for e in self._entries if (backup / e.file).is_file()]
                data = self._index_bytes(present, [])
            _write_atomically(
                backup / INDEX_NAME,
                lambda writer: writer.write(data),
                "checkpoint index backup",
                hash_during_fsync=False,
            )
        except (OSError, CheckpointError) as err:
            logger.warning(
                "backing up checkpoint %s to %s failed: %s; the local checkpoint is intact",
                source,
                backup,
                err,
            )

    # -- loading -----------------------------------------------------------------------------

    def _resolve(self, path: str | os.PathLike[str]) -> Path:
        text = os.fspath(path)
        if "\x00" in text:
            msg = f"checkpoint path {text!r} contains a NUL byte"
            raise CheckpointError(msg)
        file = Path(text)
        if not file.is_absolute() and len(file.parts) == 1 and not file.exists():
            if not _CHECKPOINT_NAME.match(file.name):
                msg = f"{text!r} is not a checkpoint name ({self._listing()})"
                raise CheckpointError(msg)
            file = self.checkpoint_dir / file
        if not file.is_file():
            msg = f"checkpoint {file} does not exist ({self._listing()})"
            raise CheckpointError(msg)
        return file

    def _listing(self) -> str:
        with self._lock:
            names = [entry.file for entry in self._entries]
        if not names:
            return f"{self.checkpoint_dir} holds none"
        return f"{self.checkpoint_dir} holds {', '.join(names)}"

    def _entry_for(self, file: Path) -> _Entry | None:
        try:
            inside = file.resolve().parent == self.checkpoint_dir.resolve()
        except OSError:
            return None
        if not inside:
            return None
        with self._lock:
            return next((entry for entry in self._entries if entry.file == file.name), None)

    def _read_verified(self, file: Path) -> dict[str, Any]:
        """Load ``file`` with ``weights_only=True`` while checking it on a helper thread (its
        sha256 when listed, its zip CRCs otherwise); the check's verdict comes first."""
        entry = self._entry_for(file)
        check: Callable[[], str | None]
        if entry is not None:
            check = functools.partial(self._verify_listed, file, entry, remember=False)
        else:
            check = functools.partial(_empty_or_crc_damage, file)
        load_error: Exception | None = None
        payload: Any = None
        with ThreadPoolExecutor(1, thread_name_prefix="treadle-checkpoint-verify") as pool:
            verdict = pool.submit(check)
            try:
                # weights_only passed explicitly: torch 2.13 lets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD
                # flip only the default (serialization.py, "can only override if callsite did
                # not explicitly set weights_only"); tests/test_checkpoints.py guards this
                payload = torch.load(file, map_location="cpu", weights_only=True)
            except Exception as err:  # torch raises many types for a bad file; all mean the same
                load_error = err
            damage = verdict.result()
        if damage is not None:
            msg = f"checkpoint {file} is damaged: {damage}"
            raise CheckpointError(msg) from load_error
        if load_error is not None:
            raise _load_error(file, load_error) from load_error
        _check_payload(file, payload)
        return dict(payload)

    def _verify_listed(self, file: Path, entry: _Entry, *, remember: bool) -> str | None:
        """What is wrong with a listed file (``None``: nothing). ``remember`` lets the next
        load of the unchanged file skip hashing it again."""
        try:
            stat = file.stat()
        except FileNotFoundError:
            return "the file is missing"
        fingerprint = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        key = str(file)
        if not remember and self._verified.pop(key, None) == fingerprint:
            return None
        if stat.st_size == 0:
            return f"it is empty (0 bytes; {entry.size_bytes} were written)"
        if stat.st_size < entry.size_bytes:
            return f"it is truncated: {stat.st_size} of the {entry.size_bytes} bytes written"
        if stat.st_size > entry.size_bytes:
            return f"it is {stat.st_size} bytes, longer than the {entry.size_bytes} written"
        digest = _sha256_file(file)
        if digest != entry.sha256:
            record = _crc_damage(file)
            where = f" ({record})" if record else ""
            return (
                f"its sha256 is {digest}, not the {entry.sha256} recorded when it was written: "
                f"its content changed (a flipped bit or a partial overwrite){where}"
            )
        if remember:
            self._verified[key] = fingerprint
        return None

    def _apply(
        self,
        file: Path,
        payload: dict[str, Any],
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        scheduler: Any,
        scaler: Any,
    ) -> None:
        parts: list[tuple[str, Any, str]] = [("model", model, "model_state_dict")]
        if optimizer is not None:
            parts.append(("optimizer", optimizer, "optimizer_state_dict"))
        if scheduler is not None:
            parts.append(("scheduler", scheduler, "scheduler_state_dict"))
        if scaler is not None:
            parts.append(("scaler", scaler, "scaler_state_dict"))
        for what, target, key in parts:
            state = payload.get(key)
            if state is None or (what == "scaler" and not state):
                if what == "optimizer":
                    msg = f"checkpoint {file} holds no optimizer state; load it without one"
                    raise CheckpointError(msg)
                logger.warning("checkpoint %s holds no %s state; %s left as is", file, what, what)
                continue
            try:
                target.load_state_dict(state)
            except (RuntimeError, ValueError, KeyError, TypeError) as err:
                msg = f"checkpoint {file} does not fit the {what}: {err}"
                raise CheckpointError(msg) from err


# -- files -------------------------------------------------------------------------------------


def _write_atomically(
    target: Path, write: Callable[[_FileWriter], object], what: str, *, hash_during_fsync: bool
) -> tuple[str, int]:
    """Write ``target`` through a temporary file in its folder: write, fsync, rename, fsync
    the folder. Returns the sha256 and size of what was written.

    With ``hash_during_fsync`` the bytes are hashed by reading them back (from the page cache)
    while the fsync waits on the disk, instead of on the writing path: a large checkpoint's
    hash then costs no time of its own on a machine whose disk is slower than sha256.

    :raises CheckpointError: the disk is full (the temporary file is removed), or another
        OS error stopped the write.
    """
    temp = target.with_name(
        f".{target.name}.{os.getpid()}-{_PROCESS_TOKEN}-{next(_temp_counter)}.tmp"
    )
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    writer = _FileWriter(-1, hashing=not hash_during_fsync)
    try:
        fd = os.open(temp, flags | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as err:
        raise _write_error(target, what, err, writer) from err
    try:
        try:
            writer = _FileWriter(fd, hashing=not hash_during_fsync)
            write(writer)
            if hash_during_fsync and writer.size >= _BACKGROUND_BYTES:
                with ThreadPoolExecutor(1, thread_name_prefix="treadle-checkpoint-fsync") as pool:
                    synced = pool.submit(os.fsync, fd)
                    digest = _sha256_fd(fd)
                    synced.result()
            else:
                os.fsync(fd)
                digest = _sha256_fd(fd) if hash_during_fsync else writer.hexdigest()
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException as err:
        _unlink(temp)
        if isinstance(err, Exception):
            raise _write_error(target, what, err, writer) from err
        raise
    _fsync_directory(target.parent)
    return digest, writer.size


def _write_error(target: Path, what: str, err: BaseException, writer: _FileWriter) -> BaseException:
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


def _torch_save(payload: dict[str, Any], writer: _FileWriter) -> None:
    torch.save(payload, writer)  # type: ignore[arg-type]  # a file object is what it takes


def _copy_file(source: Path, writer: _FileWriter) -> None:
    buffer = bytearray(_READ_CHUNK_BYTES)
    view = memoryview(buffer)
    with source.open("rb", buffering=0) as stream:
        while count := stream.readinto(buffer):
            writer.write(view[:count])


def _fsync_directory(folder: Path) -> None:
    if os.name != "posix":  # Windows cannot open a directory to fsync it
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        logger.warning("could not delete %s: %s", path, err)


def _sweep_temp_files(folder: Path) -> None:
    """Remove temporary files that a killed save left behind; a live writer's are kept."""
    for name in os.listdir(folder):
        match = _TEMP_NAME.match(name)
        if match is None:
            continue
        target = match["target"]
        if target != INDEX_NAME and not _CHECKPOINT_NAME.match(target):
            continue
        pid, token = int(match["pid"]), match["token"]
        if token == _PROCESS_TOKEN or (pid != os.getpid() and _pid_alive(pid)):
            continue
        logger.info("removing %s, left by an interrupted save", folder / name)
        _unlink(folder / name)


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


def _sha256_file(file: Path) -> str:
    fd = os.open(file, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        return _sha256_fd(fd)
    finally:
        os.close(fd)


def _sha256_fd(fd: int) -> str:
    """sha256 of the whole file open as ``fd``, read with ``pread`` (its offset untouched)."""
    digest = hashlib.sha256()
    buffer = bytearray(min(_READ_CHUNK_BYTES, max(os.fstat(fd).st_size, 1)))
    view = memoryview(buffer)
    offset = 0
    while count := os.preadv(fd, [buffer], offset):
        digest.update(view[:count])
        offset += count
    return digest.hexdigest()


def _empty_or_crc_damage(file: Path) -> str | None:
    """What is wrong with an unlisted file: empty, or a zip record failing its CRC-32."""
    if file.stat().st_size == 0:
        return "it is empty (0 bytes)"
    return _crc_damage(file)


def _crc_damage(file: Path) -> str | None:
    """The first zip record of ``file`` that fails its CRC-32; ``None`` when all pass or the
    file is no zip archive (torch's loader then says what it is)."""
    if not zipfile.is_zipfile(file):
        return None
    try:
        with zipfile.ZipFile(file) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"its zip structure is broken ({err})"
    if bad is None:
        return None
    return f"record {bad!r} fails its CRC-32 check: its bytes changed after it was written"


def _structural_damage(file: Path) -> str | None:
    """Why ``file`` cannot be a torch checkpoint at all; ``None`` for a complete zip archive
    (or a legacy pickle-format file), whose contents torch's loader then judges."""
    try:
        size = file.stat().st_size
        with file.open("rb") as stream:
            head = stream.read(4)
    except OSError as err:
        return f"it cannot be read ({err})"
    if size == 0:
        return "it is empty (0 bytes)"
    if head.startswith(b"\x80"):  # torch's legacy format opens with a pickled magic number
        return None
    if head != b"PK\x03\x04":
        return f"it is not a torch checkpoint archive (it starts with {head!r})"
    if not zipfile.is_zipfile(file):
        return f"it is truncated: a zip archive without its closing directory ({size} bytes)"
    return None


_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _load_error(file: Path, err: BaseException) -> CheckpointError:
    """``err`` from ``torch.load(weights_only=True)`` as an error naming the file and why."""
    text = str(err)
    first_line = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    damage = _structural_damage(file)
    if damage is not None:
        msg = f"checkpoint {file} cannot be loaded: {damage} (torch: {first_line})"
        return CheckpointError(msg)
    if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in text:
        found = _UNSUPPORTED_GLOBAL.search(text)
        what = f" (such as {found.group(1)})" if found else ""
        msg = (
            f"checkpoint {file} carries arbitrary pickled objects{what} and is refused: "
            "treadle loads checkpoints with torch.load(weights_only=True) so that a file cannot "
            "run code. If you made the file and trust it, load it with weights_only=False and "
            "save its state again as plain values (str, int, float, lists, dicts, tensors)."
        )
        return CheckpointError(msg)
    if "TorchScript" in text:
        msg = f"checkpoint {file} is a TorchScript archive, not a checkpoint: use torch.jit.load"
        return CheckpointError(msg)
    msg = f"checkpoint {file} cannot be loaded: torch cannot read it ({first_line})"
    return CheckpointError(msg)


def _check_payload(file: Path, payload: Any) -> None:
    if not isinstance(payload, dict):
        msg = (
            f"checkpoint {file} holds a {type(payload).__name__}, not a treadle checkpoint "
            "(a dict with 'model_state_dict')"
        )
        raise CheckpointError(msg)
    if "model_state_dict" not in payload:
        if payload and all(isinstance(value, torch.Tensor) for value in payload.values()):
            msg = (
                f"checkpoint {file} is a bare state_dict, not a treadle checkpoint: load it "
                "with model.load_state_dict(torch.load(path, weights_only=True))"
            )
        else:
            msg = f"checkpoint {file} is not a treadle checkpoint: it holds no 'model_state_dict'"
        raise CheckpointError(msg)
    version = payload.get("format_version", CHECKPOINT_FORMAT_VERSION)
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        msg = (
            f"checkpoint {file} has format version {version!r}, newer than this treadle reads "
            f"({CHECKPOINT_FORMAT_VERSION}): upgrade treadle"
        )
        raise CheckpointError(msg)


# -- values ------------------------------------------------------------------------------------


def _check_count(name: str, value: object, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        msg = f"{name} must be an int >= {minimum}, got {value!r}"
        raise ValueError(msg)


def _folder(name: str, value: str | os.PathLike[str]) -> Path:
    text = os.fspath(value)
    if not text or "\x00" in text:
        msg = f"{name} {text!r} is not a usable folder path"
        raise ValueError(msg)
    folder = Path(text)
    if folder.exists() and not folder.is_dir():
        msg = f"{name} {folder} is a file, not a folder"
        raise ValueError(msg)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _clean_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    clean: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str):
            msg = f"metric names must be strings, got {name!r}"
            raise ValueError(msg)
        number = value
        if isinstance(number, torch.Tensor):
            if number.numel() != 1:
                msg = f"metric {name!r} is a tensor of shape {tuple(number.shape)}, not a number"
                raise ValueError(msg)
            number = number.item()
        try:
            clean[name] = float(number)
        except (TypeError, ValueError) as err:
            msg = f"metric {name!r} is {value!r}, not a number"
            raise ValueError(msg) from err
    return clean


def _metric_to_json(value: float) -> float | str | None:
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _metric_from_json(value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        msg = f"metric value {value!r} is not a number"
        raise ValueError(msg)
    return float(value)


def _check_loadable(value: Any, where: str) -> None:
    """Refuse, before anything is written, a value ``torch.load(weights_only=True)`` would
    refuse on load. Exact types: ``np.float64`` subclasses float and is still refused."""
    kind = type(value)
    if kind in _LEAF_TYPES or isinstance(value, (torch.Tensor, *_TORCH_LEAF_TYPES)):
        return
    if kind in (dict, OrderedDict):
        for key, item in value.items():
            if type(key) not in _LEAF_TYPES and type(key) is not tuple:
                msg = f"{where} has a key of type {type(key).__name__}: {key!r}"
                raise TypeError(msg)
            _check_loadable(item, f"{where}[{key!r}]")
        return
    if kind in _SEQUENCE_KEYS:
        for index, item in enumerate(value):
            _check_loadable(item, f"{where}[{index}]")
        return
    msg = (
        f"{where} is a {kind.__module__}.{kind.__qualname__}, which torch.load(weights_only=True) "
        "refuses: store plain values (str, int, float, bool, None, lists, dicts, tensors), "
        "such as str(path) or float(value)"
    )
    raise TypeError(msg)


def _copy_to_cpu(value: Any, memo: dict[int, Any]) -> Any:
    """A copy of ``value`` whose tensors are fresh CPU tensors, so training can go on while
    the copy is written. Tensors seen twice (tied weights) are copied once."""
    if isinstance(value, torch.Tensor):
        found = memo.get(id(value))
        if found is None:
            found = memo[id(value)] = value.detach().to("cpu", copy=True)
        return found
    kind = type(value)
    if kind in (dict, OrderedDict):
        return kind((key, _copy_to_cpu(item, memo)) for key, item in value.items())
    if kind in _SEQUENCE_KEYS:
        return kind(_copy_to_cpu(item, memo) for item in value)
    return value


def _tensor_bytes(value: Any) -> int:
    """Bytes held by the tensors in a nested state (each tensor counted once)."""
    seen: set[int] = set()
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            if id(item) not in seen:
                seen.add(id(item))
                total += item.nelement() * item.element_size()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total
