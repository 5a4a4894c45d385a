"""Whether a model's forward runs under ``torch.jit.trace``: input checks that would bake a
Python branch into a traced graph are skipped then."""

from __future__ import annotations

import torch

__all__ = ["is_tracing"]


def is_tracing() -> bool:
    """True inside ``torch.jit.trace``."""
    return bool(torch.jit.is_tracing())  # type: ignore[attr-defined,no-untyped-call]
