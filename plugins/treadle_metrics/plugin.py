"""Hook implementations of the metrics plugin: registrations only, a few lines each."""

from __future__ import annotations
