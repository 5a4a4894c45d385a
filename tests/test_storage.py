"""Stores: the conformance suite on SQLite, open_store's resolution, refusing foreign or newer
files without touching them, and bad input (RELIABILITY X1-X3)."""

from __future__ import annotations

import hashlib
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import treadle_sqlite.plugin
from treadle import hookimpl
from treadle.errors import ConfigError, StorageError, UnknownNameError
from treadle.experiments import ExperimentDB
from treadle.model_registry import ModelRegistry
from treadle.plugins import PluginManager
from treadle.storage import ExperimentStore, ModelStore, open_store, scheme_of
from treadle.testing import isolated_plugin_manager
from treadle.testing.stores import STORE_CHECKS, TRICKY_TEXT, StoreCheck, run_store_checks


@pytest.fixture
def sqlite_manager() -> PluginManager:
    return isolated_plugin_manager(("sqlite", treadle_sqlite.plugin))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tables(path: Path) -> list[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall()
    return [row[0] for row in rows]


# -- conformance -------------------------------------------------------------------------


@pytest.mark.parametrize("check", STORE_CHECKS, ids=lambda check: check.__name__)
def test_sqlite_passes_the_store_conformance_suite(
    check: StoreCheck, tmp_path: Path, sqlite_manager: PluginManager
) -> None:
    check(str(tmp_path / "store.db"), sqlite_manager)


def test_the_suite_runs_again_on_a_location_holding_its_own_earlier_data(
    tmp_path: Path, sqlite_manager: PluginManager
) -> None:
    location = f"sqlite:///{tmp_path / 'shared.db'}"
    run_store_checks(location, sqlite_manager)
    run_store_checks(location, sqlite_manager)


def test_the_suite_fails_on_a_backend_that_drops_nan(tmp_path: Path) -> None:
    from treadle_sqlite.backend import SQLiteBackend
    from treadle_sqlite.model_store import SQLiteModelStore

    class ForgetfulStore(SQLiteModelStore):
        def add_model(self, model: Any) -> tuple[int, bool]:
            import attrs

            kept = {k: v for k, v in model.metrics.items() if v == v and v != "nan"}
            return super().add_model(attrs.evolve(model, metrics=kept))

    class ForgetfulBackend(SQLiteBackend):
        def open(self, url: str, kind: str) -> Any:
            return ForgetfulStore(url) if kind == "models" else super().open(url, kind)

    class Plugin:
        @hookimpl
        def treadle_register_storage(self, register: Any) -> None:
            register("sqlite", ForgetfulBackend())

    manager = isolated_plugin_manager(("forgetful", Plugin()))
    with pytest.raises(AssertionError, match="metric names changed"):
        STORE_CHECKS[0](str(tmp_path / "bad.db"), manager)


# -- open_store --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "scheme"),
    [
        ("treadle.db", "sqlite"),
        ("/abs/path.db", "sqlite"),
        ("sqlite:///rel.db", "sqlite"),
        ("postgresql://user@host/db", "postgresql"),
        ("C:\\runs\\t.db", "sqlite"),
    ],
)
def test_scheme_of(location: str, scheme: str) -> None:
    assert scheme_of(location) == scheme


