"""How PostgreSQL spells treadle's shared SQL."""

from __future__ import annotations

from treadle.sql import Dialect, QueueClock
from treadle_postgres.queue import SERVER_NOW, claim_skip_locked, end_attempt_in_one_statement

__all__ = ["POSTGRES"]

#: PostgreSQL 13+ through psycopg 3. Lists go in as arrays (``= ANY(...)``); rows lock, so
#: reads that a write depends on take ``FOR UPDATE`` / ``FOR SHARE``, and promotions of one
#: ``(name, tag)`` serialize on an advisory lock. The queue reads the server's clock (workers
#: on machines whose clocks disagree still agree on leases), keeps times as epoch seconds,
#: and claims with ``FOR UPDATE SKIP LOCKED``.
POSTGRES = Dialect(
    name="postgresql",
    paramstyle="pyformat",
    in_list="{column} = ANY(?::{type}[])",
    list_parameter=list,
    json_array_agg="COALESCE(json_agg({}), '[]')::text",
    binary_collation='"C"',
    greatest="GREATEST",
    metric_row_order="row_id",
    row_locks=True,
    advisory_lock="SELECT pg_advisory_xact_lock(hashtextextended(?, 0))",
    clock=QueueClock(now=SERVER_NOW, stamp=SERVER_NOW),
    claim=claim_skip_locked,
    end_attempt=end_attempt_in_one_statement,
)
