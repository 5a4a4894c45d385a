"""SQLite faults said as treadle's errors (issue 14): a read-only file or folder still reads, a
full disk and a damaged page give a ``StorageError`` naming the file and the fix, and nothing
stored before is changed.

Read-only cases run in a child process without the power to override file permissions (as
root, ``setpriv`` drops ``CAP_DAC_OVERRIDE``), so the chmod is real. A full disk is SQLite's own
"database or disk is full" (``SQLITE_FULL``, the code a full disk gives), raised by capping the
file's page count: no file system of a chosen size can be mounted here without root tricks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import treadle_sqlite.plugin
from treadle.errors import StorageError
from treadle.experiments import ExperimentDB
from treadle.jobs.manager import JobManager
from treadle.model_registry import ModelRegistry
from treadle.plugins import PluginManager, make_plugin_manager
from treadle.testing import isolated_plugin_manager

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sqlite_manager() -> PluginManager:
    return isolated_plugin_manager(("sqlite", treadle_sqlite.plugin))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _store_with_data(path: Path, manager: PluginManager) -> dict[str, Any]:
    with (
        ModelRegistry(path, plugin_manager=manager) as registry,
        ExperimentDB(path, plugin_manager=manager) as db,
    ):
        run_id = db.log_run("kept", {"lr": 0.1}, notes="before the fault")
        db.log_metrics(run_id, {"loss": 0.5, "acc": 0.9}, epoch=0, step=1)
        model_id = registry.register_model(
            "m", "1.0.0", "m.pt", "lm", {"val_loss": 0.5}, model_size_mb=1, memory_req_gb=1
        )
        registry.promote_model(model_id, "production")
    return {"run_id": run_id, "model_id": model_id}


_READER = textwrap.dedent(
    """
    import json, sys
    import treadle_sqlite.plugin
    from treadle.errors import StorageError
    from treadle.experiments import ExperimentDB
    from treadle.model_registry import ModelRegistry
    from treadle.testing import isolated_plugin_manager

    path, model_id, run_id = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    manager = isolated_plugin_manager(("sqlite", treadle_sqlite.plugin))
    report = {}
    with ModelRegistry(path, plugin_manager=manager) as registry:
        report["tag"] = registry.get_model(tag="production").model_id
        report["versions"] = list(registry.list_models()["version"])
        try:
            registry.register_model("m", "2.0.0", "m2.pt", "lm", model_size_mb=1, memory_req_gb=1)
        except StorageError as err:
            report["write_error"] = str(err)
    with ExperimentDB(path, plugin_manager=manager) as db:
        report["notes"] = db.get_run(run_id).notes
        report["losses"] = list(db.get_metrics(run_id, ["loss"])["value"])
        try:
            db.log_metric(run_id, "loss", 0.1, step=2)
        except StorageError as err:
            report["metric_error"] = str(err)
    print(json.dumps(report))
    """
)


def _run_without_write_access(path: Path, ids: dict[str, Any]) -> dict[str, Any]:
    argv = [sys.executable, "-c", _READER, str(path), str(ids["model_id"]), str(ids["run_id"])]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: file permissions cannot bind root")
        argv = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--", *argv]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def _assert_read_but_not_written(report: dict[str, Any], ids: dict[str, Any], path: Path) -> None:
    assert report["tag"] == ids["model_id"]
    assert report["versions"] == ["1.0.0"]
    assert report["notes"] == "before the fault"
    assert report["losses"] == [0.5]
    for key in ("write_error", "metric_error"):
        assert "is read-only" in report[key], report[key]
        assert str(path.resolve()) in report[key], report[key]
        assert "permissions" in report[key], report[key]


def test_a_read_only_store_file_reads_and_refuses_writes_by_name(
    tmp_path: Path, sqlite_manager: PluginManager
) -> None:
    path = tmp_path / "treadle.db"
    ids = _store_with_data(path, sqlite_manager)
    before = _digest(path)
    path.chmod(0o444)
    try:
        report = _run_without_write_access(path, ids)
    finally:
        path.chmod(0o644)
    _assert_read_but_not_written(report, ids, path)
    assert _digest(path) == before


def test_a_store_in_a_read_only_folder_reads_and_refuses_writes_by_name(
    tmp_path: Path, sqlite_manager: PluginManager
) -> None:
    """A read-only mount, as a chmod'ed folder: SQLite cannot create the -wal and -shm files
    there, so the store opens immutable."""
    folder = tmp_path / "mount"
    folder.mkdir()
    path = folder / "treadle.db"
    ids = _store_with_data(path, sqlite_manager)
    assert sorted(p.name for p in folder.iterdir()) == ["treadle.db"]
    before = _digest(path)
    path.chmod(0o444)
    folder.chmod(0o555)
    try:
        report = _run_without_write_access(path, ids)
    finally:
        folder.chmod(0o755)
        path.chmod(0o644)
    _assert_read_but_not_written(report, ids, path)
    assert _digest(path) == before
    assert sorted(p.name for p in folder.iterdir()) == ["treadle.db"]


def _cap_growth(store: Any) -> None:
    with store.database.session() as db:
        pages = db.one("PRAGMA page_count")[0]
        db.one(f"PRAGMA max_page_count = {pages}")


def test_a_full_disk_is_named_and_the_batch_leaves_nothing(
    tmp_path: Path, sqlite_manager: PluginManager
) -> None:
    path = tmp_path / "treadle.db"
    ids = _store_with_data(path, sqlite_manager)
    with ExperimentDB(path, plugin_manager=sqlite_manager) as db:
        before = db.metric_rows([ids["run_id"]], include_superseded=True)
        _cap_growth(db.store)
        rows = [("loss", 1.0 / (step + 1), 0, step, 0.0) for step in range(2, 20_000)]
        with pytest.raises(StorageError, match=r"the disk is full.*rolled back") as caught:
            db.store.add_metrics(ids["run_id"], None, rows)
        message = str(caught.value)
        assert str(path.resolve()) in message
        assert "free space" in message
        assert db.metric_rows([ids["run_id"]], include_superseded=True) == before
        with pytest.raises(StorageError, match="the disk is full"):
            db.log_run("x" * 200, {"blob": "y" * 200_000})
        assert [run.run_name for run in db.find_runs()] == ["kept"]
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    connection.close()


def test_a_full_disk_fails_a_job_submission_by_name(tmp_path: Path) -> None:
    manager = JobManager(
        tmp_path / "jobs.db",
        plugin_manager=make_plugin_manager(
            load_entry_points=False, plugins=[("sqlite", treadle_sqlite.plugin)]
        ),
    )
    with manager:
        _cap_growth(manager.store)
        with pytest.raises(StorageError, match=r"jobs\.db: the disk is full"):
            manager.store.enqueue("noop", {"x": "y" * 100_000}, priority=5, max_retries=0)
        assert manager.store.counts() == {}


def _damage_table(path: Path, table: str) -> None:
    with sqlite3.connect(path) as connection:
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        root = connection.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)
        ).fetchone()[0]
    connection.close()
    with path.open("r+b") as file:
        file.seek((root - 1) * page_size)
        file.write(b"\xff" * page_size)


def test_a_damaged_page_is_named_with_the_fix_and_left_as_it_is(
    tmp_path: Path, sqlite_manager: PluginManager
) -> None:
    path = tmp_path / "treadle.db"
    ids = _store_with_data(path, sqlite_manager)
    _damage_table(path, "models")
    before = _digest(path)
    with ModelRegistry(path, plugin_manager=sqlite_manager) as registry:
        with pytest.raises(StorageError, match=r"is damaged.*\.recover") as caught:
            registry.get_model(model_id=ids["model_id"])
        assert str(path.resolve()) in str(caught.value)
        with pytest.raises(StorageError, match="is damaged"):
            registry.register_model("m", "2", "m.pt", "lm", model_size_mb=0, memory_req_gb=0)
    with ExperimentDB(path, plugin_manager=sqlite_manager) as db:  # undamaged tables read
        assert db.get_run(ids["run_id"]).notes == "before the fault"
    assert _digest(path) == before
    done = subprocess.run(
        [sys.executable, "-m", "treadle", "registry", "list", "--location", str(path)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "is damaged" in done.stderr
    assert "Traceback" not in done.stderr
    assert _digest(path) == before


def test_a_damaged_schema_table_is_refused_at_open_unchanged(
    tmp_path: Path, sqlite_manager: PluginManager
) -> None:
    path = tmp_path / "treadle.db"
    _store_with_data(path, sqlite_manager)
    _damage_table(path, "treadle_schema")
    before = _digest(path)
    with pytest.raises(StorageError, match=r"is damaged.*\.recover"):
        ModelRegistry(path, plugin_manager=sqlite_manager)
    assert _digest(path) == before