def test_open_store_resolves_paths_and_sqlite_urls_to_one_file(
    tmp_path: Path, sqlite_manager: PluginManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    models = open_store("sqlite:///shared.db", "models", sqlite_manager)
    experiments = open_store(tmp_path / "shared.db", "experiments", sqlite_manager)
    assert isinstance(models, ModelStore)
    assert isinstance(experiments, ExperimentStore)
    models.close()
    experiments.close()
    absolute = open_store(f"sqlite:///{tmp_path / 'shared.db'}", "models", sqlite_manager)
    absolute.close()
    assert {"models", "runs", "run_metrics", "treadle_schema"} <= set(_tables(Path("shared.db")))


def test_the_job_store_opens_lazily_beside_the_others(
    tmp_path: Path, sqlite_manager: PluginManager
) -> None:
    pytest.importorskip("treadle_sqlite.job_store", reason="the job store (jobs issue)")
    location = str(tmp_path / "treadle.db")
    with ModelRegistry(location, plugin_manager=sqlite_manager) as registry:
        registry.register_model(
            "m", "1", "m.pt", "classification", model_size_mb=0, memory_req_gb=0
        )
    jobs = open_store(location, "jobs", sqlite_manager)
    try:
        for method in ("enqueue", "claim", "heartbeat", "complete", "fail", "schedules"):
            assert callable(getattr(jobs, method))
    finally:
        jobs.close()
    with ModelRegistry(location, plugin_manager=sqlite_manager) as registry:
        assert registry.get_model(name="m").version == "1"


def test_an_unknown_scheme_names_it_and_what_is_registered(sqlite_manager: PluginManager) -> None:
    with pytest.raises(
        StorageError, match=r"'postgresql'.*Registered: sqlite.*treadle\[postgres\]"
    ):
        open_store("postgresql://db.example/treadle", "models", sqlite_manager)


def test_an_unknown_kind_lists_the_kinds(tmp_path: Path, sqlite_manager: PluginManager) -> None:
    with pytest.raises(StorageError, match="models, experiments, jobs"):
        open_store(tmp_path / "x.db", "artifacts", sqlite_manager)


def test_a_scheme_registered_by_a_plugin_is_used(tmp_path: Path) -> None:
    opened: list[tuple[str, str]] = []
    behind = isolated_plugin_manager(("sqlite", treadle_sqlite.plugin))

    class AcmeBackend:
        def open(self, url: str, kind: str) -> Any:
            opened.append((url, kind))
            return open_store(tmp_path / "behind.db", kind, behind)

    class Plugin:
        @hookimpl
        def treadle_register_storage(self, register: Any) -> None:
            register("acme", AcmeBackend())

    manager = isolated_plugin_manager(("acme", Plugin()))
    with ExperimentDB("acme://bucket/runs", plugin_manager=manager) as db:
        db.log_run("via-acme", {})
    assert opened == [("acme://bucket/runs", "experiments")]


def test_a_disabled_sqlite_plugin_is_named(tmp_path: Path) -> None:
    manager = isolated_plugin_manager()
    with pytest.raises(StorageError, match="no storage plugin handles the scheme 'sqlite'"):
        ModelRegistry(tmp_path / "x.db", plugin_manager=manager)


@pytest.mark.parametrize("location", ["sqlite://relative.db", "sqlite:///:memory:", ":memory:"])
def test_locations_that_name_no_file_are_refused(
    location: str, sqlite_manager: PluginManager
) -> None:
    with pytest.raises(StorageError, match="SQLite"):
        open_store(location, "models", sqlite_manager)


# -- foreign and newer files -------------------------------------------------------------


def test_a_file_that_is_not_sqlite_is_refused_unchanged(
    tmp_path: Path, sqlite_manager: PluginManager
) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 50, encoding="utf-8")
    before = _digest(path)
    with pytest.raises(StorageError, match=r"notes\.db is not an SQLite database"):
        ModelRegistry(path, plugin_manager=sqlite_manager)
    assert _digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_another_applications_sqlite_file_is_refused_unchanged(
    tmp_path: Path, sqlite_manager: PluginManager
) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        connection.execute("INSERT INTO customers (name) VALUES ('ada')")
    connection.close()
    before = _digest(path)
    with pytest.raises(StorageError, match=r"not a treadle store.*customers"):
        ExperimentDB(path, plugin_manager=sqlite_manager)
    assert _digest(path) == before, "the foreign file was modified (WAL header, tables)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]


def test_a_newer_schema_is_refused_and_left_as_it_is(
    tmp_path: Path, sqlite_manager: PluginManager
) -> None:
    path = tmp_path / "future.db"
    with ModelRegistry(path, plugin_manager=sqlite_manager) as registry:
        registry.register_model("m", "1", "m.pt", "lm", model_size_mb=0, memory_req_gb=0)
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE treadle_schema SET version = 99 WHERE component = 'registry'")
    connection.close()
    before = _digest(path)
    with pytest.raises(StorageError, match=r"registry schema version 99, newer.*upgrade treadle"):
        ModelRegistry(path, plugin_manager=sqlite_manager)
    assert _digest(path) == before
    with ExperimentDB(path, plugin_manager=sqlite_manager) as db:  # other components still open
        db.log_run("still-fine", {})


def test_each_store_migrates_its_own_tables_forward_on_open(
    tmp_path: Path, sqlite_manager: PluginManager
) -> None:
    path = tmp_path / "t.db"
    with ExperimentDB(path, plugin_manager=sqlite_manager):
        pass
    assert "models" not in _tables(path)
    with ModelRegistry(path, plugin_manager=sqlite_manager):
        pass
    with sqlite3.connect(path) as connection:
        versions = dict(connection.execute("SELECT component, version FROM treadle_schema"))
    connection.close()
    assert versions == {"experiments": 2, "registry": 1}


