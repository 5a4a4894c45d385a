"""The error a distributed run raises when it cannot go on."""

from __future__ import annotations

from treadle.errors import TreadleError

__all__ = ["DistributedError"]


class DistributedError(TreadleError, RuntimeError):
    """A distributed run cannot go on: another rank failed (the message gives its error), or
    the ranks disagree about their data."""
