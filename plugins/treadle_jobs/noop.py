"""The ``noop`` job: runs nothing, reports when it started; checks workers end to end and
measures job start latency."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from treadle.jobs.context import JobContext

__all__ = ["NoopJob"]


class NoopJob:
    """``noop``: any config; returns ``{"start_latency_seconds": ...}`` (claim to job code)."""

    preload: tuple[str, ...] = ()

    def run(self, context: JobContext) -> Mapping[str, Any]:
        started = time.time()
        return {"started_at": started, "start_latency_seconds": started - context.claimed_at}
