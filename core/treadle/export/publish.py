"""Publishing a finished bundle folder atomically, durably, and never over another."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from treadle.export.errors import ExportError

__all__ = ["MAX_NAME_LENGTH", "publish", "safe_name", "sync_tree"]

logger = logging.getLogger(__name__)

#: Longest bundle name: far below every file system's 255 bytes, with room for ``_999``.
MAX_NAME_LENGTH = 100
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
_DIGEST_CHARS = 12


def safe_name(text: str) -> str:
    """``text`` as one folder name that stays where it is put (RELIABILITY X1).

    Every run of characters other than ASCII letters, digits, ``.``, ``_`` and ``-`` (``/``,
    ``\\``, NUL, spaces, newlines) becomes one ``-``; leading and trailing ``.``, ``_`` and
    ``-`` go (no hidden folder, no ``..``, nothing that reads as an option); a name longer
    than :data:`MAX_NAME_LENGTH` is cut and ends with a digest of the whole, so two long names
    stay apart; nothing left gives ``model``.
    """
    name = _UNSAFE_RUN.sub("-", text).strip("._-")
    if len(name) > MAX_NAME_LENGTH:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        name = (
            f"{name[: MAX_NAME_LENGTH - _DIGEST_CHARS - 1].rstrip('._-')}-{digest[:_DIGEST_CHARS]}"
        )
    return name or "model"


def sync_tree(root: Path) -> None:
    """fsync every file and folder under ``root``: the rename must not outrun the data."""
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                os.fsync(handle.fileno())
        _sync_directory(Path(folder))


def _sync_directory(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def publish(staging: Path, root: Path, stem: str) -> Path:
    """Rename ``staging`` to ``root/<stem>``, or ``<stem>_2``, ``_3``... when taken, without
    ever replacing anything; ``stem`` is made safe with :func:`safe_name` first.

    ``os.mkdir`` claims the name atomically (two writers cannot both get it); the rename then
    replaces only the empty folder this call just made.
    """
    stem = safe_name(stem)
    for attempt in range(1, 1000):
        target = root / (stem if attempt == 1 else f"{stem}_{attempt}")
        try:
            target.mkdir()
        except FileExistsError:
            continue
        os.rename(staging, target)
        _sync_directory(root)
        if attempt > 1:
            logger.warning(
                "%s already exists (an earlier export under that name); this bundle is %s",
                root / stem,
                target,
            )
        return target
    msg = f"more than 999 bundles named {stem} in {root}; remove some or use another output_dir"
    raise ExportError(msg)
