"""Hook implementations of the losses plugin: registrations only, a few lines each."""

from __future__ import annotations
