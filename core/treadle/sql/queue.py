"""How a worker claims a job and how the end of its attempt is written: the two strategies of
the job queue a dialect may replace, and the portable ones.

A claim sets ``running``, the worker, ``attempt + 1`` and the lease deadline at once, records
the attempt, and first returns jobs whose lease expired to the queue. The portable claim does
that in one write transaction, which is correct wherever a write transaction takes the write
lock at its start (``BEGIN IMMEDIATE``); a database with row locks may claim in one statement
with ``FOR UPDATE SKIP LOCKED`` instead, as the PostgreSQL plugin does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from treadle.sql.database import Database, Session
    from treadle.sql.dialect import Dialect

__all__ = [
    "CLAIM_COLUMNS",
    "OWNED",
    "ClaimStrategy",
    "EndAttemptStrategy",
    "JobQueue",
    "claim_in_transaction",
    "end_attempt_in_transaction",
]

#: What a claim returns (``RETURNING``), for :class:`~treadle.jobs.records.Claim`.
CLAIM_COLUMNS = "job_id, attempt, job_type, config, max_retries, failures, timeout_seconds, uid"

#: The condition of every write about a claimed job: this claim still holds it.
OWNED = "job_id = :job AND worker_id = :worker AND attempt = :attempt AND status = 'running'"


class JobQueue(Protocol):
    """What a claim or end-of-attempt strategy may use of the job store."""

    database: Database
    dialect: Dialect

    def parameters(self, **values: Any) -> dict[str, Any]:
        """``values`` plus the client's clock (``now``, ``now_iso``)."""
        ...

    def expire_leases(self, db: Session, parameters: Mapping[str, Any]) -> None:
        """Return jobs whose lease expired to the queue (or end them), in ``db``'s
        transaction."""
        ...

    def finish_attempt_sql(self) -> str:
        """SQL ending one attempt (named parameters ``job``, ``attempt``, ``outcome``,
        ``error``, ``retry_delay``)."""
        ...


#: Claims the next job for ``worker`` with a lease of ``lease`` seconds: the row
#: :data:`CLAIM_COLUMNS` describes, or ``None`` when no job is ready.
ClaimStrategy = Callable[[JobQueue, Mapping[str, Any]], Any]

#: Ends the attempt of a claim: updates ``jobs`` with ``SET <set_clause> WHERE`` :data:`OWNED`
#: and, when that changed a row, the attempt's row; returns whether it did.
EndAttemptStrategy = Callable[[JobQueue, str, Mapping[str, Any]], bool]


def claim_in_transaction(queue: JobQueue, parameters: Mapping[str, Any]) -> Any:
    """The portable claim: in one write transaction, expire leases, then ``UPDATE ...
    WHERE job_id = (SELECT ... LIMIT 1) RETURNING``, then record the attempt. Correct where a
    write transaction holds the write lock from its start (SQLite's ``BEGIN IMMEDIATE``)."""
    dialect = queue.dialect
    clock = dialect.clock
    with queue.database.transaction() as db:
        queue.expire_leases(db, parameters)
        # the dialect's index hint keeps the claim on the claim-order index (Dialect.index_hints)
        row = db.one(
            "UPDATE jobs SET status = 'running', worker_id = :worker, attempt = attempt + 1,"
            f" lease_expires_at = {clock.now} + :lease, started_at = {clock.stamp}"
            " WHERE job_id = ("
            f"  SELECT job_id FROM jobs {dialect.hint('jobs_claim_order')}"
            f"  WHERE status = 'pending' AND available_at <= {clock.now}"
            "  ORDER BY priority DESC, job_id LIMIT 1)"
            f" RETURNING {CLAIM_COLUMNS}",
            parameters,
        )
        if row is None:
            return None
        db.execute(
            "INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, outcome)"
            f" VALUES (:job, :attempt, :worker, {clock.stamp}, 'running')",
            {**parameters, "job": row["job_id"], "attempt": row["attempt"]},
        )
    return row


def end_attempt_in_transaction(
    queue: JobQueue, set_clause: str, parameters: Mapping[str, Any]
) -> bool:
    """The portable end of an attempt: two statements in one write transaction."""
    with queue.database.transaction() as db:
        updated = db.execute(f"UPDATE jobs SET {set_clause} WHERE {OWNED}", parameters).rowcount
        if updated:
            db.execute(queue.finish_attempt_sql(), parameters)
    return bool(updated)
