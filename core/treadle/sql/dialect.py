"""The SQL a backend spells its own way: placeholders, list parameters, JSON aggregation, row
locks, upserts, the job queue's clock and claim; everything else in :mod:`treadle.sql` is shared.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import attrs

from treadle.jobs.records import iso_time

if TYPE_CHECKING:
    from treadle.sql.queue import ClaimStrategy, EndAttemptStrategy

__all__ = ["Dialect", "QueueClock", "on_conflict_upsert"]

# ``:name`` outside a ``::cast``; treadle's shared SQL has no colons or '?' in literals
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=1024)
def _pyformat(sql: str) -> str:
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%")).replace("?", "%s")


def on_conflict_upsert(
    table: str,
    columns: Sequence[str],
    conflict: Sequence[str],
    update: Sequence[str] = (),
    *,
    values: Sequence[str] | None = None,
    returning: str = "",
) -> str:
    """``INSERT ... ON CONFLICT (conflict) DO UPDATE SET column = excluded.column`` for each
    of ``update`` (``DO NOTHING`` when it is empty): SQLite's and PostgreSQL's spelling.

    :param values: the SQL of each value (``?`` for each column by default).
    :param returning: columns for a ``RETURNING`` clause; a skipped row returns nothing.
    """
    action = (
        "DO UPDATE SET " + ", ".join(f"{column} = excluded.{column}" for column in update)
        if update
        else "DO NOTHING"
    )
    given = ", ".join(values if values is not None else ["?"] * len(columns))
    text = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({given})"
        f" ON CONFLICT ({', '.join(conflict)}) {action}"
    )
    return f"{text} RETURNING {returning}" if returning else text


def _as_stored(value: Any) -> Any:
    return value


def _iso_or_none(epoch_seconds: float | None) -> str | None:
    return None if epoch_seconds is None else iso_time(epoch_seconds)


@attrs.frozen(kw_only=True)
class QueueClock:
    """Whose clock the job queue reads, and how the times of its ``jobs`` and
    ``job_attempts`` rows are kept.

    Every statement of the job store is given the client's clock as the parameters ``now``
    (seconds since the epoch) and ``now_iso`` (ISO 8601 text); ``now`` and ``stamp`` below are
    the SQL the statements use for them.

    :ivar now: SQL for the current time in seconds since the epoch: leases, availability.
        ``":now"`` is the client's clock; PostgreSQL reads the server's, so that workers on
        machines whose clocks disagree agree on when a lease ran out.
    :ivar stamp: SQL for the value kept in ``created_at``, ``started_at``, ``completed_at`` and
        ``finished_at``: ``":now_iso"`` (ISO text) or the same as ``now`` (seconds).
    :ivar to_iso: reads those columns back as ISO 8601 text (``None`` stays ``None``).
    """

    now: str = ":now"
    stamp: str = ":now"
    to_iso: Callable[[Any], str | None] = _iso_or_none

    @classmethod
    def client_iso(cls) -> QueueClock:
        """The client's clock, times kept as ISO text (SQLite's layout)."""
        return cls(now=":now", stamp=":now_iso", to_iso=_as_stored)


def _json_list(values: Sequence[Any]) -> str:
    return json.dumps(list(values))


@attrs.frozen(kw_only=True)
class Dialect:
    """How one SQL database spells what treadle's shared stores need.

    The stores of :mod:`treadle.sql` write their SQL once, with ``?`` (positional) or
    ``:name`` (named) placeholders, and format in the fragments below; :meth:`prepare` turns
    the placeholders into the driver's. A backend builds one instance; see ``docs/storage.md``
    ("Writing a storage backend") for what each field means with an example.

    :ivar name: the backend's name, for messages.
    :ivar paramstyle: the driver's placeholders (PEP 249): ``qmark`` (``?`` and ``:name``, as
        sqlite3 takes them) or ``pyformat`` (``%s`` and ``%(name)s``: psycopg, PyMySQL).
    :ivar in_list: SQL testing whether ``{column}`` is in a list given as one parameter, with
        ``{type}`` the SQL type of its items (``bigint``, ``text``).
    :ivar list_parameter: turns a list into that parameter (JSON text, or a list the driver
        sends as an array).
    :ivar json_array_agg: SQL aggregating ``{}`` into a JSON array as text (``[]`` for none).
    :ivar binary_collation: the collation that sorts text by its bytes.
    :ivar greatest: the function giving the larger of two values.
    :ivar metric_row_order: the column of ``run_metrics`` that keeps insertion order.
    :ivar row_locks: whether ``SELECT ... FOR UPDATE`` (and ``FOR SHARE``, ``FOR KEY SHARE``,
        ``SKIP LOCKED``) exist. Without them every write transaction must hold the database's
        write lock from its start (SQLite's ``BEGIN IMMEDIATE``).
    :ivar advisory_lock: SQL taking a lock on one text key until the transaction ends, or
        ``None`` where write transactions are serialized anyway.
    :ivar index_hints: whether ``INDEXED BY`` may steer the planner (SQLite).
    :ivar upsert: builds an insert that updates (or skips) a row whose key exists.
    :ivar clock: the job queue's clock and time columns.
    :ivar claim: how a worker claims a job (default: one write transaction that first
        returns expired leases to the queue).
    :ivar end_attempt: how the end of an attempt is written (default: one write transaction
        of two statements).
    """

    name: str
    paramstyle: Literal["qmark", "pyformat"]
    in_list: str
    list_parameter: Callable[[Sequence[Any]], object] = _json_list
    json_array_agg: str
    binary_collation: str
    greatest: str
    metric_row_order: str
    row_locks: bool
    advisory_lock: str | None = None
    index_hints: bool = False
    upsert: Callable[..., str] = on_conflict_upsert
    clock: QueueClock = attrs.field(factory=QueueClock)
    claim: ClaimStrategy | None = None
    end_attempt: EndAttemptStrategy | None = None

    def prepare(self, sql: str) -> str:
        """``sql`` with treadle's placeholders in the driver's style (cached)."""
        return sql if self.paramstyle == "qmark" else _pyformat(sql)

    def member(
        self, column: str, values: Sequence[Any], sql_type: str = "bigint"
    ) -> tuple[str, object]:
        """SQL testing ``column`` against ``values``, and the one parameter it takes."""
        return self.in_list.format(column=column, type=sql_type), self.list_parameter(values)

    def lock(self, mode: str) -> str:
        """`` FOR <mode>`` (``UPDATE``, ``SHARE``, ``KEY SHARE``, ``UPDATE SKIP LOCKED``) where
        row locks exist, else nothing."""
        return f" FOR {mode}" if self.row_locks else ""

    def hint(self, index: str) -> str:
        """``INDEXED BY <index>`` where the planner takes hints, else nothing."""
        return f"INDEXED BY {index}" if self.index_hints else ""

    def aggregate_json(self, expression: str) -> str:
        """SQL for a JSON array (text) of ``expression`` over the rows of a subquery."""
        return self.json_array_agg.format(expression)