def test_the_database_runs_in_wal_mode_with_foreign_keys(
    tmp_path: Path, sqlite_manager: PluginManager
) -> None:
    with (
        ModelRegistry(tmp_path / "t.db", plugin_manager=sqlite_manager) as registry,
        registry.store.database.session() as connection,  # type: ignore[attr-defined]
    ):
        assert connection.one("PRAGMA journal_mode")[0] == "wal"
        assert connection.one("PRAGMA foreign_keys")[0] == 1
        assert connection.one("PRAGMA busy_timeout")[0] >= 5000


def test_a_forked_child_opens_its_own_connection_and_a_closed_store_says_so(
    tmp_path: Path, sqlite_manager: PluginManager
) -> None:
    """As on PostgreSQL: a child never uses (or, exiting, checkpoints) the parent's SQLite
    connection, and a store used after close() says so instead of sqlite3's ProgrammingError."""
    import os

    path = tmp_path / "t.db"
    with ModelRegistry(path, plugin_manager=sqlite_manager) as registry:
        registry.register_model("parent", "1", "p.pt", "lm", model_size_mb=0, memory_req_gb=0)
        pid = os.fork()
        if pid == 0:  # the child: register through the inherited store, then leave at once
            code = 1
            try:
                registry.register_model(
                    "child", "1", "c.pt", "lm", model_size_mb=0, memory_req_gb=0
                )
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert registry.get_model(name="child").checkpoint_path == "c.pt"
        registry.register_model("parent", "2", "p2.pt", "lm", model_size_mb=0, memory_req_gb=0)
    store = open_store(path, "models", sqlite_manager)
    store.close()
    with pytest.raises(StorageError, match="is closed; open a new one"):
        store.get_model(1)


# -- bad input ---------------------------------------------------------------------------


def test_x1_names_with_dots_and_slashes_write_nothing_outside_the_root(
    tmp_path: Path, sqlite_manager: PluginManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.chdir(root)
    outside_before = sorted(p.name for p in tmp_path.iterdir())
    hostile = ["../../escape", "/etc/passwd", "a/b/c", "..", "x" * 100 + "/../y"]
    with (
        ModelRegistry("treadle.db", plugin_manager=sqlite_manager) as registry,
        ExperimentDB("treadle.db", plugin_manager=sqlite_manager) as db,
    ):
        for index, name in enumerate(hostile):
            model_id = registry.register_model(
                name, name, name, name, {name: 1.0}, model_size_mb=0, memory_req_gb=0
            )
            registry.promote_model(model_id, name)
            assert registry.get_model(model_id=model_id).name == name
            run_id = db.log_run(name, {name: name}, notes=name)
            db.log_metric(run_id, name, float(index), epoch=0, step=index)
            assert db.get_run(run_id).run_name == name
    assert sorted(p.name for p in tmp_path.iterdir()) == outside_before
    assert sorted(p.name for p in root.iterdir()) == ["treadle.db"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bad\x00name", "control character"),
        ("new\nline", "control character"),
        ("x" * 10_000, "10000 characters long"),
        ("", "empty"),
        ("   ", "empty"),
    ],
)
def test_x1_nul_control_characters_and_huge_names_are_refused(
    name: str, message: str, tmp_path: Path, sqlite_manager: PluginManager
) -> None:
    with ModelRegistry(tmp_path / "t.db", plugin_manager=sqlite_manager) as registry:
        with pytest.raises(ConfigError, match=message):
            registry.register_model(name, "1.0.0", "m.pt", "lm", model_size_mb=0, memory_req_gb=0)
        model_id = registry.register_model(
            "ok", "1.0.0", "m.pt", "lm", model_size_mb=0, memory_req_gb=0
        )
        with pytest.raises(ConfigError, match=message):
            registry.promote_model(model_id, name)
        assert len(registry.list_models()) == 1
    with ExperimentDB(tmp_path / "t.db", plugin_manager=sqlite_manager) as db:
        with pytest.raises(ConfigError, match=message):
            db.log_run(name, {})
        run_id = db.log_run("ok", {})
        with pytest.raises(ConfigError, match=message):
            db.log_metric(run_id, name, 1.0)
        assert db.get_metrics(run_id).empty
        assert len(db.list_runs()) == 1


