"""Hook implementations of the torchscript plugin: registrations only, a few lines each."""

from __future__ import annotations
