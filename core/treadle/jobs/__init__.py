"""The job queue: jobs, workers, cron schedules and retraining triggers.

``JobManager`` submits and watches jobs in a store; ``JobExecutor`` is a worker running each
job in a child process under a lease; ``TrainingScheduler`` enqueues jobs on cron schedules;
``RetrainingTrigger`` decides whether a model needs retraining. Names load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from treadle.jobs.context import JobContext
    from treadle.jobs.executor import JobExecutor, WorkerReport
    from treadle.jobs.manager import JobManager
    from treadle.jobs.records import Job, JobAttempt, Schedule
    from treadle.jobs.scheduler import FiredSchedule, TrainingScheduler
    from treadle.jobs.triggers import RetrainingDecision, RetrainingTrigger

__all__ = [
    "FiredSchedule",
    "Job",
    "JobAttempt",
    "JobContext",
    "JobExecutor",
    "JobManager",
    "RetrainingDecision",
    "RetrainingTrigger",
    "Schedule",
    "TrainingScheduler",
    "WorkerReport",
]

_LAZY: dict[str, str] = {
    "FiredSchedule": "treadle.jobs.scheduler",
    "Job": "treadle.jobs.records",
    "JobAttempt": "treadle.jobs.records",
    "JobContext": "treadle.jobs.context",
    "JobExecutor": "treadle.jobs.executor",
    "JobManager": "treadle.jobs.manager",
    "RetrainingDecision": "treadle.jobs.triggers",
    "RetrainingTrigger": "treadle.jobs.triggers",
    "Schedule": "treadle.jobs.records",
    "TrainingScheduler": "treadle.jobs.scheduler",
    "WorkerReport": "treadle.jobs.executor",
}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        msg = f"module 'treadle.jobs' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
