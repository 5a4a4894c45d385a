"""Hook implementations of the jobs plugin: registrations only, a few lines each."""

from __future__ import annotations
