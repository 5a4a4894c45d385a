"""Which checkpoints a folder keeps: the best ``keep_best_k`` by the monitored metric and the
last ``keep_last_n`` saves (RELIABILITY C5); a missing, NaN or infinite value is never best."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import attrs

from treadle.engine.checkpoints.manifest import Entry

__all__ = ["RetentionPolicy"]


@attrs.frozen(kw_only=True)
class RetentionPolicy:
    """How a folder ranks and keeps its checkpoints; arguments as
    :class:`~treadle.engine.checkpoints.CheckpointManager` takes them (checked there)."""

    monitor: str
    mode: str
    keep_best_k: int
    keep_last_n: int

    def header(self) -> dict[str, Any]:
        """The policy as the manifest's header records it."""
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "keep_best_k": self.keep_best_k,
            "keep_last_n": self.keep_last_n,
        }

    def ranked(self, entries: Iterable[Entry]) -> list[Entry]:
        """Entries with a finite monitored value, best first; ties to the earlier save."""
        sign = 1.0 if self.mode == "min" else -1.0
        eligible = [
            entry for entry in entries if math.isfinite(entry.metrics.get(self.monitor, math.nan))
        ]
        return sorted(
            eligible, key=lambda entry: (sign * entry.metrics[self.monitor], entry.sequence)
        )

    def retain(self, entries: list[Entry]) -> tuple[list[Entry], list[Entry]]:
        """(kept, removed), both oldest first; ``is_best`` is set on the kept ones."""
        by_age = sorted(entries, key=lambda entry: entry.sequence)
        wanted = {entry.file for entry in self.ranked(by_age)[: self.keep_best_k]}
        if self.keep_last_n:
            wanted |= {entry.file for entry in by_age[-self.keep_last_n :]}
        kept = [entry for entry in by_age if entry.file in wanted]
        removed = [entry for entry in by_age if entry.file not in wanted]
        self.mark_best(kept)
        return kept, removed

    def mark_best(self, entries: list[Entry]) -> None:
        """Set ``is_best`` on the one best of ``entries`` and clear it on the others."""
        ranked = self.ranked(entries)
        for entry in entries:
            entry.is_best = bool(ranked) and entry is ranked[0]

    def would_be_best(self, metrics: dict[str, float], others: Iterable[Entry]) -> bool:
        """Whether a checkpoint saved with ``metrics`` ranks before all of ``others``."""
        value = metrics.get(self.monitor, math.nan)
        if not math.isfinite(value):
            return False
        ranked = self.ranked(others)
        if not ranked:
            return True
        best = ranked[0].metrics[self.monitor]
        return value < best if self.mode == "min" else value > best
