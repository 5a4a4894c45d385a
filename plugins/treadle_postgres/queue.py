"""PostgreSQL's job claim and end of attempt: one statement each, committed at once.

A claim is::

    UPDATE jobs SET status = 'running', worker_id = ..., attempt = attempt + 1,
        lease_expires_at = now + lease
    WHERE job_id = (SELECT job_id FROM jobs WHERE status = 'pending' AND available_at <= now
                    ORDER BY priority DESC, job_id FOR UPDATE SKIP LOCKED LIMIT 1)
    RETURNING ...

so concurrent workers skip each other's rows instead of waiting, and no transaction stays open
while a job runs: the worker renews a lease with a heartbeat. The attempt row is written by
the same statement. When the statement reports expired leases, they are returned to the queue
(:meth:`treadle.sql.SQLJobStore.expire_leases`, ``SKIP LOCKED`` again) and the claim is made
again if it found nothing. Ending an attempt updates the job, conditioned on the claim, and
its attempt row in one statement too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from treadle.sql.queue import CLAIM_COLUMNS, OWNED, JobQueue

__all__ = ["SERVER_NOW", "claim_skip_locked", "end_attempt_in_one_statement"]

#: The database server's clock, in seconds since the epoch (constant within a transaction).
SERVER_NOW = "EXTRACT(EPOCH FROM now())::double precision"

_CLAIM = f"""
WITH claimed AS (
    UPDATE jobs SET status = 'running', worker_id = :worker, attempt = attempt + 1,
        lease_expires_at = {SERVER_NOW} + :lease, started_at = {SERVER_NOW}
    WHERE job_id = (
        SELECT job_id FROM jobs
        WHERE status = 'pending' AND available_at <= {SERVER_NOW}
        ORDER BY priority DESC, job_id
        FOR UPDATE SKIP LOCKED
        LIMIT 1)
    RETURNING {CLAIM_COLUMNS}, started_at
), recorded AS (
    INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, outcome)
    SELECT job_id, attempt, :worker, started_at, 'running' FROM claimed
)
SELECT claimed.*, EXISTS (
    SELECT 1 FROM jobs WHERE status = 'running' AND lease_expires_at < {SERVER_NOW}
) AS leases_expired
FROM (VALUES (1)) AS one LEFT JOIN claimed ON TRUE
"""


def claim_skip_locked(queue: JobQueue, parameters: Mapping[str, Any]) -> Any:
    """Claim in one statement with ``FOR UPDATE SKIP LOCKED`` (see the module's docstring)."""
    with queue.database.session() as db:
        row = db.one(_CLAIM, parameters)
        if row["leases_expired"]:
            with queue.database.transaction() as expiring:
                queue.expire_leases(expiring, parameters)
            if row["job_id"] is None:
                row = db.one(_CLAIM, parameters)
    return None if row["job_id"] is None else row


def end_attempt_in_one_statement(
    queue: JobQueue, set_clause: str, parameters: Mapping[str, Any]
) -> bool:
    """The job's update, conditioned on the claim, and its attempt's end: one statement."""
    with queue.database.session() as db:
        row = db.one(
            f"WITH done AS (UPDATE jobs SET {set_clause} WHERE {OWNED}"
            " RETURNING job_id, attempt), finished AS ("
            " UPDATE job_attempts AS a SET outcome = :outcome, error = :error,"
            f" finished_at = {SERVER_NOW}, retry_delay = :retry_delay"
            " FROM done WHERE a.job_id = done.job_id AND a.attempt = done.attempt)"
            " SELECT count(*) AS updated FROM done",
            parameters,
        )
    return bool(row and row["updated"])
