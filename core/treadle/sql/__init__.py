"""treadle's stores in SQL, written once for every SQL database a backend plugin brings.

A backend supplies a :class:`Dialect` (how its SQL spells placeholders, lists, JSON
aggregation, row locks, upserts, the job queue's clock and claim) and a :class:`Connector`
(how it connects, starts a write transaction, serializes migrations and reports errors), plus
the schema migrations of its tables; :class:`SQLModelStore`, :class:`SQLExperimentStore` and
:class:`SQLJobStore` over a :class:`Database` then give the three store protocols of
:mod:`treadle.storage`. ``docs/storage.md`` ("Writing a storage backend") walks through one.

This package names no database and imports no driver.
"""

from __future__ import annotations

from treadle.sql.database import (
    Connector,
    ConstraintViolation,
    Database,
    Migration,
    Session,
    migrate,
)
from treadle.sql.dialect import Dialect, QueueClock, on_conflict_upsert
from treadle.sql.experiment_store import SQLExperimentStore
from treadle.sql.job_store import SQLJobStore
from treadle.sql.model_store import SQLModelStore
from treadle.sql.queue import JobQueue, claim_in_transaction, end_attempt_in_transaction

__all__ = [
    "ConstraintViolation",
    "Connector",
    "Database",
    "Dialect",
    "JobQueue",
    "Migration",
    "QueueClock",
    "SQLExperimentStore",
    "SQLJobStore",
    "SQLModelStore",
    "Session",
    "claim_in_transaction",
    "end_attempt_in_transaction",
    "migrate",
    "on_conflict_upsert",
]
