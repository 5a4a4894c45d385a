"""Storage under concurrency and crashes (RELIABILITY D1, D2, R2): several processes writing
one SQLite file at once, promotions racing for one tag, and kill -9 inside a transaction."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

WRITERS = 4
#: D1 asks for 10 s; the suite runs a shorter window by default (TREADLE_D1_SECONDS=10 for
#: the full one).
D1_SECONDS = float(os.environ.get("TREADLE_D1_SECONDS", "2.5"))


def _ready(results: Any) -> bool:
    results.put("ready")
    return True


def _manager() -> Any:
    import treadle_sqlite.plugin
    from treadle.testing import isolated_plugin_manager

    return isolated_plugin_manager(("sqlite", treadle_sqlite.plugin))


def _writer(location: str, worker: int, seconds: float, start: Any, results: Any) -> None:
    """Register models, promote tags and log metric batches until the time is up."""
    from treadle.experiments import ExperimentDB
    from treadle.model_registry import ModelRegistry

    errors: list[str] = []
    ready = False
    registered: list[int] = []
    rows = 0
    try:
        manager = _manager()
        registry = ModelRegistry(location, plugin_manager=manager)
        db = ExperimentDB(location, plugin_manager=manager)
        run_id = db.log_run(f"writer-{worker}", {"worker": worker})
        ready = _ready(results)
        start.wait()
        deadline = time.monotonic() + seconds
        index = 0
        while time.monotonic() < deadline:
            model_id = registry.register_model(
                f"model-{worker}",
                f"1.0.{index}",
                "m.pt",
                "classification",
                {"val_loss": 1.0 / (index + 1)},
                training_run_id=run_id,
                model_size_mb=0,
                memory_req_gb=0,
            )
            registered.append(model_id)
            if index % 5 == 0:
                registry.promote_model(model_id, "production")
            batch = [
                ("train/loss", float(step), index, index * 20 + step, time.time())
                for step in range(20)
            ]
            rows += db.store.add_metrics(run_id, None, batch)
            db.log_metric(run_id, "val/loss", 1.0 / (index + 1), epoch=index)
            rows += 1
            index += 1
        registry.close()
        db.close()
    except Exception:
        errors.append(traceback.format_exc())
        if not ready:
            _ready(results)
    results.put(("writer", worker, errors, registered, rows))


def _reader(location: str, seconds: float, start: Any, results: Any) -> None:
    """List, compare and query while the writers write."""
    from treadle.errors import UnknownNameError
    from treadle.experiments import ExperimentDB
    from treadle.model_registry import ModelRegistry

    errors: list[str] = []
    ready = False
    reads = 0
    try:
        manager = _manager()
        registry = ModelRegistry(location, plugin_manager=manager)
        db = ExperimentDB(location, plugin_manager=manager)
        registry.list_models()  # import pandas before the clock starts
        ready = _ready(results)
        start.wait()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            frame = registry.list_models(limit=20)
            if len(frame):
                registry.compare_models([int(model_id) for model_id in frame["model_id"][:5]])
            db.list_runs()
            with contextlib.suppress(UnknownNameError):
                db.get_best_run("val/loss")
            reads += 1
        registry.close()
        db.close()
    except Exception:
        errors.append(traceback.format_exc())
        if not ready:
            _ready(results)
    results.put(("reader", -1, errors, [], reads))


@pytest.mark.slow
def test_d1_four_writers_and_a_reader_lose_nothing_and_never_see_a_lock(tmp_path: Path) -> None:
    from treadle.experiments import ExperimentDB
    from treadle.model_registry import ModelRegistry

    location = str(tmp_path / "treadle.db")
    with ModelRegistry(location, plugin_manager=_manager()):
        pass  # create the file once, as a first `treadle train` would
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    results = context.Queue()
    processes = [
        context.Process(target=_writer, args=(location, worker, D1_SECONDS, start, results))
        for worker in range(WRITERS)
    ]
    processes.append(context.Process(target=_reader, args=(location, D1_SECONDS, start, results)))
    _start_together(processes, start, results)
    reports = [results.get(timeout=60 + D1_SECONDS) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    errors = [error for report in reports for error in report[2]]
    assert not errors, "\n".join(errors)
    writers = [report for report in reports if report[0] == "writer"]
    reader = next(report for report in reports if report[0] == "reader")
    assert reader[4] > 0, "the reader never completed a read"
    ids = [model_id for report in writers for model_id in report[3]]
    assert len(ids) == len(set(ids)), "two registrations got one id"
    with ModelRegistry(location, plugin_manager=_manager()) as registry:
        frame = registry.list_models()
        assert sorted(frame["model_id"]) == sorted(ids), "a registration was lost"
        for _, worker, _, registered, _ in writers:
            versions = set(frame[frame["name"] == f"model-{worker}"]["version"])
            assert versions == {f"1.0.{index}" for index in range(len(registered))}
        holders = frame[frame["tags"].str.contains("production")]
        assert sorted(holders["name"]) == [f"model-{worker}" for worker in range(WRITERS)]
    with ExperimentDB(location, plugin_manager=_manager()) as db:
        for _, worker, _, _, rows in writers:
            (run,) = db.find_runs(name=f"writer-{worker}")
            assert len(db.metric_rows([run.run_id])) == rows, f"writer {worker} lost rows"
    assert min(len(report[3]) for report in writers) > 3, "a writer was starved"


def _start_together(processes: list[Any], start: Any, results: Any) -> None:
    """Start the processes, wait until each has imported and opened its stores, then let
    them all go at once."""
    for process in processes:
        process.start()
    for _ in processes:
        assert results.get(timeout=60) == "ready"
    start.set()


def _promoter(location: str, model_id: int, seconds: float, start: Any, results: Any) -> None:
    from treadle.model_registry import ModelRegistry

    errors: list[str] = []
    ready = False
    promotions = 0
    try:
        registry = ModelRegistry(location, plugin_manager=_manager())
        ready = _ready(results)
        start.wait()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            registry.promote_model(model_id, "production")
            promotions += 1
        registry.close()
    except Exception:
        errors.append(traceback.format_exc())
        if not ready:
            _ready(results)
    results.put((model_id, errors, promotions))


@pytest.mark.slow
def test_r2_racing_promotions_leave_exactly_one_holder_at_all_times(tmp_path: Path) -> None:
    from treadle.model_registry import ModelRegistry

    location = str(tmp_path / "treadle.db")
    with ModelRegistry(location, plugin_manager=_manager()) as registry:
        ids = [
            registry.register_model(
                "gpt", f"1.{index}.0", "m.pt", "lm", model_size_mb=0, memory_req_gb=0
            )
            for index in range(WRITERS)
        ]
        registry.promote_model(ids[0], "production")
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    results = context.Queue()
    seconds = 2.0
    processes = [
        context.Process(target=_promoter, args=(location, model_id, seconds, start, results))
        for model_id in ids
    ]
    _start_together(processes, start, results)
    observed: set[int] = set()
    checks = 0
    violations: list[str] = []
    with ModelRegistry(location, plugin_manager=_manager()) as registry:
        connection = sqlite3.connect(location, timeout=30)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            count = connection.execute(
                "SELECT COUNT(*) FROM model_tags WHERE name = 'gpt' AND tag = 'production'"
            ).fetchone()[0]
            holder = registry.get_model(tag="production")
            if count != 1:
                violations.append(f"{count} holders")
            holders = [entry.model_id for entry in registry.store.find_models(tag="production")]
            if len(holders) != 1:
                violations.append(f"holders {holders}")
            observed.add(holder.model_id)
            checks += 1
        connection.close()
    reports = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    errors = [error for report in reports for error in report[1]]
    assert not errors, "\n".join(errors)
    assert not violations, violations[:5]
    assert checks > 10
    assert all(report[2] > 0 for report in reports), "a promoter never promoted"
    assert len(observed) > 1, "the tag never moved while being watched"


# -- D2: kill -9 inside a transaction ------------------------------------------------------

_KILLED_BATCH = textwrap.dedent(
    """
    import sys, time
    import treadle_sqlite.plugin
    from treadle.experiments import ExperimentDB
    from treadle.testing import isolated_plugin_manager

    manager = isolated_plugin_manager(("sqlite", treadle_sqlite.plugin))
    db = ExperimentDB(sys.argv[1], plugin_manager=manager)
    run_id = db.log_run("doomed", {"lr": 0.1})
    db.store.add_metrics(run_id, None, [("loss", 1.0, 0, step, 0.0) for step in range(100)])

    def rows():
        for step in range(100, 5000):
            if step == 2500:
                print("inside", run_id, flush=True)
                time.sleep(60)
            yield ("loss", 0.5, 1, step, 0.0)

    db.store.add_metrics(run_id, None, rows())
    print("committed", flush=True)
    """
)

_KILLED_REGISTRATIONS = textwrap.dedent(
    """
    import sys
    import treadle_sqlite.plugin
    from treadle.model_registry import ModelRegistry
    from treadle.testing import isolated_plugin_manager

    manager = isolated_plugin_manager(("sqlite", treadle_sqlite.plugin))
    registry = ModelRegistry(sys.argv[1], plugin_manager=manager)
    for index in range(100000):
        model_id = registry.register_model(
            "gpt", f"1.0.{index}", "m.pt", "lm", {"val_loss": 0.5}, tags=["production"],
            model_size_mb=1.0, memory_req_gb=1.0,
        )
        print(model_id, flush=True)
    """
)


def _start(code: str, location: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, str(location)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _integrity(location: Path) -> str:
    connection = sqlite3.connect(location)
    try:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        connection.close()


@pytest.mark.slow
def test_d2_kill_9_inside_a_metrics_transaction_leaves_none_of_its_rows(tmp_path: Path) -> None:
    from treadle.experiments import ExperimentDB

    location = tmp_path / "treadle.db"
    child = _start(_KILLED_BATCH, location)
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.startswith("inside"), f"child said {line!r}; stderr: {child.communicate()[1]}"
    run_id = int(line.split()[1])
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert _integrity(location) == "ok"
    with ExperimentDB(location, plugin_manager=_manager()) as db:
        metrics = db.get_metrics(run_id)
        assert len(metrics) == 100, "rows of the killed transaction were kept"
        assert set(metrics["epoch"]) == {0}
        assert db.get_run(run_id).run_name == "doomed"
        db.log_metric(run_id, "loss", 0.25, epoch=1, step=100)  # the store works on
        assert len(db.get_metrics(run_id)) == 101


@pytest.mark.slow
def test_d2_kill_9_amid_registrations_leaves_whole_records(tmp_path: Path) -> None:
    from treadle.model_registry import ModelRegistry

    location = tmp_path / "treadle.db"
    child = _start(_KILLED_REGISTRATIONS, location)
    assert child.stdout is not None
    printed: list[int] = []
    while len(printed) < 30:
        line = child.stdout.readline()
        assert line, f"child ended early: {child.communicate()[1]}"
        printed.append(int(line))
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert _integrity(location) == "ok"
    with ModelRegistry(location, plugin_manager=_manager()) as registry:
        frame = registry.list_models()
        assert set(printed) <= set(frame["model_id"]), "a committed registration was lost"
        assert frame["model_size_mb"].notna().all()
        assert (frame["val_loss"] == 0.5).all()
        holder = registry.get_model(tag="production")
        assert holder.model_id == int(frame["model_id"].max()), "the tag lags its transaction"
        registry.register_model("gpt", "2.0.0", "m.pt", "lm", model_size_mb=0, memory_req_gb=0)
