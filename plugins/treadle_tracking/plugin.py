"""Hook implementations of the tracking plugin: registrations only, a few lines each."""

from __future__ import annotations
