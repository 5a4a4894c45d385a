"""The shared SQL layer (``treadle.sql``): a third backend is a dialect, a connector and its
tables, not a copy of the stores; it passes the store conformance suite and the job queue's
semantics. Here that backend is SQLite under another layout (an explicit ``row_id``, the
queue's times as epoch seconds, no index hints), registered under its own scheme."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from treadle import hookimpl
from treadle.errors import StorageError
from treadle.jobs.records import Schedule
from treadle.plugins import PluginManager
from treadle.sql import (
    ConstraintViolation,
    Database,
    Dialect,
    QueueClock,
    SQLExperimentStore,
    SQLJobStore,
    SQLModelStore,
)
from treadle.sql.dialect import on_conflict_upsert
from treadle.storage import open_store
from treadle.testing import isolated_plugin_manager
from treadle.testing.stores import STORE_CHECKS, StoreCheck

# -- the third backend: a dialect, a connector, its tables ------------------------------

LITE = Dialect(
    name="litesql",
    paramstyle="qmark",
    in_list="{column} IN (SELECT value FROM json_each(?))",
    json_array_agg="json_group_array({})",
    binary_collation="BINARY",
    greatest="MAX",
    metric_row_order="row_id",
    row_locks=False,
    clock=QueueClock(),  # the client's clock, times kept as epoch seconds
)


class LiteConnector:
    dialect = LITE

    def __init__(self, url: str) -> None:
        self.location = url
        self.shown = url
        self.path = url.removeprefix("litesql://")

    def connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA busy_timeout = 30000")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.row_factory = sqlite3.Row
        return connection

    def is_closed(self, connection: sqlite3.Connection) -> bool:
        return False

    @contextmanager
    def transaction(self, connection: sqlite3.Connection) -> Iterator[None]:
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def migration_transaction(self, connection: sqlite3.Connection) -> AbstractContextManager[None]:
        return self.transaction(connection)

    def tables(self, connection: sqlite3.Connection) -> set[str]:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}

    def run_script(self, connection: sqlite3.Connection, script: str) -> None:
        for statement in filter(str.strip, script.split(";")):
            connection.execute(statement)

    def not_a_store(self, tables: Iterable[str]) -> str:
        return f"{self.shown} holds other tables: {', '.join(sorted(tables))}"

    def translate(self, error: Exception) -> Exception | None:
        if isinstance(error, sqlite3.IntegrityError) and "UNIQUE" in str(error):
            return ConstraintViolation(f"{self.shown}: {error}")
        if isinstance(error, sqlite3.Error):
            return StorageError(f"{self.shown}: {error}")
        return None


MODELS = """
CREATE TABLE models (
    model_id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, version TEXT NOT NULL,
    checkpoint_path TEXT NOT NULL, task_type TEXT NOT NULL, config_hash TEXT NOT NULL,
    training_run_id INTEGER, parent_model_id INTEGER REFERENCES models (model_id),
    created_at TEXT NOT NULL, metrics TEXT NOT NULL, export_formats TEXT NOT NULL,
    model_size_mb REAL NOT NULL, memory_req_gb REAL NOT NULL, status TEXT NOT NULL,
    job_key TEXT UNIQUE, data_profile TEXT, UNIQUE (name, version));
CREATE TABLE model_tags (
    name TEXT NOT NULL, tag TEXT NOT NULL, model_id INTEGER NOT NULL REFERENCES models,
    assigned_at TEXT NOT NULL, PRIMARY KEY (name, tag))
"""
EXPERIMENTS = """
CREATE TABLE runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT, run_name TEXT NOT NULL, status TEXT NOT NULL,
    config TEXT NOT NULL, notes TEXT NOT NULL, run_dir TEXT, created_at TEXT NOT NULL,
    ended_at TEXT, error TEXT, attempt INTEGER NOT NULL DEFAULT 1,
    summary TEXT NOT NULL DEFAULT '{}', owner_pid INTEGER, owner_host TEXT, owner_token TEXT,
    owner_started_at TEXT, heartbeat_at REAL, lease_expires_at REAL);
CREATE TABLE run_attempts (
    run_id INTEGER NOT NULL REFERENCES runs, attempt INTEGER NOT NULL,
    started_at TEXT NOT NULL, resume_step INTEGER, PRIMARY KEY (run_id, attempt));
CREATE TABLE run_series (
    series_id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL REFERENCES runs,
    name TEXT NOT NULL, UNIQUE (run_id, name));
CREATE TABLE run_metrics (
    row_id INTEGER PRIMARY KEY AUTOINCREMENT, series_id INTEGER NOT NULL REFERENCES run_series,
    attempt INTEGER NOT NULL, value REAL, epoch INTEGER, step INTEGER,
    logged_at REAL NOT NULL, superseded_by INTEGER)
"""
JOBS = """
CREATE TABLE jobs (
    job_id INTEGER PRIMARY KEY AUTOINCREMENT, uid TEXT NOT NULL UNIQUE,
    job_type TEXT NOT NULL, status TEXT NOT NULL, priority INTEGER NOT NULL,
    config TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL, completed_at REAL,
    error_message TEXT, worker_id TEXT, attempt INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0, max_retries INTEGER NOT NULL, timeout_seconds REAL,
    available_at REAL NOT NULL, lease_expires_at REAL,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE, result TEXT, schedule_id INTEGER,
    dedupe_key TEXT UNIQUE);
