"""The one error a checkpoint folder raises for what it cannot write, read or trust."""

from __future__ import annotations

from treadle.errors import TreadleError

__all__ = ["CheckpointError"]


class CheckpointError(TreadleError):
    """A checkpoint cannot be written, read or trusted; the message names the file and what is
    wrong with it (damaged, not a checkpoint, carrying pickled objects, disk full)."""
