"""The PostgreSQL storage plugin: the store conformance suite on a real throwaway server,
URL schemes, migrations and refusals, connection loss and fork, concurrent writers (RELIABILITY
R1, R2, X2 on PostgreSQL)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

import treadle_postgres.plugin
import treadle_sqlite.plugin
from treadle.errors import StorageError
from treadle.experiments import ExperimentDB
from treadle.model_registry import ModelRegistry
from treadle.plugins import PluginManager, make_plugin_manager
from treadle.storage import ExperimentStore, ModelStore, open_store
from treadle.testing import check_hookimpls, isolated_plugin_manager
from treadle.testing.stores import STORE_CHECKS, StoreCheck, run_store_checks

if TYPE_CHECKING:
    from tests.postgres_fixtures import PostgresServer

pytest_plugins = ["tests.postgres_fixtures"]


@pytest.fixture
def postgres_manager() -> PluginManager:
    return isolated_plugin_manager(("postgres", treadle_postgres.plugin))


#: the tables of the URL's current schema (each test has a schema of its own)
_TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"


def _sql(url: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(query, params or None)
        return list(cursor.fetchall()) if cursor.description else []


# -- conformance -------------------------------------------------------------------------


@pytest.mark.parametrize("check", STORE_CHECKS, ids=lambda check: check.__name__)
def test_postgres_passes_the_store_conformance_suite(
    check: StoreCheck, postgres_url: str, postgres_manager: PluginManager
) -> None:
    check(postgres_url, postgres_manager)


def test_the_suite_runs_again_on_a_database_holding_its_own_earlier_data(
    postgres_database_url: str, postgres_manager: PluginManager
) -> None:
    run_store_checks(postgres_database_url, postgres_manager)
    url = postgres_database_url.replace("postgresql://", "postgres://")
    run_store_checks(url, postgres_manager)


def test_the_plugin_registers_both_schemes_with_valid_hooks(
    postgres_url: str, postgres_manager: PluginManager
) -> None:
    assert check_hookimpls(treadle_postgres.plugin) == []
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://")):
        models = open_store(url, "models", postgres_manager)
        experiments = open_store(url, "experiments", postgres_manager)
        assert isinstance(models, ModelStore)
        assert isinstance(experiments, ExperimentStore)
        models.close()
        experiments.close()
    with pytest.raises(StorageError, match="models, experiments, jobs"):
        open_store(postgres_url, "artifacts", postgres_manager)


def test_the_installed_entry_point_serves_postgresql_urls(postgres_database_url: str) -> None:
    manager = make_plugin_manager(disabled=[])
    with ModelRegistry(postgres_database_url, plugin_manager=manager) as registry:
        registry.register_model("m", "1", "m.pt", "classification")
        assert registry.get_model(name="m").version == "1"


# -- schema and migrations ---------------------------------------------------------------


def test_each_store_keeps_its_schema_version_and_opening_again_changes_nothing(
    postgres_url: str, postgres_manager: PluginManager
) -> None:
    for kind in ("models", "experiments", "jobs"):
        open_store(postgres_url, kind, postgres_manager).close()
    versions = dict(_sql(postgres_url, "SELECT component, version FROM treadle_schema"))
    assert versions == {"registry": 1, "experiments": 2, "jobs": 1}
    tables = {row[0] for row in _sql(postgres_url, _TABLES)}
    assert {"models", "model_tags", "runs", "run_metrics", "jobs", "job_schedules"} <= tables
    for kind in ("models", "experiments", "jobs"):
        open_store(postgres_url, kind, postgres_manager).close()
    assert dict(_sql(postgres_url, "SELECT component, version FROM treadle_schema")) == versions


def test_migrations_run_forward_from_the_stored_version_in_one_transaction(
    postgres_url: str,
) -> None:
    from treadle_postgres.connection import Migration, connect, migrate

    def add_rows(connection: Any) -> None:
        connection.execute(
            "INSERT INTO widgets (name) SELECT 'w' || n FROM generate_series(1, 3) n"
        )

    steps: list[Migration] = ["CREATE TABLE widgets (name TEXT); CREATE INDEX w ON widgets (name)"]
    with connect(postgres_url) as connection:
        assert migrate(connection, "widgets", steps, postgres_url) == 1
        steps += [add_rows, "ALTER TABLE widgets ADD COLUMN size INTEGER NOT NULL DEFAULT 1"]
        assert migrate(connection, "widgets", steps, postgres_url) == 3
        assert migrate(connection, "widgets", steps, postgres_url) == 3  # nothing to do
        broken = [*steps, "ALTER TABLE widgets ADD COLUMN x INTEGER", "SELECT no_such_function()"]
        with pytest.raises(psycopg.errors.UndefinedFunction):
            migrate(connection, "widgets", broken, postgres_url)
    assert _sql(postgres_url, "SELECT count(*), sum(size) FROM widgets") == [(3, 3)]
    columns = _sql(
        postgres_url,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'widgets'"
        " AND table_schema = current_schema() ORDER BY column_name",
    )
    assert columns == [("name",), ("size",)]  # the failed run's first step rolled back too
    query = "SELECT version FROM treadle_schema WHERE component = 'widgets'"
    assert _sql(postgres_url, query) == [(3,)]


def test_a_newer_schema_is_refused_and_left_as_it_is(
    postgres_url: str, postgres_manager: PluginManager
) -> None:
    open_store(postgres_url, "models", postgres_manager).close()
    _sql(postgres_url, "UPDATE treadle_schema SET version = 99 WHERE component = 'registry'")
    with pytest.raises(StorageError, match="registry schema version 99, newer than this"):
        ModelRegistry(postgres_url, plugin_manager=postgres_manager)
    assert _sql(postgres_url, "SELECT version FROM treadle_schema") == [(99,)]


def test_another_applications_database_is_refused_unchanged(
    postgres_url: str, postgres_manager: PluginManager
) -> None:
    _sql(postgres_url, "CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(StorageError, match=r"not a treadle store \(invoices.*search_path"):
        ExperimentDB(postgres_url, plugin_manager=postgres_manager)
    tables = {row[0] for row in _sql(postgres_url, _TABLES)}
    assert "treadle_schema" not in tables
    assert "runs" not in tables


def test_a_schema_of_its_own_beside_another_applications_tables(
    postgres_database_url: str, postgres_manager: PluginManager
) -> None:
    _sql(postgres_database_url, "CREATE TABLE invoices (id INTEGER)")
    _sql(postgres_database_url, "CREATE SCHEMA treadle")
    url = f"{postgres_database_url}?options=-csearch_path%3Dtreadle"
    with ModelRegistry(url, plugin_manager=postgres_manager) as registry:
        registry.register_model("m", "1", "m.pt", "classification")
    query = "SELECT schemaname FROM pg_tables WHERE tablename = 'models'"
    assert _sql(postgres_database_url, query) == [("treadle",)]


def test_a_search_path_naming_no_schema_is_refused_with_the_fix(
    postgres_database_url: str, postgres_manager: PluginManager
) -> None:
    url = f"{postgres_database_url}?options=-csearch_path%3Dmissing"
    with pytest.raises(StorageError, match=r"search_path \(missing\).*CREATE SCHEMA"):
        open_store(url, "jobs", postgres_manager)


@pytest.mark.slow
def test_processes_opening_a_new_database_at_once_migrate_it_once(
    postgres_url: str, tmp_path: Path
) -> None:
    import subprocess
    import sys

    script = (
        "import sys, time\n"
        "from treadle_postgres.job_store import PostgresJobStore\n"
        "from treadle_postgres.model_store import PostgresModelStore\n"
        "start = float(sys.argv[2])\n"
        "while time.time() < start: time.sleep(0.001)\n"
        "PostgresJobStore(sys.argv[1]).close(); PostgresModelStore(sys.argv[1]).close()\n"
    )
    start = str(time.time() + 1.0)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, postgres_url, start],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for process in processes:
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err[-2000:]
    assert sorted(_sql(postgres_url, "SELECT component, version FROM treadle_schema")) == [
        ("jobs", 1),
        ("registry", 1),
    ]


# -- connections -------------------------------------------------------------------------


def test_an_unreachable_server_is_named_without_its_password(
    postgres_manager: PluginManager,
) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://alice:s3cret@127.0.0.1:{port}/treadle?connect_timeout=2"
    with pytest.raises(StorageError, match="cannot connect to PostgreSQL") as caught:
        ModelRegistry(url, plugin_manager=postgres_manager)
    assert f"alice:***@127.0.0.1:{port}/treadle" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_a_missing_database_and_a_malformed_url_are_named(
    postgres_server: PostgresServer, postgres_manager: PluginManager
) -> None:
    with pytest.raises(StorageError, match=r'database "nowhere" does not exist.*createdb'):
        open_store(postgres_server.url("nowhere"), "jobs", postgres_manager)
    with pytest.raises(StorageError, match="not a valid PostgreSQL URL"):
        open_store("postgresql://host/db?nonsense_option=1", "jobs", postgres_manager)


def test_passwords_are_hidden_in_every_url_form() -> None:
    from treadle_postgres.connection import redact

    assert redact("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact("postgresql://u@h/db?password=pw&sslmode=require") == (
        "postgresql://u@h/db?password=%2A%2A%2A&sslmode=require"
    )
    assert redact("postgres://h/db") == "postgres://h/db"


def test_a_lost_connection_fails_one_call_and_the_next_reconnects(
    postgres_url: str, postgres_manager: PluginManager
) -> None:
    with ExperimentDB(postgres_url, plugin_manager=postgres_manager) as db:
        run_id = db.log_run("survivor", {})
        _sql(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'treadle' AND pid <> pg_backend_pid()",
        )
        with pytest.raises(StorageError, match="connection failed or was lost"):
            db.get_run(run_id)
        assert db.get_run(run_id).run_name == "survivor"
        db.log_metric(run_id, "loss", 1.0, step=1)
        assert list(db.get_metrics(run_id)["value"]) == [1.0]


def test_a_forked_child_uses_its_own_connection(
    postgres_url: str, postgres_manager: PluginManager
) -> None:
    with ModelRegistry(postgres_url, plugin_manager=postgres_manager) as registry:
        registry.register_model("parent", "1", "p.pt", "classification")
        pid = os.fork()
        if pid == 0:  # the child: register through the inherited store, then leave at once
            code = 1
            try:
                registry.register_model("child", "1", "c.pt", "classification")
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # the parent's session survived the child
        assert registry.get_model(name="child").checkpoint_path == "c.pt"
        registry.register_model("parent", "2", "p2.pt", "classification")
    names = _sql(postgres_url, "SELECT count(*) FROM pg_stat_activity WHERE datname IS NULL")
    assert names  # the server still answers


def test_a_closed_store_says_so(postgres_url: str, postgres_manager: PluginManager) -> None:
    store = open_store(postgres_url, "models", postgres_manager)
    store.close()
    with pytest.raises(StorageError, match="is closed; open a new one"):
        store.get_model(1)


# -- concurrency and bad input -----------------------------------------------------------


def test_r2_racing_promotions_leave_exactly_one_holder_at_all_times(
    postgres_url: str, postgres_manager: PluginManager
) -> None:
    with ModelRegistry(postgres_url, plugin_manager=postgres_manager) as registry:
        ids = [registry.register_model("m", f"1.{n}", "m.pt", "x") for n in range(4)]
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[int] = []

    def promote(model_id: int) -> None:
        try:
            with ModelRegistry(postgres_url, plugin_manager=postgres_manager) as mine:
                while not stop.is_set():
                    mine.promote_model(model_id, "production")
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    def read() -> None:
        try:
            with ModelRegistry(postgres_url, plugin_manager=postgres_manager) as mine:
                while not stop.is_set():
                    holders = mine.store.find_models(name="m", tag="production")
                    seen.append(len(holders))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=promote, args=(model_id,)) for model_id in ids]
    threads.append(threading.Thread(target=read))
    with ModelRegistry(postgres_url, plugin_manager=postgres_manager) as registry:
        registry.promote_model(ids[0], "production")
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert seen
    assert set(seen) == {1}, "a reader saw no holder or two"


def test_r1_concurrent_registrations_of_one_version_leave_one_entry(
    postgres_url: str, postgres_manager: PluginManager
) -> None:
    from treadle.storage import DuplicateModelError

    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def register(n: int) -> None:
        with ModelRegistry(postgres_url, plugin_manager=postgres_manager) as mine:
            barrier.wait()
            try:
                mine.register_model("race", "1.0.0", f"{n}.pt", "x")
                outcomes.append("registered")
            except DuplicateModelError:
                outcomes.append("duplicate")

    threads = [threading.Thread(target=register, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(outcomes) == ["duplicate"] * 3 + ["registered"]
    assert _sql(postgres_url, "SELECT count(*) FROM models WHERE name = 'race'") == [(1,)]


def test_concurrent_writers_of_one_run_lose_no_metric_rows(
    postgres_url: str, postgres_manager: PluginManager
) -> None:
    with ExperimentDB(postgres_url, plugin_manager=postgres_manager) as db:
        run_id = db.log_run("shared", {})
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            with ExperimentDB(postgres_url, plugin_manager=postgres_manager) as mine:
                for step in range(50):  # every writer creates the same new series at once
                    mine.log_metrics(run_id, {"loss": float(n), f"w{n}": 1.0}, step=step)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    with ExperimentDB(postgres_url, plugin_manager=postgres_manager) as db:
        frame = db.get_metrics(run_id)
        assert len(frame) == 4 * 50 * 2
        assert db.store.metric_names([run_id]) == ["loss", "w0", "w1", "w2", "w3"]


def test_x2_sql_in_names_is_text_and_the_schema_stays_intact(
    postgres_url: str, postgres_manager: PluginManager
) -> None:
    evil = "x'); DROP TABLE models; --"
    with ModelRegistry(postgres_url, plugin_manager=postgres_manager) as registry:
        model_id = registry.register_model(evil, evil, evil, evil, metrics={evil: 1.0})
        registry.promote_model(model_id, evil)
        assert registry.get_model(tag=evil, name=evil).metrics == {evil: 1.0}
    with ExperimentDB(postgres_url, plugin_manager=postgres_manager) as db:
        run_id = db.log_run(evil, {evil: evil}, notes=evil)
        db.log_metric(run_id, evil, 2.0)
        assert db.get_run(run_id).config == {evil: evil}
    tables = {row[0] for row in _sql(postgres_url, _TABLES)}
    assert {"models", "model_tags", "runs", "run_metrics"} <= tables


def test_metric_names_sort_in_byte_order_whatever_the_collation(
    postgres_url: str, postgres_manager: PluginManager
) -> None:
    with ExperimentDB(postgres_url, plugin_manager=postgres_manager) as db:
        run_id = db.log_run("order", {})
        db.log_metrics(run_id, {"b": 1.0, "B": 1.0, "a": 1.0, "_z": 1.0}, step=0)
        assert db.store.metric_names() == ["B", "_z", "a", "b"]  # as SQLite sorts them


def test_one_database_serves_sqlite_parity_for_a_registry_round_trip(
    postgres_url: str, tmp_path: Path
) -> None:
    manager = isolated_plugin_manager(
        ("postgres", treadle_postgres.plugin), ("sqlite", treadle_sqlite.plugin)
    )
    entries = []
    for location in (postgres_url, str(tmp_path / "parity.db")):
        with ModelRegistry(location, plugin_manager=manager) as registry:
            parent = registry.register_model("p", "1", "p.pt", "x", metrics={"loss": 0.5})
            child = registry.register_model(
                "p", "2", "c.pt", "x", parent_model_id=parent, tags=["staging"]
            )
            entry = registry.get_model(model_id=child).to_dict()
            entry.pop("created_at")
            entries.append(json.dumps(entry, sort_keys=True))
    assert entries[0] == entries[1]


@pytest.mark.slow
def test_a_server_whose_session_was_killed_is_swept_by_the_next(
    postgres_server: PostgresServer,
) -> None:
    import signal
    import subprocess
    import sys

    from tests.postgres_fixtures import sweep_abandoned_servers

    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from tests.postgres_fixtures import start_server\n"
        "server = start_server(); print(server.folder, flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    session = subprocess.Popen(
        [sys.executable, "-c", script, root], stdout=subprocess.PIPE, text=True
    )
    assert session.stdout is not None
    folder = Path(session.stdout.readline().strip())
    session.send_signal(signal.SIGKILL)  # no teardown: its server runs on
    session.wait()
    assert (folder / "data" / "postmaster.pid").exists()
    assert folder in sweep_abandoned_servers(str(folder.parent))
    assert not folder.exists()
    assert postgres_server.folder.exists()  # a live session's server is left alone