CREATE TABLE job_attempts (
    job_id INTEGER NOT NULL REFERENCES jobs, attempt INTEGER NOT NULL,
    worker_id TEXT NOT NULL, started_at REAL NOT NULL, finished_at REAL,
    outcome TEXT NOT NULL, error TEXT, retry_delay REAL, PRIMARY KEY (job_id, attempt));
CREATE TABLE job_schedules (
    schedule_id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
    job_type TEXT NOT NULL, config TEXT NOT NULL, schedule_expr TEXT NOT NULL,
    timezone TEXT NOT NULL, priority INTEGER NOT NULL, max_retries INTEGER NOT NULL,
    is_paused BOOLEAN NOT NULL DEFAULT FALSE, created_at TEXT NOT NULL,
    fires_after REAL NOT NULL, last_fire_at TEXT, last_job_id INTEGER)
"""

STORES = {
    "models": (SQLModelStore, "registry", MODELS),
    "experiments": (SQLExperimentStore, "experiments", EXPERIMENTS),
    "jobs": (SQLJobStore, "jobs", JOBS),
}


class LiteBackend:
    def open(self, url: str, kind: str) -> Any:
        store, component, schema = STORES[kind]
        return store(Database(LiteConnector(url), component, [schema]))


class LitePlugin:
    @hookimpl
    def treadle_register_storage(self, register: Any) -> None:
        register("litesql", LiteBackend())


# -- tests -------------------------------------------------------------------------------


@pytest.fixture
def lite_manager() -> PluginManager:
    return isolated_plugin_manager(("litesql", LitePlugin()))


@pytest.mark.parametrize("check", STORE_CHECKS, ids=lambda check: check.__name__)
def test_a_third_backend_of_a_dialect_and_a_connector_passes_the_store_suite(
    check: StoreCheck, tmp_path: Path, lite_manager: PluginManager
) -> None:
    check(f"litesql://{tmp_path / 'lite.db'}", lite_manager)


def test_the_third_backend_keeps_the_job_queue_semantics(
    tmp_path: Path, lite_manager: PluginManager
) -> None:
    """J8 claim order, leases and writes conditioned on the claim, J7 cancel, S1/S4 one job
    per fire time, on the shared SQL with the portable claim."""
    store = open_store(f"litesql://{tmp_path / 'lite.db'}", "jobs", lite_manager)
    low = store.enqueue("noop", {"n": 1}, priority=1, max_retries=1)
    high = store.enqueue("noop", {"n": 2}, priority=9, max_retries=1)
    first = store.claim("w1", lease_seconds=30)
    assert first is not None
    assert (first.job_id, first.attempt, first.config) == (high, 1, {"n": 2})
    assert store.heartbeat(first, lease_seconds=30) == "ok"
    assert store.complete(first, {"done": True})
    assert not store.complete(first, {"again": True}), "a finished claim wrote again"
    stale = store.claim("w1", lease_seconds=0.0)
    assert stale is not None
    assert stale.job_id == low
    time.sleep(0.01)
    again = store.claim("w2", lease_seconds=30)
    assert again is not None
    assert (again.job_id, again.attempt) == (low, 2), "the expired lease was not reclaimed"
    assert store.fail(stale, "late", outcome="failed", retry_delay=0) is None
    assert store.heartbeat(stale, lease_seconds=30) == "lost"
    assert store.fail(again, "boom", outcome="failed", retry_delay=0) == "failed"
    job = store.get(low)
    assert [a.outcome for a in job.attempts] == ["lease_expired", "failed"]
    assert job.completed_at is not None
    assert job.completed_at.endswith("+00:00"), "epoch times are read back as ISO text"
    pending = store.enqueue("noop", {}, priority=5, max_retries=0)
    assert store.cancel(pending) == ("pending", "cancelled")
    schedule_id = store.add_schedule(
        name="nightly",
        job_type="noop",
        config={},
        schedule_expr="0 2 * * *",
        timezone="UTC",
        priority=5,
        max_retries=0,
    )
    schedule: Schedule = store.schedule(schedule_id)
    fire_at = time.time()
    assert store.fire_schedule(schedule, fire_at, f"schedule-{schedule_id}-1") is not None
    assert store.fire_schedule(schedule, fire_at, f"schedule-{schedule_id}-1") is None
    store.close()


def test_placeholders_are_turned_into_the_drivers_style() -> None:
    pyformat = Dialect(
        name="x",
        paramstyle="pyformat",
        in_list="{column} = ANY(?::{type}[])",
        list_parameter=list,
        json_array_agg="json_agg({})",
        binary_collation='"C"',
        greatest="GREATEST",
        metric_row_order="row_id",
        row_locks=True,
    )
    sql = "SELECT ?::bigint[], x::text, :name, 'a%b' WHERE y = :other_name"
    assert pyformat.prepare(sql) == (
        "SELECT %s::bigint[], x::text, %(name)s, 'a%%b' WHERE y = %(other_name)s"
    )
    assert LITE.prepare(sql) == sql
    assert pyformat.member("m.id", [1, 2]) == ("m.id = ANY(?::bigint[])", [1, 2])
    assert LITE.member("m.id", [1, 2]) == ("m.id IN (SELECT value FROM json_each(?))", "[1, 2]")
    assert (pyformat.lock("UPDATE"), LITE.lock("UPDATE")) == (" FOR UPDATE", "")
    assert on_conflict_upsert("t", ("a", "b"), ("a",), ("b",)) == (
        "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT (a) DO UPDATE SET b = excluded.b"
    )
