"""The kept checkpoints of one folder, listed in its manifest and kept in agreement with the
files: writing a checkpoint and listing it, retention's deletions, the backup copy."""

from __future__ import annotations

import functools
import logging
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import torch

from treadle.engine.checkpoints import files
from treadle.engine.checkpoints.digests import NEW_DIGESTS
from treadle.engine.checkpoints.errors import CheckpointError
from treadle.engine.checkpoints.manifest import Entry, encode_manifest
from treadle.engine.checkpoints.names import INDEX_NAME
from treadle.engine.checkpoints.recovery import recover
from treadle.engine.checkpoints.retention import RetentionPolicy

__all__ = ["CheckpointFolder", "SaveJob"]

logger = logging.getLogger(__name__)

#: Below this, deleting on a thread costs more than it saves.
_BACKGROUND_BYTES = 1 << 25
_MIB = float(1 << 20)


@attrs.frozen
class SaveJob:
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


def _torch_save(payload: dict[str, Any], writer: files.FileWriter) -> None:
    torch.save(payload, writer)  # type: ignore[arg-type]  # a file object is what it takes


class CheckpointFolder:
    """The checkpoints a folder keeps and its manifest. Opening it brings the manifest into
    agreement with the files (:func:`~treadle.engine.checkpoints.recovery.recover`).

    :param path: the checkpoint folder (it exists).
    :param backup: a folder to copy each finished checkpoint and the manifest to, or ``None``.
    :param policy: how checkpoints are ranked and kept.
    :param run_id: the run writing here; ``None`` takes the folder's own (if any).
    :raises CheckpointError: the folder belongs to another run than ``run_id``.
    """

    def __init__(
        self, path: Path, backup: Path | None, policy: RetentionPolicy, run_id: str | None = None
    ) -> None:
        self.path = path
        self.backup = backup
        self.policy = policy
        #: guards ``entries`` and the manifest's writes: an asynchronous save commits on its
        #: own thread while the caller reads
        self.lock = threading.RLock()
        self._deleting: threading.Thread | None = None
        #: the files the manifest on disk lists as being deleted
        self._listed_deleting: list[str] = []
        recovered = recover(path, backup, policy, NEW_DIGESTS, run_id)
        #: the run the folder's checkpoints belong to
        self.run_id = recovered.run_id
        #: the kept checkpoints, oldest first
        self.entries: list[Entry] = recovered.entries
        #: checkpoint files found on opening that could not be listed, with the damage
        self.unreadable = recovered.unreadable
        if recovered.needs_rewrite:
            try:
                self._write_index(self.entries, [])
            except (OSError, CheckpointError) as err:  # a read-only folder can still be read
                logger.warning("could not rewrite %s: %s", self.index_path, err)

    @property
    def index_path(self) -> Path:
        """The manifest, ``checkpoints.json``."""
        return self.path / INDEX_NAME

    def listed(self, name: str) -> Entry | None:
        """The kept checkpoint named ``name``."""
        with self.lock:
            return next((entry for entry in self.entries if entry.file == name), None)

    def would_be_best(self, name: str, metrics: dict[str, float]) -> bool:
        """Whether a save of ``name`` with ``metrics`` will rank first once committed."""
        with self.lock:
            others = [entry for entry in self.entries if entry.file != name]
            return self.policy.would_be_best(metrics, others)

    def join_deletions(self) -> None:
        """Wait for retention's deletions on the background thread, if any."""
        thread, self._deleting = self._deleting, None
        if thread is not None:
            thread.join()

    def _delete(self, names: list[str]) -> None:
        """Delete what retention dropped, large files off the caller's path: freeing a 1 GB
        file's blocks takes most of a second on some disks. The manifest already lists them
        as deleting, so a kill before they go leaves nothing stale (the next start deletes
        them)."""
        self.join_deletions()
        paths = [self.path / name for name in names]
        sizes = [path.stat().st_size for path in paths if path.is_file()]
        if sum(sizes) < _BACKGROUND_BYTES:
            for path in paths:
                files.unlink(path)
            return

        def delete() -> None:
            for path in paths:
                files.unlink(path)

        self._deleting = threading.Thread(target=delete, name="treadle-checkpoint-deleter")
        self._deleting.start()

    def clear_finished_deletions(self) -> None:
        """Rewrite the manifest without the deletions that are done."""
        with self.lock:
            if not self._listed_deleting:
                return
            left = [name for name in self._listed_deleting if (self.path / name).exists()]
            if left == self._listed_deleting:
                return
            try:
                self._write_index(self.entries, left)
            except (OSError, CheckpointError) as err:
                logger.warning("could not rewrite %s: %s", self.index_path, err)

    def commit(self, job: SaveJob) -> Entry:
        """Write ``job`` atomically, list it in the manifest, apply retention (deleting what
        it drops, large files on a thread) and back it up.

        :raises CheckpointError: the write failed (a full disk named as such); the manifest
            and older checkpoints are as they were.
        """
        started = time.perf_counter()
        target = self.path / job.name
        self.join_deletions()  # the name may be one being deleted
        with self.lock:
            replaced = next((entry for entry in self.entries if entry.file == job.name), None)
            if replaced is not None:
                # unlist before replacing, so a kill mid-replace leaves no stale digest
                others = [entry for entry in self.entries if entry.file != job.name]
                self._write_index(others, [])
                self.entries = others
            sequence = 1 + max((entry.sequence for entry in self.entries), default=-1)
        replaced_inode = files.inode(target) if replaced is not None else None
        try:
            digest, size = files.write_atomically(
                target,
                functools.partial(_torch_save, job.payload),
                "checkpoint",
                hashing=NEW_DIGESTS,
            )
        except BaseException:
            if replaced is not None and files.inode(target) == replaced_inode:
                self._relist(replaced)  # the failed save left the old file as it was
            raise
        assert digest is not None  # hashing was asked for
        entry = Entry(
            file=job.name,
            epoch=job.epoch,
            step=job.step,
            mid_epoch=job.mid_epoch,
            sequence=sequence,
            digest=digest,
            size_bytes=size,
            metrics=job.metrics,
            timestamp=job.timestamp,
            model_size_mb=job.model_size_mb,
            optimizer_state_size_mb=job.optimizer_state_size_mb,
            run_id=self.run_id,
        )
        with self.lock:
            kept, removed = self.policy.retain([*self.entries, entry])
            self._write_index(kept, [old.file for old in removed])
            self.entries = kept
        self._delete([old.file for old in removed])
        seconds = time.perf_counter() - started
        logger.info("saved checkpoint %s (%.1f MiB) in %.2f s", target, size / _MIB, seconds)
        if entry not in kept:
            logger.warning(
                "checkpoint %s was deleted at once: it is not among the last %d and its %s "
                "(%s) is not among the best %d",
                target,
                self.policy.keep_last_n,
                self.policy.monitor,
                entry.metrics.get(self.policy.monitor, "missing"),
                self.policy.keep_best_k,
            )
        if self.backup is not None:
            self._back_up(entry, removed)
        return entry

    def _relist(self, entry: Entry) -> None:
        with self.lock:
            entries = sorted([*self.entries, entry], key=lambda row: row.sequence)
            self.policy.mark_best(entries)
            try:
                self._write_index(entries, [])
            except (OSError, CheckpointError) as err:
                logger.warning("could not list %s again: %s", entry.file, err)
            self.entries = entries

    def _write_index(self, entries: list[Entry], deleting: list[str]) -> None:
        data = encode_manifest(entries, deleting, self.policy.header(), self.run_id)
        files.write_atomically(
            self.index_path, lambda writer: writer.write(data), "checkpoint index"
        )
        self._listed_deleting = list(deleting)

    def _back_up(self, entry: Entry, removed: list[Entry]) -> None:
        """Copy a finished checkpoint and the manifest to the backup folder; a failure is
        logged, since the local checkpoint is sound."""
        backup = self.backup
        assert backup is not None
        source = self.path / entry.file
        try:
            backup.mkdir(parents=True, exist_ok=True)
            digest, _ = files.write_atomically(
                backup / entry.file,
                functools.partial(files.copy_file, source),
                "checkpoint backup",
                hashing=entry.digest.kind,
            )
            if digest != entry.digest:
                found = digest.hex if digest is not None else None
                msg = f"the copy's digest {found} differs from the checkpoint's {entry.digest.hex}"
                raise CheckpointError(msg)
            for old in removed:
                files.unlink(backup / old.file)
            with self.lock:
                present = [e for e in self.entries if (backup / e.file).is_file()]
                data = encode_manifest(present, [], self.policy.header(), self.run_id)
            files.write_atomically(
                backup / INDEX_NAME, lambda writer: writer.write(data), "checkpoint index backup"
            )
        except (OSError, CheckpointError) as err:
            logger.warning(
                "backing up checkpoint %s to %s failed: %s; the local checkpoint is intact",
                source,
                backup,
                err,
            )
