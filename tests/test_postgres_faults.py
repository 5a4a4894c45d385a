"""PostgreSQL faults said as treadle's errors (issue 14): a server that went away, a full disk,
a read-only session and NUL in text each give a ``StorageError`` (or, for NUL a user hands
in, a ``ConfigError``) naming the server and the fix, and nothing stored before is changed.

The server is a real throwaway one; its full disk is the server's own ``disk_full`` error
(SQLSTATE 53100), raised by a trigger, since a data directory cannot be filled here without
root tricks.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

import treadle_postgres.plugin
from treadle.errors import ConfigError, StorageError
from treadle.experiments import ExperimentDB
from treadle.jobs.manager import JobManager
from treadle.model_registry import ModelRegistry
from treadle.plugins import PluginManager
from treadle.testing import isolated_plugin_manager

if TYPE_CHECKING:
    from tests.postgres_fixtures import PostgresServer

pytest_plugins = ["tests.postgres_fixtures"]


@pytest.fixture
def postgres_manager() -> PluginManager:
    return isolated_plugin_manager(("postgres", treadle_postgres.plugin))


def _sql(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(query)
        return list(cursor.fetchall()) if cursor.description else []


def test_a_read_only_session_reads_and_refuses_writes_with_the_fix(
    postgres_url: str, postgres_manager: PluginManager
) -> None:
    with ModelRegistry(postgres_url, plugin_manager=postgres_manager) as registry:
        model_id = registry.register_model("m", "1", "m.pt", "lm", {"val_loss": 0.5})
        registry.promote_model(model_id, "production")
    with ExperimentDB(postgres_url, plugin_manager=postgres_manager) as db:
        run_id = db.log_run("kept", {"lr": 0.1})
    read_only = f"{postgres_url}%20-cdefault_transaction_read_only%3Don"
    with (
        ModelRegistry(read_only, plugin_manager=postgres_manager) as registry,
        ExperimentDB(read_only, plugin_manager=postgres_manager) as db,
    ):
        assert registry.get_model(tag="production").model_id == model_id
        assert db.get_run(run_id).config == {"lr": 0.1}
        with pytest.raises(StorageError, match=r"refuses writes.*read_only.*Reading works"):
            registry.register_model("m", "2", "m.pt", "lm")
        with pytest.raises(StorageError, match=r"default_transaction_read_only"):
            db.log_metric(run_id, "loss", 1.0)
    assert _sql(postgres_url, "SELECT version FROM models") == [("1",)]
    assert _sql(postgres_url, "SELECT count(*) FROM run_metrics") == [(0,)]


def test_a_full_server_disk_is_named_and_the_batch_leaves_nothing(
    postgres_url: str, postgres_manager: PluginManager
) -> None:
    with ExperimentDB(postgres_url, plugin_manager=postgres_manager) as db:
        run_id = db.log_run("kept", {})
        db.log_metric(run_id, "loss", 1.0, step=0)
        _sql(
            postgres_url,
            "CREATE FUNCTION full_disk() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " RAISE EXCEPTION 'could not extend file: No space left on device'"
            " USING ERRCODE = 'disk_full'; END $$;"
            " CREATE TRIGGER full_disk BEFORE INSERT ON run_metrics FOR EACH ROW"
            " EXECUTE FUNCTION full_disk()",
        )
        with pytest.raises(StorageError, match=r"disk is full.*rolled back.*free space") as caught:
            db.log_metrics(run_id, {"loss": 0.5, "acc": 0.9}, step=1)
        assert postgres_url.split("?")[0] in str(caught.value)
        assert list(db.get_metrics(run_id)["value"]) == [1.0]
    assert _sql(postgres_url, "SELECT count(*) FROM run_series") == [(1,)]


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server of this test's own, to stop and start again."""
    from tests.postgres_fixtures import skip_reason, start_server, stop_server

    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    server = start_server()
    try:
        yield server
    finally:
        try:
            stop_server(server)
        except subprocess.CalledProcessError:  # the test left it stopped
            shutil.rmtree(server.folder, ignore_errors=True)


def _pg_ctl(server: PostgresServer, action: str) -> None:
    data = str(server.folder / "data")
    if action == "stop":
        server.run("pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        return
    options = f"-c listen_addresses=127.0.0.1 -p {server.port} -k {server.folder}"
    log = str(server.folder / "server.log")
    server.run("pg_ctl", "-D", data, "-l", log, "-w", "-o", options, "start")


def test_a_server_gone_is_named_with_the_fix_and_the_store_recovers_when_it_is_back(
    own_server: PostgresServer, postgres_manager: PluginManager
) -> None:
    url = f"{own_server.url('postgres')}?connect_timeout=3"
    with ExperimentDB(url, plugin_manager=postgres_manager) as db:
        run_id = db.log_run("survivor", {"lr": 0.1})
        _pg_ctl(own_server, "stop")
        with pytest.raises(StorageError, match=r"connection failed or was lost.*server runs"):
            db.log_metric(run_id, "loss", 1.0)
        with pytest.raises(StorageError, match=r"cannot connect to PostgreSQL.*server runs"):
            db.get_run(run_id)
        _pg_ctl(own_server, "start")
        assert db.get_run(run_id).config == {"lr": 0.1}
        db.log_metric(run_id, "loss", 1.0, step=1)
        assert list(db.get_metrics(run_id)["value"]) == [1.0]


def test_nul_in_text_is_refused_by_name_and_worker_errors_keep_it_escaped(
    postgres_url: str, postgres_manager: PluginManager
) -> None:
    with ExperimentDB(postgres_url, plugin_manager=postgres_manager) as db:
        with pytest.raises(ConfigError, match=r"notes holds a NUL character"):
            db.log_run("r", {}, notes="a\x00b")
        with pytest.raises(StorageError, match=r"cannot hold the NUL character.*remove it"):
            db.store.create_run(
                run_name="r", config={}, notes="a\x00b", run_dir=None, status="running"
            )
        run_id = db.log_run("r", {"text": "a\x00b"})  # JSON keeps it escaped
        db.update_run(run_id, status="failed", error="boom\x00")
        run = db.get_run(run_id)
        assert (run.config, run.error) == ({"text": "a\x00b"}, "boom\\x00")
    with ModelRegistry(postgres_url, plugin_manager=postgres_manager) as registry:
        with pytest.raises(ConfigError, match="config_hash holds a NUL"):
            registry.register_model("m", "1", "m.pt", "lm", config_hash="ab\x00")
        assert registry.list_models().empty
    manager = JobManager(postgres_url, plugin_manager=postgres_manager)
    with manager:
        job_id = manager.store.enqueue("noop", {}, priority=5, max_retries=0)
        claim = manager.store.claim("w1", lease_seconds=30)
        assert claim is not None
        assert (
            manager.store.fail(claim, "died\x00here", outcome="failed", retry_delay=0) == "failed"
        )
        assert manager.get_job(job_id).error_message == "died\\x00here"