def test_x2_quotes_and_sql_in_every_name_leave_the_schema_intact(
    tmp_path: Path, sqlite_manager: PluginManager
) -> None:
    path = tmp_path / "t.db"
    with (
        ModelRegistry(path, plugin_manager=sqlite_manager),
        ExperimentDB(path, plugin_manager=sqlite_manager),
    ):
        pass
    schema_before = _tables(path)
    with (
        ModelRegistry(path, plugin_manager=sqlite_manager) as registry,
        ExperimentDB(path, plugin_manager=sqlite_manager) as db,
    ):
        for text in TRICKY_TEXT:
            model_id = registry.register_model(
                text, text, text, text, {text: 0.5}, text, model_size_mb=0, memory_req_gb=0
            )
            registry.promote_model(model_id, text)
            run_id = db.log_run(text, {text: text}, notes=text)
            db.log_metric(run_id, text, 0.25, epoch=1, step=1)
            assert db.get_best_run(text)["run_name"] == text
            assert registry.get_model(tag=text, name=text).metrics == {text: 0.5}
            assert list(db.get_metrics(run_id)["name"]) == [text]
    assert _tables(path) == schema_before
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    connection.close()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"learning_rate": math.nan}, r"config\.learning_rate is nan"),
        ({"nested": {"scale": math.inf}}, r"config\.nested\.scale is inf"),
        ({"layers": [1, {2, 3}]}, r"config\.layers\[1\] holds a set"),
        ({1: "int key"}, "key that is not a string: 1"),
        ({"callback": print}, r"config\.callback holds a builtin_function_or_method"),
    ],
)
def test_x3_configs_that_are_not_json_data_are_refused_naming_the_key(
    config: dict[Any, Any], message: str, tmp_path: Path, sqlite_manager: PluginManager
) -> None:
    with ExperimentDB(tmp_path / "t.db", plugin_manager=sqlite_manager) as db:
        with pytest.raises(ConfigError, match=message):
            db.log_run("bad-config", config)
        assert db.list_runs().empty
        run_id = db.log_run("good", {"learning_rate": 1e-4})
        with pytest.raises(ConfigError, match="summary"):
            db.update_run(run_id, summary={"best": math.nan})
        assert db.get_run(run_id).summary == {}


def test_x3_deep_huge_or_nul_holding_values_are_refused_naming_the_field(
    tmp_path: Path, sqlite_manager: PluginManager
) -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(100_000):
        node["a"] = {}
        node = node["a"]
    with ExperimentDB(tmp_path / "t.db", plugin_manager=sqlite_manager) as db:
        with pytest.raises(ConfigError, match=r"config\.a\.a.* nests deeper than 64 levels"):
            db.log_run("deep", deep)
        with pytest.raises(ConfigError, match=r"config is 5\.0 MiB as JSON; .* at most 4 MiB"):
            db.log_run("huge", {"blob": "x" * 5 * 2**20})
        with pytest.raises(
            ConfigError, match=r"notes holds a NUL character \(\\x00\) at position 1"
        ):
            db.log_run("nul", {}, notes="a\x00b")
        assert db.list_runs().empty
        run_id = db.log_run("ok", {})
        with pytest.raises(ConfigError, match=r"summary\.a\.a.* nests deeper"):
            db.update_run(run_id, summary=deep)
        assert db.get_run(run_id).summary == {}


def test_x3_bad_metric_values_and_arguments_name_themselves(
    tmp_path: Path, sqlite_manager: PluginManager
) -> None:
    with ExperimentDB(tmp_path / "t.db", plugin_manager=sqlite_manager) as db:
        run_id = db.log_run("r", {})
        with pytest.raises(ConfigError, match="metric 'acc' must be a number: 'high'"):
            db.log_metric(run_id, "acc", "high")  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="epoch must be an integer >= 0"):
            db.log_metric(run_id, "acc", 1.0, epoch=-1)
        with pytest.raises(ConfigError, match="run status must be one of"):
            db.update_run(run_id, status="paused")
        with pytest.raises(ConfigError, match="mode must be 'min' or 'max'"):
            db.get_best_run("acc", mode="best")
        with pytest.raises(UnknownNameError, match="No run logged a number for metric 'acc'"):
            db.get_best_run("acc")
    with ModelRegistry(tmp_path / "t.db", plugin_manager=sqlite_manager) as registry:
        with pytest.raises(ConfigError, match="metrics 'val_loss' must be a number"):
            registry.register_model("m", "1", "m.pt", "lm", {"val_loss": "low"})  # type: ignore[dict-item]
        assert registry.list_models().empty
