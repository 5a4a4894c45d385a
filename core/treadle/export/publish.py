"""Publishing a finished bundle folder atomically, durably, and never over another."""

from __future__ import annotations

import os
from pathlib import Path

from treadle.export.errors import ExportError

__all__ = ["publish", "sync_tree"]


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
    ever replacing anything.

    ``os.mkdir`` claims the name atomically (two writers cannot both get it); the rename then
    replaces only the empty folder this call just made.
    """
    for attempt in range(1, 1000):
        target = root / (stem if attempt == 1 else f"{stem}_{attempt}")
        try:
            target.mkdir()
        except FileExistsError:
            continue
        os.rename(staging, target)
        _sync_directory(root)
        return target
    msg = f"more than 999 bundles named {stem} in {root}; remove some or use another output_dir"
    raise ExportError(msg)
