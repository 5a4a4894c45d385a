"""The exception hierarchy: one root, one subclass per area, each also a builtin where it fits."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "JobError",
    "MissingDependencyError",
    "PluginConflictError",
    "PluginError",
    "PluginLoadError",
    "RegistrationError",
    "StorageError",
    "TreadleError",
    "UnknownNameError",
]


class TreadleError(Exception):
    """Root of every error treadle raises on purpose."""


class ConfigError(TreadleError, ValueError):
    """A configuration value, file or combination is invalid; the message lists every problem.

    :ivar problems: the problems, one sentence each, when the error lists several.
    :ivar problem_fields: for each of ``problems``, when known, the names of the top-level
        config fields it is about (so a message can say which file or flag set them).
    """

    problems: list[str]
    problem_fields: list[tuple[str, ...]]

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.problems = []
        self.problem_fields = []


class PluginError(TreadleError):
    """Something is wrong with a plugin."""


class PluginLoadError(PluginError, ImportError):
    """A plugin's entry point could not be loaded or does not match the hook specifications."""


class PluginConflictError(PluginError):
    """Two plugins claim one plugin name or one registered name."""


class RegistrationError(PluginError, ValueError):
    """A ``register(name, obj)`` call was given a bad name or an object of the wrong kind."""


class UnknownNameError(TreadleError, KeyError):
    """A registry lookup found nothing under the name; the message lists what is registered."""

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument, which quotes a long message.
        return str(self.args[0]) if self.args else ""


class StorageError(TreadleError):
    """A store cannot be opened, is not treadle's, or holds a newer schema; names the location."""


class JobError(TreadleError):
    """A job or schedule cannot do what was asked in its present state (cancelling a job
    that already finished); the message names the state."""


class DataError(TreadleError, ValueError):
    """A data file, data set or record cannot be used as given: the message names the file and
    line, column or byte offset, and the fix. Raised before anything partial is returned."""


class MissingDependencyError(TreadleError, ImportError):
    """An optional library that a feature needs is not installed; the message names the
    feature and the exact ``pip install "treadle[<extra>]"`` that adds it."""
