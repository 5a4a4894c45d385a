"""JobManager: submit, read, list and cancel jobs of the queue in a job store."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from treadle.errors import ConfigError, JobError
from treadle.jobs.records import FINISHED_STATUSES, JOB_STATUSES, Job
from treadle.storage import check_json

if TYPE_CHECKING:
    from treadle.plugins import PluginManager
    from treadle.storage import JobStore

__all__ = ["DEFAULT_LOCATION", "JobManager", "check_priority", "check_retries"]

logger = logging.getLogger(__name__)

DEFAULT_LOCATION = "treadle.db"
MIN_PRIORITY, MAX_PRIORITY = 1, 10


def check_priority(priority: object) -> int:
    """``priority`` as an int in 1..10 (higher is claimed first).

    :raises ConfigError: naming the value and the range.
    """
    if isinstance(priority, bool) or not isinstance(priority, int):
        msg = f"priority must be an integer from 1 to 10 (10 runs first): {priority!r}"
        raise ConfigError(msg)
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        msg = f"priority must lie in 1..10 (10 runs first): {priority}"
        raise ConfigError(msg)
    return priority


def check_retries(max_retries: object) -> int:
    """``max_retries`` as an int >= 0.

    :raises ConfigError: naming the value.
    """
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        msg = f"max_retries must be an integer >= 0: {max_retries!r}"
        raise ConfigError(msg)
    return max_retries


def job_timeout_seconds(config: Mapping[str, Any]) -> float | None:
    """The job's own time limit from ``config["timeout_minutes"]``, in seconds.

    :raises ConfigError: the value is not a positive number.
    """
    value = config.get("timeout_minutes")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        msg = f"config 'timeout_minutes' must be a positive number of minutes: {value!r}"
        raise ConfigError(msg)
    if value <= 0:
        msg = f"config 'timeout_minutes' must be > 0: {value}"
        raise ConfigError(msg)
    return float(value) * 60.0


def open_job_store(location: str | Path, plugin_manager: PluginManager | None = None) -> JobStore:
    """The job store at ``location`` (a path, ``sqlite:///...`` or any registered scheme).

    :raises StorageError: no plugin handles the location's scheme, or it is no treadle store.
    """
    from treadle.storage import open_store

    return open_store(str(location), "jobs", plugin_manager)


class JobManager:
    """The job queue in a store: submit jobs, watch them, cancel them.

    :param location: where the queue lives: a path or ``sqlite:///path`` (the SQLite plugin),
        or any scheme a storage plugin registers. It may share one file with the model
        registry and the experiments.
    :param plugin_manager: where job types are looked up (default: the global manager).
    """

    def __init__(
        self,
        location: str | Path = DEFAULT_LOCATION,
        *,
        plugin_manager: PluginManager | None = None,
    ) -> None:
        self.location = str(location)
        self._plugin_manager = plugin_manager
        self.store: JobStore = open_job_store(self.location, plugin_manager)

    @property
    def plugin_manager(self) -> PluginManager:
        if self._plugin_manager is None:
            from treadle.plugins import get_plugin_manager

            self._plugin_manager = get_plugin_manager()
        return self._plugin_manager

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> JobManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def check_job(self, job_type: str, config: Mapping[str, Any]) -> float | None:
        """Validate a job before it is queued: a registered type, JSON config, and the job
        type's own ``validate_config(config)`` when it has one.

        :returns: the job's own time limit in seconds, if its config sets one.
        :raises UnknownNameError: the job type is not registered (the message lists those
            that are).
        :raises ConfigError: the config is not JSON data (by the stores' one rule,
            :func:`treadle.storage.check_json`) or the job type refuses it.
        """
        job_runner = self.plugin_manager.registry("job_types").create(job_type)
        data = check_json(config, "job config")
        validate = getattr(job_runner, "validate_config", None)
        if validate is not None:
            validate(data)
        return job_timeout_seconds(data)

    def submit_job(
        self,
        job_type: str,
        config: Mapping[str, Any],
        priority: int = 5,
        max_retries: int = 3,
    ) -> int:
        """Queue a job; returns its id.

        :param job_type: a registered job type (``training``, ``evaluation``, ``export``,
            ``retraining``, or one a plugin adds).
        :param config: the job's config, JSON data (``{"training_config": config.to_dict()}``);
            ``timeout_minutes`` there sets a time limit lower than the worker's.
        :param priority: 1..10; higher is claimed first, then the oldest.
        :param max_retries: how often a failed attempt is retried (with growing backoff).
        :raises UnknownNameError: unknown job type, listing the registered ones.
        :raises ConfigError: bad priority, retries or config.
        """
        priority = check_priority(priority)
        max_retries = check_retries(max_retries)
        timeout_seconds = self.check_job(job_type, config)
        job_id = self.store.enqueue(
            job_type,
            dict(config),
            priority=priority,
            max_retries=max_retries,
            timeout_seconds=timeout_seconds,
        )
        logger.info("submitted %s job %d (priority %d)", job_type, job_id, priority)
        return job_id

    def get_job(self, job_id: int) -> Job:
        """The job with its attempts history.

        :raises UnknownNameError: no job has this id.
        """
        return self.store.get(job_id)

    def list_jobs(
        self,
        status: str | None = None,
        job_type: str | None = None,
        limit: int | None = 100,
    ) -> list[Job]:
        """Jobs, newest first (without attempts history).

        :raises ConfigError: unknown status.
        """
        if status is not None and status not in JOB_STATUSES:
            msg = f"Unknown job status {status!r}. Statuses: {', '.join(JOB_STATUSES)}."
            raise ConfigError(msg)
        return self.store.list(status=status, job_type=job_type, limit=limit)

    def wait_job(
        self, job_id: int, timeout_seconds: float | None = None, *, poll_seconds: float = 0.2
    ) -> Job:
        """Wait until the job is completed, failed or cancelled, and return it.

        :param timeout_seconds: give up after this long (``None``: wait for ever).
        :raises JobError: still unfinished after ``timeout_seconds``; names its status.
        :raises UnknownNameError: no job has this id.
        """
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        while True:
            job = self.store.get(job_id)
            if job.is_finished:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                msg = (
                    f"Job {job_id} is still {job.status} after {timeout_seconds:g} s; is a "
                    f"worker running (treadle worker --location {self.location})?"
                )
                raise JobError(msg)
            time.sleep(poll_seconds)

    def cancel_job(self, job_id: int) -> Job:
        """Cancel a job: a pending one never runs; a running one is stopped by its worker
        (its status turns ``cancelled`` within a heartbeat, or when its lease expires).

        :returns: the job after the request (``cancel_requested`` set while it is stopping).
        :raises JobError: the job already finished; the message names its status.
        :raises UnknownNameError: no job has this id.
        """
        before, _ = self.store.cancel(job_id)
        if before in FINISHED_STATUSES:
            msg = (
                f"Job {job_id} is already {before}; only pending or running jobs can be cancelled."
            )
            raise JobError(msg)
        logger.info("cancel of job %d requested (was %s)", job_id, before)
        return self.store.get(job_id)
