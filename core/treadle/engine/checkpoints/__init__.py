"""Checkpoints: atomic saves listed in a manifest of digests, best-k and last-n retention,
verified weights-only loads, a backup folder and asynchronous writing.

A save writes a temporary file beside its target, fsyncs it, renames it into place and fsyncs
the folder; only then is the manifest (``checkpoints.json``, written the same way) updated and
are the checkpoints retention no longer wants deleted. A process killed at any point leaves the
last finished checkpoint loadable and, at most, a stray temporary file that the next
:class:`CheckpointManager` on the folder removes. Which checkpoints are best lives in the
manifest, never in a file name.

The modules, one job each: :mod:`~.manager` (the manager), :mod:`~.folder` (a folder's kept
checkpoints and their manifest, in agreement), :mod:`~.files` (atomic writing),
:mod:`~.digests` (block digests on helper threads), :mod:`~.manifest` (the manifest's format,
read strictly), :mod:`~.recovery` (a folder's files and manifest brought into agreement on
opening), :mod:`~.retention` (best k and last n), :mod:`~.loading` (verified loads),
:mod:`~.diagnosis` (what is wrong with a damaged file), :mod:`~.state` (the checkpoint dict).
"""

from __future__ import annotations

from treadle.engine.checkpoints.errors import CheckpointError
from treadle.engine.checkpoints.manager import CheckpointManager
from treadle.engine.checkpoints.metadata import CheckpointMetadata
from treadle.engine.checkpoints.names import INDEX_NAME
from treadle.engine.checkpoints.state import CHECKPOINT_FORMAT_VERSION

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "INDEX_NAME",
    "CheckpointError",
    "CheckpointManager",
    "CheckpointMetadata",
]
