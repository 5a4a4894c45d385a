"""Bringing a checkpoint folder's manifest and files into agreement when a manager opens it
(RELIABILITY C1): stray temporary files swept, interrupted deletions finished, listed files
that are gone dropped, unlisted checkpoint files listed, a damaged manifest rebuilt."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import attrs

from treadle.engine.checkpoints.digests import HashKind
from treadle.engine.checkpoints.errors import CheckpointError
from treadle.engine.checkpoints.files import sweep_temp_files, unlink
from treadle.engine.checkpoints.loading import inspect_unlisted
from treadle.engine.checkpoints.manifest import (
    MAX_MANIFEST_BYTES,
    Entry,
    Manifest,
    ManifestDamage,
    decode_manifest,
)
from treadle.engine.checkpoints.names import CHECKPOINT_NAME, INDEX_NAME
from treadle.engine.checkpoints.retention import RetentionPolicy

__all__ = ["Recovered", "read_manifest", "recover"]

logger = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class Recovered:
    """The folder's checkpoints as opening found them.

    :ivar entries: the checkpoints, oldest first, renumbered, ``is_best`` set.
    :ivar unreadable: checkpoint files that could not be listed, with the damage.
    :ivar needs_rewrite: the manifest on disk does not say this.
    :ivar run_id: the run the folder belongs to (``None``: a folder written without one).
    """

    entries: list[Entry]
    unreadable: dict[str, str]
    needs_rewrite: bool
    run_id: str | None = None


def recover(
    folder: Path,
    backup: Path | None,
    policy: RetentionPolicy,
    hashing: HashKind,
    run_id: str | None = None,
) -> Recovered:
    """Sweep stray temporary files (in ``folder`` and ``backup``), read the manifest
    (rebuilding it from the files when it is missing or damaged), finish interrupted
    deletions, and list unlisted checkpoint files of the folder's run (with digests of the
    kind ``hashing``).

    :param run_id: the run opening the folder; ``None`` takes the folder's own.
    :raises CheckpointError: the folder belongs to another run than ``run_id``.
    """
    for place in (folder, backup):
        if place is not None and place.is_dir():
            sweep_temp_files(place)
    manifest = read_manifest(folder / INDEX_NAME)
    needs_rewrite = manifest is None or bool(manifest.deleting)
    if manifest is not None and None not in (run_id, manifest.run_id) and manifest.run_id != run_id:
        msg = (
            f"{folder} holds the checkpoints of run {manifest.run_id}, not of run {run_id}: a "
            "run writes, ranks and deletes checkpoints only in its own folder"
        )
        raise CheckpointError(msg)
    if manifest is not None and run_id is None:
        run_id = manifest.run_id
    elif manifest is not None and manifest.run_id != run_id:
        needs_rewrite = True  # the folder's run gets its id into the manifest
    if manifest is None:
        manifest = Manifest(entries=[], deleting=[])
    elif (
        manifest.header.get("monitor") != policy.monitor
        or manifest.header.get("mode") != policy.mode
    ):
        logger.info(
            "%s ranked checkpoints by %s (%s); now ranking by %s (%s)",
            folder / INDEX_NAME,
            manifest.header.get("monitor"),
            manifest.header.get("mode"),
            policy.monitor,
            policy.mode,
        )
    listed = {entry.file for entry in manifest.entries}
    for name in manifest.deleting:
        if name not in listed:
            unlink(folder / name)
    present = [entry for entry in manifest.entries if (folder / entry.file).is_file()]
    for entry in manifest.entries:
        if entry not in present:
            logger.warning(
                "checkpoint %s is listed in %s but missing; dropping it from the index",
                folder / entry.file,
                folder / INDEX_NAME,
            )
            needs_rewrite = True
    unreadable: dict[str, str] = {}
    known = {entry.file for entry in present} | set(manifest.deleting)
    adopted = _adopt_unlisted(folder, known, hashing, unreadable, run_id)
    entries = sorted(present, key=lambda entry: entry.sequence)
    if adopted:  # merged by save time; the manifest's order stands otherwise
        needs_rewrite = True
        entries = sorted(
            entries + adopted, key=lambda entry: (entry.timestamp, entry.epoch, entry.step)
        )
    for sequence, entry in enumerate(entries):
        entry.sequence = sequence
    policy.mark_best(entries)
    return Recovered(
        entries=entries, unreadable=unreadable, needs_rewrite=needs_rewrite, run_id=run_id
    )


def read_manifest(path: Path) -> Manifest | None:
    """The manifest at ``path``; ``None`` when it is missing or damaged. A damaged one,
    whatever it holds, is moved aside to ``checkpoints.json.corrupt`` with a warning."""
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as err:
        logger.warning("cannot read checkpoint index %s (%s); rebuilding it", path, err)
        return None
    try:
        return decode_manifest(raw)
    except ManifestDamage as err:
        corrupt = path.with_name(INDEX_NAME + ".corrupt")
        logger.warning(
            "checkpoint index %s is corrupt (%s); kept as %s and rebuilt from the files",
            path,
            err,
            corrupt.name,
        )
        try:
            os.replace(path, corrupt)
        except OSError as move_error:
            logger.warning("could not move the corrupt index aside: %s", move_error)
        return None


def _adopt_unlisted(
    folder: Path,
    listed: set[str],
    hashing: HashKind,
    unreadable: dict[str, str],
    run_id: str | None,
) -> list[Entry]:
    """Entries for checkpoint files the manifest does not list (a lost manifest, or a
    process killed between renaming a checkpoint into place and listing it). A file of
    another run is neither listed nor deleted."""
    adopted: list[Entry] = []
    for file in sorted(folder.iterdir()):
        if file.name in listed or not CHECKPOINT_NAME.match(file.name) or not file.is_file():
            continue
        try:
            entry = inspect_unlisted(file, hashing)
            if None not in (run_id, entry.run_id) and entry.run_id != run_id:
                msg = f"it belongs to run {entry.run_id}, not to this folder's run {run_id}"
                raise CheckpointError(msg)
        except CheckpointError as err:
            unreadable[file.name] = str(err)
            logger.warning("not listing checkpoint %s: %s", file, err)
            continue
        adopted.append(entry)
        logger.info("listed checkpoint %s, which the index lacked", file)
    return adopted
