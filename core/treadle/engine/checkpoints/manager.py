""":class:`CheckpointManager`: saves, lists, prunes and loads the checkpoints of one folder,
delegating file writing, the manifest, retention and verification to its sibling modules."""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import torch

from treadle.engine.checkpoints.errors import CheckpointError
from treadle.engine.checkpoints.folder import CheckpointFolder, SaveJob
from treadle.engine.checkpoints.loading import listed_damage, read_verified
from treadle.engine.checkpoints.manifest import Entry
from treadle.engine.checkpoints.metadata import CheckpointMetadata
from treadle.engine.checkpoints.names import CHECKPOINT_NAME, checkpoint_name
from treadle.engine.checkpoints.retention import RetentionPolicy
from treadle.engine.checkpoints.state import (
    apply_state,
    build_payload,
    check_loadable,
    clean_metrics,
    copy_to_cpu,
    tensor_mib,
)
from treadle.optional import require

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CheckpointManager"]

logger = logging.getLogger(__name__)

_MIB = float(1 << 20)


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
    :param run_id: the run whose checkpoints these are: recorded in the manifest and in every
        checkpoint, and refused for a folder that belongs to another run. ``None`` (the
        default) continues the folder's own run, if it has one. The Trainer passes its run's.
    :raises ValueError: an argument is out of range, or the folder is a file.
    :raises CheckpointError: the folder belongs to another run than ``run_id``.
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
        *,
        run_id: str | None = None,
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
        if run_id is not None and (not isinstance(run_id, str) or not 0 < len(run_id) <= 64):
            msg = f"run_id must be a string of 1 to 64 characters, got {run_id!r}"
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
        self._policy = RetentionPolicy(
            monitor=monitor, mode=mode, keep_best_k=keep_best_k, keep_last_n=keep_last_n
        )
        self._folder = CheckpointFolder(
            self.checkpoint_dir, self.drive_backup_path, self._policy, run_id
        )
        #: path -> (inode, size, mtime, ctime) of a file whose digest was just checked; one use.
        self._verified: dict[str, tuple[int, int, int, int]] = {}
        self._pending: threading.Thread | None = None
        self._pending_error: BaseException | None = None

    # -- public API --------------------------------------------------------------------------

    @property
    def run_id(self) -> str | None:
        """The run this folder's checkpoints belong to (``None``: a folder without one)."""
        return self._folder.run_id

    @property
    def index_path(self) -> Path:
        """The manifest: every kept checkpoint with its digest, size, epoch, step and metrics."""
        path: Path = self._folder.index_path
        return path

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
        self._join_pending()
        self._raise_pending_error()
        _check_count("epoch", epoch, minimum=0)
        _check_count("global_step", global_step, minimum=0)
        clean = clean_metrics(metrics)
        state = dict(trainer_state) if trainer_state is not None else None
        mid_epoch = state is not None and state.get("epoch_complete") is False
        name = checkpoint_name(epoch, global_step if mid_epoch else None)
        timestamp = datetime.now(UTC).isoformat(timespec="microseconds")
        payload = build_payload(
            epoch=epoch,
            global_step=global_step,
            mid_epoch=mid_epoch,
            timestamp=timestamp,
            metrics=clean,
            monitor=self.monitor,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            trainer_state=state,
            metadata=dict(metadata or {}),
            run_id=self.run_id,
        )
        check_loadable(payload, "checkpoint")
        if self.async_save:
            payload = copy_to_cpu(payload, {})
        job = SaveJob(
            name=name,
            payload=payload,
            epoch=epoch,
            step=global_step,
            mid_epoch=mid_epoch,
            metrics=clean,
            timestamp=timestamp,
            model_size_mb=tensor_mib(payload["model_state_dict"]),
            optimizer_state_size_mb=tensor_mib(payload["optimizer_state_dict"]),
        )
        if self.async_save:
            is_best = self._folder.would_be_best(name, clean)
            thread = threading.Thread(
                target=self._write_in_background, args=(job,), name="treadle-checkpoint-writer"
            )
            self._pending = thread
            thread.start()
        else:
            is_best = self._folder.commit(job).is_best
        return CheckpointMetadata(
            path=str(self.checkpoint_dir / name),
            epoch=epoch,
            metrics=dict(clean),
            is_best=is_best,
            timestamp=timestamp,
            model_size_mb=job.model_size_mb,
            optimizer_state_size_mb=job.optimizer_state_size_mb,
            global_step=global_step,
            trainer_state=state,
            metadata=dict(payload["metadata"]),
            rng_state=payload["rng_state"],
            run_id=self.run_id,
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

        A file listed in the manifest must match its recorded size and digest; any other file
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
        listed = self._entry_for(file)
        # latest_valid_checkpoint() hashed it a moment ago: unchanged since, it is not again
        checked = listed is not None and self._verified.pop(str(file), None) == _fingerprint(file)
        payload = read_verified(file, listed, checked=checked)
        apply_state(file, payload, model, optimizer, scheduler, scaler)
        state = payload.get("trainer_state")
        metadata = payload.get("metadata")
        run_id = payload.get("run_id")
        logger.info("loaded checkpoint %s", file)
        return CheckpointMetadata(
            path=str(file),
            epoch=int(payload.get("epoch", -1)),
            metrics=clean_metrics(payload.get("metrics") or {}),
            is_best=listed.is_best if listed is not None else False,
            timestamp=str(payload.get("timestamp", "")),
            model_size_mb=tensor_mib(payload.get("model_state_dict")),
            optimizer_state_size_mb=tensor_mib(payload.get("optimizer_state_dict")),
            global_step=int(payload.get("global_step", 0) or 0),
            trainer_state=dict(state) if isinstance(state, dict) else None,
            metadata=dict(metadata) if isinstance(metadata, dict) else {},
            rng_state=payload.get("rng_state"),
            run_id=run_id if isinstance(run_id, str) else None,
        )

    def latest_valid_checkpoint(self) -> Path | None:
        """The newest checkpoint whose size and digest match the manifest, or ``None``.

        Each damaged or missing checkpoint passed over is named in a warning.
        """
        self._join_pending()
        with self._folder.lock:
            candidates = sorted(self._folder.entries, key=lambda e: e.sequence, reverse=True)
        for name, reason in self._folder.unreadable.items():
            logger.warning("skipping checkpoint %s: %s", self.checkpoint_dir / name, reason)
        for entry in candidates:
            file = self.checkpoint_dir / entry.file
            damage = listed_damage(file, entry)
            if damage is None:
                fingerprint = _fingerprint(file)
                if fingerprint is not None:
                    self._verified[str(file)] = fingerprint
                return file
            logger.warning("skipping damaged checkpoint %s: %s", file, damage)
        return None

    def get_best_checkpoint(self) -> str | None:
        """Path of the best kept checkpoint by ``monitor``; ``None`` when none has a finite
        value. Ties go to the earlier checkpoint."""
        self._join_pending()
        with self._folder.lock:
            ranked = self._policy.ranked(self._folder.entries)
        return str(self.checkpoint_dir / ranked[0].file) if ranked else None

    def get_checkpoint_history(self) -> pd.DataFrame:
        """The kept checkpoints, oldest first: ``epoch``, ``step``, one column per metric,
        ``is_best``, ``path``, ``timestamp`` and ``size_mb`` (file size, MiB)."""
        require("pandas", extra="pandas", feature="CheckpointManager.get_checkpoint_history")
        import pandas as pd

        self._join_pending()
        with self._folder.lock:
            entries = sorted(self._folder.entries, key=lambda entry: entry.sequence)
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
        """Wait for an asynchronous save in flight and for the deletions of the last save;
        once those files are gone, the manifest stops listing them as being deleted.

        :raises BaseException: that save's error (once), with a note naming the save.
        """
        self._join_pending()
        self._folder.clear_finished_deletions()
        self._raise_pending_error()

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

    # -- background work ---------------------------------------------------------------------

    def _write_in_background(self, job: SaveJob) -> None:
        try:
            self._folder.commit(job)
        except BaseException as err:
            err.add_note(
                f"raised by the asynchronous save of {self.checkpoint_dir / job.name}, "
                "surfaced at the next save_checkpoint() or close()"
            )
            self._pending_error = err

    def _raise_pending_error(self) -> None:
        error, self._pending_error = self._pending_error, None
        if error is not None:
            raise error

    def _join_pending(self) -> None:
        """Wait for the save in flight and for the deletions of the last save."""
        thread, self._pending = self._pending, None
        if thread is not None:
            thread.join()
        self._folder.join_deletions()

    # -- loading -----------------------------------------------------------------------------

    def _resolve(self, path: str | os.PathLike[str]) -> Path:
        text = os.fspath(path)
        if "\x00" in text:
            msg = f"checkpoint path {text!r} contains a NUL byte"
            raise CheckpointError(msg)
        file = Path(text)
        if not file.is_absolute() and len(file.parts) == 1 and not _is_file(file):
            if not CHECKPOINT_NAME.match(file.name):
                msg = f"{text!r} is not a checkpoint name ({self._listing()})"
                raise CheckpointError(msg)
            file = self.checkpoint_dir / file
        if not _is_file(file):
            msg = f"checkpoint {file} does not exist ({self._listing()})"
            raise CheckpointError(msg)
        return file

    def _listing(self) -> str:
        with self._folder.lock:
            names = [entry.file for entry in self._folder.entries]
        if not names:
            return f"{self.checkpoint_dir} holds none"
        return f"{self.checkpoint_dir} holds {', '.join(names)}"

    def _entry_for(self, file: Path) -> Entry | None:
        try:
            inside = file.resolve().parent == self.checkpoint_dir.resolve()
        except OSError:
            return None
        if not inside:
            return None
        return self._folder.listed(file.name)


def _fingerprint(file: Path) -> tuple[int, int, int, int] | None:
    try:
        stat = file.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


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


def _is_file(path: Path) -> bool:
    """``path.is_file()``, false for a path the file system refuses to look up (a name over
    its length limit raises ENAMETOOLONG rather than answering)."""
    try:
        return path.is_file()
    except OSError:
        return False
