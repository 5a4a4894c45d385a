"""The experiment store's schema version 2 (issue 13: owner, heartbeat and lease columns;
statuses ``interrupted`` and ``died``) migrates a version 1 store forward on open, in SQLite
(which rebuilds ``runs``: its ``CHECK`` cannot be altered) and PostgreSQL, keeping every run,
attempt, series and metric row and the run id counter."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from treadle.errors import StorageError
from treadle.experiments import ExperimentDB
from treadle.sql import Database
from treadle.sql.experiment_store import COMPONENT
from treadle.testing import isolated_plugin_manager

pytest_plugins = ["tests.postgres_fixtures"]


def _fill_version_1(database: Database) -> dict[str, Any]:
    """Three runs, an attempt, series and metrics (one superseded), written as version 1
    held them (its own SQL: the store's now names version 2's columns), then a fourth run
    deleted, so the id counter is ahead of every row."""
    with database.transaction() as db:
        ids = []
        for name, status, config, notes, run_dir, attempt in (
            ("a", "running", "{}", "", "/r/a", 2),
            ("b", "completed", '{"x": 1}', "n", None, 1),
            ("c", "failed", "{}", "", None, 1),
            ("gone", "failed", "{}", "", None, 1),
        ):
            row = db.one(
                "INSERT INTO runs (run_name, status, config, notes, run_dir, created_at,"
                " attempt) VALUES (?, ?, ?, ?, ?, '2026-01-01', ?) RETURNING run_id",
                (name, status, config, notes, run_dir, attempt),
            )
            ids.append(int(row["run_id"]))
            db.execute(
                "INSERT INTO run_attempts (run_id, attempt, started_at) VALUES (?, 1, 'x')",
                (ids[-1],),
            )
        first, second, third, gone = ids
        db.execute(
            "INSERT INTO run_attempts (run_id, attempt, started_at, resume_step)"
            " VALUES (?, 2, 'x', 1)",
            (first,),
        )
        series = {}
        for run_id, metric in ((first, "loss"), (second, "acc")):
            row = db.one(
                "INSERT INTO run_series (run_id, name) VALUES (?, ?) RETURNING series_id",
                (run_id, metric),
            )
            series[run_id] = int(row["series_id"])
        for run_id, attempt, value, step, superseded in (
            (first, 1, 1.0, 1, None),
            (first, 1, 0.5, 2, 2),
            (first, 2, 0.7, 2, None),
            (second, 1, 0.9, 1, None),
        ):
            db.execute(
                "INSERT INTO run_metrics (series_id, attempt, value, epoch, step, logged_at,"
                " superseded_by) VALUES (?, ?, ?, 0, ?, ?, ?)",
                (series[run_id], attempt, value, step, float(step), superseded),
            )
        db.execute("DELETE FROM run_attempts WHERE run_id = ?", (gone,))
        db.execute("DELETE FROM runs WHERE run_id = ?", (gone,))
    database.close()
    return {"runs": (first, second, third), "deleted": gone}


def _check_migrated(db: ExperimentDB, filled: dict[str, Any]) -> None:
    first, second, third = filled["runs"]
    runs = {run.run_id: run for run in db.find_runs()}
    assert set(runs) == {first, second, third}
    assert (runs[first].attempt, runs[first].run_dir) == (2, "/r/a")
    assert runs[first].status == "running", "no owner recorded: nothing to judge by"
    assert (runs[second].status, runs[second].config, runs[second].notes) == (
        "completed",
        {"x": 1},
        "n",
    )
    assert runs[second].owner_pid is None
    rows = db.metric_rows([first], include_superseded=True)
    assert [(row.attempt, row.step, row.value, row.superseded) for row in rows] == [
        (1, 1, 1.0, False),
        (1, 2, 0.5, True),
        (2, 2, 0.7, False),
    ]
    assert [row.value for row in db.metric_rows([second])] == [0.9]
    db.update_run(second, status="died")
    db.update_run(third, status="interrupted")
    assert db.get_run(second).status == "died"
    assert db.get_run(third).status == "interrupted"
    assert db.log_run("d", {}) > filled["deleted"], "the id of a deleted run was reused"


def test_a_version_1_sqlite_store_migrates_keeping_every_row(tmp_path: Path) -> None:
    import treadle_sqlite.plugin
    from treadle_sqlite.connection import open_store_database
    from treadle_sqlite.experiment_store import MIGRATIONS

    path = tmp_path / "old.db"
    filled = _fill_version_1(open_store_database(path, COMPONENT, MIGRATIONS[:1]))
    manager = isolated_plugin_manager(("sqlite", treadle_sqlite.plugin))
    with ExperimentDB(path, plugin_manager=manager) as db:
        _check_migrated(db, filled)
    with sqlite3.connect(path) as connection:
        version = connection.execute(
            "SELECT version FROM treadle_schema WHERE component = 'experiments'"
        ).fetchone()
        assert version == (2,)
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
        # the rebuilt table still refuses a status nobody knows, and its children refer to it
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            connection.execute("UPDATE runs SET status = 'bogus'")
        schema = connection.execute(
            "SELECT sql FROM sqlite_master WHERE name IN ('run_attempts', 'run_series')"
        ).fetchall()
        assert all("REFERENCES runs " in sql for (sql,) in schema), schema
        indexes = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        assert {"runs_run_dir", "runs_status"} <= indexes
    connection.close()
    # the foreign keys are on again for the store's own connection
    with (
        ExperimentDB(path, plugin_manager=manager) as db,
        db.store.database.session() as session,  # type: ignore[attr-defined]
    ):
        assert session.one("PRAGMA foreign_keys")[0] == 1


def test_a_version_1_postgres_store_migrates_keeping_every_row(postgres_url: str) -> None:
    from treadle_postgres.connection import open_store_database
    from treadle_postgres.experiment_store import MIGRATIONS

    filled = _fill_version_1(open_store_database(postgres_url, COMPONENT, MIGRATIONS[:1]))
    with ExperimentDB(postgres_url) as db:
        _check_migrated(db, filled)
        database = db.store.database  # type: ignore[attr-defined]
        with database.session() as session:
            row = session.one("SELECT version FROM treadle_schema WHERE component = 'experiments'")
            assert row["version"] == 2
        with pytest.raises(StorageError, match="runs_status_check"), database.session() as session:
            session.execute("UPDATE runs SET status = 'bogus'")
