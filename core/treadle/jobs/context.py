"""What a job type's ``run`` receives: the job, its attempt, its config and where to write."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from treadle.plugins import PluginManager

__all__ = ["JobContext"]


@attrs.frozen(kw_only=True)
class JobContext:
    """One attempt of one job, as its child process sees it.

    :ivar config: the job's config as submitted (JSON data).
    :ivar output_dir: this attempt's own folder, ``<output_root>/job-<id>-attempt-<n>``,
        created before the job starts: files written here never mix with another attempt's.
    :ivar store_location: the job store's location (to read job history).
    :ivar claimed_at: when the worker claimed this attempt (seconds since the epoch).
    :ivar plugin_manager: the plugin manager to look things up in.
    :ivar job_uid: the job's key in its store, the same on every attempt.
    """

    job_id: int
    job_type: str
    attempt: int
    worker_id: str
    config: Mapping[str, Any]
    output_dir: Path
    store_location: str
    claimed_at: float
    plugin_manager: PluginManager
    job_uid: str = ""

    @property
    def job_key(self) -> str:
        """``job-<id>-<uid>``: the key a job's registry writes carry, the same on every attempt
        and unique across job stores, so a retried or reclaimed job never registers two
        models."""
        return f"job-{self.job_id}-{self.job_uid}" if self.job_uid else f"job-{self.job_id}"
