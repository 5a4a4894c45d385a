"""Hook implementations of the models plugin: registrations only, a few lines each."""

from __future__ import annotations
