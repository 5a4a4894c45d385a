"""Hook implementations of the collators plugin: registrations only, a few lines each."""

from __future__ import annotations
