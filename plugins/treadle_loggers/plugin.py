"""Hook implementations of the loggers plugin: registrations only, a few lines each."""

from __future__ import annotations
