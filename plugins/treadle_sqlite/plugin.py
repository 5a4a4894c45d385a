"""Hook implementations of the sqlite plugin: registrations only, a few lines each."""

from __future__ import annotations
