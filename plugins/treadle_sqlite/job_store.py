"""The SQLite job store: its tables; the SQL is :class:`treadle.sql.SQLJobStore`'s.

A claim is the shared one (:func:`treadle.sql.claim_in_transaction`): a ``BEGIN IMMEDIATE``
transaction that first returns jobs whose lease expired to the queue, then one ``UPDATE ...
RETURNING`` that sets ``running``, the worker, ``attempt + 1`` and the lease deadline. Every
later write a worker makes is conditioned on ``(job_id, worker_id, attempt)`` and on the job
still running. Times are the client's clock, kept as ISO text (epoch seconds for leases).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from treadle.sql import SQLJobStore
from treadle.sql.job_store import COMPONENT
from treadle_sqlite.connection import Migration, open_store_database

__all__ = ["MIGRATIONS", "SQLiteJobStore"]

MIGRATIONS: Sequence[Migration] = (
    """
    CREATE TABLE jobs (
        job_id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_type TEXT NOT NULL,
        status TEXT NOT NULL,
        priority INTEGER NOT NULL,
        config TEXT NOT NULL,
        created_at TEXT NOT NULL,
        started_at TEXT,
        completed_at TEXT,
        error_message TEXT,
        worker_id TEXT,
        attempt INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0,
        max_retries INTEGER NOT NULL,
        timeout_seconds REAL,
        available_at REAL NOT NULL,
        lease_expires_at REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        result TEXT,
        schedule_id INTEGER,
        dedupe_key TEXT UNIQUE
    );
    CREATE INDEX jobs_claim_order ON jobs (priority DESC, job_id) WHERE status = 'pending';
    CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE status = 'running';
    CREATE INDEX jobs_status ON jobs (status, job_id);
    CREATE TABLE job_attempts (
        job_id INTEGER NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
        attempt INTEGER NOT NULL,
        worker_id TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        outcome TEXT NOT NULL,
        error TEXT,
        retry_delay REAL,
        PRIMARY KEY (job_id, attempt)
    );
    CREATE TABLE job_schedules (
        schedule_id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        job_type TEXT NOT NULL,
        config TEXT NOT NULL,
        schedule_expr TEXT NOT NULL,
        timezone TEXT NOT NULL,
        priority INTEGER NOT NULL,
        max_retries INTEGER NOT NULL,
        is_paused INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        fires_after REAL NOT NULL,
        last_fire_at TEXT,
        last_job_id INTEGER
    )
    """,
    # 2: a key unique across stores, so that effects keyed by job (registry entries) never
    # confuse two stores' job 1. Fewer pages written per claim and complete (the commit is
    # most of their cost): no status index (listing by status scans the primary key), and
    # attempts without a separate rowid tree.
    """
    ALTER TABLE jobs ADD COLUMN uid TEXT;
    UPDATE jobs SET uid = lower(hex(randomblob(16))) WHERE uid IS NULL;
    CREATE UNIQUE INDEX jobs_uid ON jobs (uid);
    DROP INDEX jobs_status;
    CREATE TABLE job_attempts_2 (
        job_id INTEGER NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
        attempt INTEGER NOT NULL,
        worker_id TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        outcome TEXT NOT NULL,
        error TEXT,
        retry_delay REAL,
        PRIMARY KEY (job_id, attempt)
    ) WITHOUT ROWID;
    INSERT INTO job_attempts_2 SELECT job_id, attempt, worker_id, started_at, finished_at,
        outcome, error, retry_delay FROM job_attempts;
    DROP TABLE job_attempts;
    ALTER TABLE job_attempts_2 RENAME TO job_attempts
    """,
)


class SQLiteJobStore(SQLJobStore):
    """Jobs, attempts and schedules in one SQLite file (shared with other treadle stores).

    :param location: a path or ``sqlite:///path``; created and migrated on open.
    """

    def __init__(self, location: str | Path) -> None:
        super().__init__(open_store_database(location, COMPONENT, MIGRATIONS))
