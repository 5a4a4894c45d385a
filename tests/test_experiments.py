"""ExperimentDB and the ``experiment`` logger: runs, statuses, batched metrics, honest history
across resumes, and the Trainer recording its runs."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import pytest

import treadle_sqlite.plugin
import treadle_tracking.plugin
from tests.trainer_fixtures import (
    TinyClassifier,
    classification_task,
    engine_plugin_manager,
    loaders,
    needs_engine,
    small_config,
)
from treadle import hookimpl
from treadle.config import TrainingConfig
from treadle.engine.binding import configure_run
from treadle.engine.dispatch import LIFECYCLE_HOOKS, LifecycleDispatch
from treadle.errors import StorageError
from treadle.experiments import ExperimentDB
from treadle.model_registry import ModelRegistry
from treadle.plugins import PluginManager
from treadle.testing import check_hookimpls, isolated_plugin_manager
from treadle_tracking.logger import ExperimentLogger


@pytest.fixture
def manager() -> PluginManager:
    return isolated_plugin_manager(("sqlite", treadle_sqlite.plugin))


def _rows(location: Path) -> int:
    connection = sqlite3.connect(location)
    try:
        return int(connection.execute("SELECT COUNT(*) FROM run_metrics").fetchone()[0])
    finally:
        connection.close()


def test_the_spec_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = TrainingConfig(epochs=3, experiment_location=None)
    db = ExperimentDB("experiments.db")
    run_id = db.log_run(run_name="baseline-v1", config=config.to_dict(), notes="Initial baseline")
    db.log_metric(run_id, "train/loss", 0.42, epoch=5)
    db.log_metric(run_id, "val/loss", 0.38, epoch=5)
    best = db.get_best_run("val/loss", mode="min")
    assert (
        f"Best: {best['run_name']} (loss={best['best_value']:.4f})"
        == "Best: baseline-v1 (loss=0.3800)"
    )
    assert TrainingConfig.from_dict(db.get_run(run_id).config) == config
    db.close()
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["experiments.db"], (
        "a metric name with '/' made a folder"
    )


def test_log_run_takes_a_config_object_and_statuses(tmp_path: Path, manager: PluginManager) -> None:
    config = TrainingConfig(epochs=2, experiment_location=None)
    with ExperimentDB(tmp_path / "e.db", plugin_manager=manager) as db:
        run_id = db.log_run("cfg", config)
        assert TrainingConfig.from_dict(db.get_run(run_id).config) == config
        done = db.log_run("imported", {}, status="completed")
        assert db.get_run(done).ended_at is not None
        db.update_run(run_id, status="completed")
        assert [run.run_id for run in db.find_runs(status="completed")] == [done, run_id]


def test_metrics_frames_are_long_wide_and_typed(tmp_path: Path, manager: PluginManager) -> None:
    with ExperimentDB(tmp_path / "e.db", plugin_manager=manager) as db:
        run_id = db.log_run("frames", {})
        db.log_metrics(run_id, {"train_loss": 1.0, "val_loss": 1.2}, epoch=0, step=8)
        db.log_metrics(run_id, {"train_loss": 0.6, "val_loss": math.nan}, epoch=1, step=16)
        db.log_metric(run_id, "note_free", 3.0)
        frame = db.get_metrics(run_id)
        assert list(frame.columns) == [
            "run_id",
            "attempt",
            "name",
            "value",
            "epoch",
            "step",
            "logged_at",
            "superseded",
        ]
        assert str(frame["step"].dtype) == "Int64"
        assert frame["logged_at"].iloc[0].endswith("+00:00")
        history = db.get_history(run_id)
        assert list(history.columns) == ["epoch", "train_loss", "val_loss"]
        assert math.isnan(history["val_loss"].iloc[1])
        empty = db.log_run("empty", {})
        assert db.get_history(empty).empty
        assert db.get_metrics(empty).empty
        comparison = db.compare_runs([run_id, empty], reduce="max")
        assert comparison["train_loss"].tolist()[0] == 1.0
        assert comparison["val_loss"].tolist()[0] == 1.2, "NaN must not win a max"


# -- the experiment logger ---------------------------------------------------------------


def test_the_plugin_registers_the_logger_and_valid_hooks() -> None:
    assert check_hookimpls(treadle_tracking.plugin) == []
    assert check_hookimpls(ExperimentLogger) == [], "its run's hooks fit their specs"
    manager = isolated_plugin_manager(("tracking", treadle_tracking.plugin))
    assert manager.registry("loggers").get("experiment") is ExperimentLogger


def test_per_step_rows_wait_for_the_epoch_end(tmp_path: Path) -> None:
    location = tmp_path / "e.db"
    config = TrainingConfig(experiment_location=str(location), run_name="batched")
    sink = ExperimentLogger(training_config=config, run_dir=tmp_path / "run")
    sink.begin(global_step=0)
    for step in range(1, 101):
        sink.log_metrics({"train/batch_loss": 1.0 / step, "train/learning_rate": 1e-3}, step)
    assert _rows(location) == 0, "per-step rows were written one by one"
    sink.log_metrics({"epoch": 0, "train_loss": 0.5, "val_loss": 0.6}, 100)
    assert _rows(location) == 202
    sink.log_metrics({"train/batch_loss": 0.1}, 101)
    sink.close()
    sink.close()
    with pytest.raises(ValueError, match="closed"):
        sink.log_metrics({"x": 1.0}, 1)
    with ExperimentDB(location) as db:
        (run,) = db.find_runs(name="batched")
        assert run.status == "completed"
        assert run.run_dir == str((tmp_path / "run").resolve())
        frame = db.get_metrics(run.run_id)
        assert len(frame) == 203
        assert set(frame[frame["step"] <= 100]["epoch"]) == {0}
        assert list(frame[frame["step"] == 101]["epoch"]) == [1], "the next epoch's rows"
        assert "epoch" not in set(frame["name"])


def test_rows_are_flushed_by_count_and_by_age(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = tmp_path / "e.db"
    sink = ExperimentLogger(location=location, run_name="flush", flush_rows=10, flush_seconds=60)
    for step in range(9):
        sink.log_metrics({"loss": 1.0}, step)
    assert _rows(location) == 0
    sink.log_metrics({"loss": 1.0}, 9)
    assert _rows(location) == 10
    clock = [1000.0]
    monkeypatch.setattr("treadle_tracking.logger.time.time", lambda: clock[0])
    sink.log_metrics({"loss": 1.0}, 10)
    clock[0] += 61
    sink.log_metrics({"loss": 1.0}, 11)
    assert _rows(location) == 12
    sink.close()


def test_a_bad_location_fails_before_training(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n" * 100, encoding="utf-8")
    config = TrainingConfig(experiment_location=str(path))
    with pytest.raises(StorageError, match="not an SQLite database"):
        ExperimentLogger(training_config=config, run_dir=tmp_path)


def test_close_while_an_error_is_handled_marks_the_run_failed(tmp_path: Path) -> None:
    location = tmp_path / "e.db"
    sink = ExperimentLogger(location=location, run_name="doomed")
    sink.log_metrics({"loss": 1.0}, 1)
    try:
        raise MemoryError("out of memory")
    except MemoryError:
        sink.close()
    with ExperimentDB(location) as db:
        (run,) = db.find_runs(name="doomed")
    assert (run.status, run.error) == ("failed", "MemoryError: out of memory")
    assert run.ended_at is not None


def test_only_rank_0_records_a_distributed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "1")
    location = tmp_path / "e.db"
    config = TrainingConfig(experiment_location=str(location))
    sink = ExperimentLogger(training_config=config, run_dir=tmp_path)
    assert not sink.is_recording
    state: dict[str, Any] = {}
    sink.treadle_on_training_start(trainer=_view(config, 0))
    sink.treadle_on_save_checkpoint(plugin_state=state)
    assert state == {}, "its hooks do nothing either"
    sink.log_metrics({"epoch": 0, "loss": 1.0}, 1)
    sink.close()
    assert not location.exists()
    monkeypatch.setenv("RANK", "0")
    assert ExperimentLogger(location=location).is_recording


def _view(config: TrainingConfig, global_step: int) -> Any:
    return SimpleNamespace(training_config=config, global_step=global_step, epoch=0)


def test_hooks_resume_the_run_and_supersede_the_dead_attempts_rows(tmp_path: Path) -> None:
    """A run checkpoints at step 10, logs to 14 and dies; the resumed run continues the
    record as attempt 2 from step 10: steps 11-14 of attempt 1 are superseded."""
    location = tmp_path / "e.db"
    config = TrainingConfig(experiment_location=str(location), run_name="resumed")
    first = ExperimentLogger(training_config=config, run_dir=tmp_path / "run")
    first.treadle_on_training_start(trainer=_view(config, 0))
    for step in range(1, 6):
        first.log_metrics({"loss": 10.0 - step}, step)
    first.log_metrics({"epoch": 0, "train_loss": 5.0}, 5)
    for step in range(6, 11):
        first.log_metrics({"loss": 10.0 - step}, step)
    plugin_state: dict[str, Any] = {}
    first.treadle_on_save_checkpoint(plugin_state=plugin_state)
    assert plugin_state["tracking"]["epoch"] == 1
    for step in range(11, 15):
        first.log_metrics({"loss": 10.0 - step}, step)
    first.treadle_on_exception(exception=RuntimeError("killed"))
    with ExperimentDB(location) as db:
        assert db.get_run(first.run_id or 0).status == "failed"

    resumed_config = attrs.evolve(config, resume="auto")
    second = ExperimentLogger(training_config=resumed_config, run_dir=tmp_path / "run")
    second.treadle_on_load_checkpoint(plugin_state=plugin_state)
    second.treadle_on_training_start(trainer=_view(resumed_config, 10))
    assert (second.run_id, second.attempt) == (first.run_id, 2)
    for step in range(11, 16):
        second.log_metrics({"loss": 100.0 + step}, step)
    second.log_metrics({"epoch": 1, "train_loss": 1.0}, 15)
    second.close()
    second.treadle_on_training_end(
        results={"best_checkpoint": tmp_path / "run" / "best.pt", "best_val_loss": math.inf},
    )
    with ExperimentDB(location) as db:
        run = db.get_run(second.run_id or 0)
        assert (run.status, run.attempt, run.error) == ("completed", 2, None)
        assert run.summary == {
            "best_checkpoint": str(tmp_path / "run" / "best.pt"),
            "best_val_loss": None,
        }
        live = db.get_metrics(run.run_id, names=["loss"])
        assert list(live["step"]) == list(range(1, 16)), "a step is missing or duplicated"
        assert list(live["attempt"]) == [1] * 10 + [2] * 5
        assert list(live["epoch"]) == [0] * 5 + [1] * 10
        everything = db.get_metrics(run.run_id, names=["loss"], include_superseded=True)
        dead = everything[everything["superseded"]]
        assert list(dead["step"]) == [11, 12, 13, 14]
        assert db.get_best_run("loss", mode="max")["best_value"] == 115.0
        assert db.compare_runs([run.run_id], ["loss"], reduce="min")["loss"].iloc[0] == 0.0


def test_a_resume_without_tracking_state_finds_the_run_by_its_folder(tmp_path: Path) -> None:
    location = tmp_path / "e.db"
    config = TrainingConfig(experiment_location=str(location))
    first = ExperimentLogger(training_config=config, run_dir=tmp_path / "run-a")
    first.treadle_on_training_start(trainer=_view(config, 0))
    first.log_metrics({"loss": 1.0}, 8)
    first.close()
    second_config = attrs.evolve(config, resume="auto")
    second = ExperimentLogger(training_config=second_config, run_dir=tmp_path / "run-a")
    second.treadle_on_load_checkpoint(plugin_state={})
    second.treadle_on_training_start(trainer=_view(second_config, 4))
    assert (second.run_id, second.attempt) == (first.run_id, 2)
    second.close()
    fresh = ExperimentLogger(training_config=TrainingConfig(experiment_location=str(location)))
    fresh.treadle_on_training_start(trainer=_view(TrainingConfig(), 0))
    assert fresh.run_id != first.run_id
    fresh.close()


def test_only_runs_with_an_experiment_store_get_the_logger_and_its_hooks() -> None:
    manager = isolated_plugin_manager(("tracking", treadle_tracking.plugin))
    dispatch = LifecycleDispatch(manager)
    assert [
        hook
        for hook in LIFECYCLE_HOOKS
        if getattr(dispatch, hook.removeprefix("treadle_")) is not None
    ] == [], "the plugin module itself hears no run"
    off = TrainingConfig(experiment_location=None)
    assert configure_run(manager, off).logger_names == []
    on = TrainingConfig(experiment_location="somewhere.db")
    assert configure_run(manager, on).logger_names == ["experiment"]


# -- the Trainer records its runs ---------------------------------------------------------


def _tracking_manager(*extra: tuple[str, object]) -> PluginManager:
    return engine_plugin_manager(
        ("tracking", treadle_tracking.plugin), ("sqlite", treadle_sqlite.plugin), *extra
    )


@needs_engine
@pytest.mark.slow
def test_a_trained_run_is_recorded_and_its_best_checkpoint_registered(tmp_path: Path) -> None:
    location = tmp_path / "treadle.db"
    config = small_config(
        tmp_path / "run", experiment_location=str(location), run_name="blobs", epochs=2
    )
    train, val = loaders()
    trainer_cls = pytest.importorskip("treadle.engine.trainer").Trainer
    trainer = trainer_cls(
        model=TinyClassifier(),
        config=None,
        training_config=config,
        task_spec=classification_task(),
        plugin_manager=_tracking_manager(),
        device="cpu",
    )
    results = trainer.train(train, val)
    with ExperimentDB(location) as db:
        (run,) = db.find_runs(name="blobs")
        assert run.status == "completed"
        assert TrainingConfig.from_dict(run.config) == config
        assert run.summary["best_checkpoint"] == str(results["best_checkpoint"])
        history = db.get_history(run.run_id)
        assert list(history["epoch"]) == [0, 1]
        assert history["val_loss"].tolist() == pytest.approx(
            [row["val_loss"] for row in results["history"]]
        )
        steps = db.get_metrics(run.run_id, names=["train/batch_loss"])
        assert len(steps) == results["global_step"] // config.log_every_n_steps
    with ModelRegistry(location) as registry:
        model_id = registry.register_model(
            config.model_name,
            "1.0.0",
            run.summary["best_checkpoint"],
            classification_task().task_type,
            results["final_metrics"],
            config.config_hash(),
            training_run_id=run.run_id,
        )
        entry = registry.get_model(model_id=model_id)
    assert entry.training_run_id == run.run_id
    assert entry.memory_req_gb > 0


@needs_engine
@pytest.mark.slow
def test_a_crashed_and_resumed_training_keeps_one_live_row_per_step(tmp_path: Path) -> None:
    class PowerCut:
        @hookimpl
        def treadle_on_batch_end(
            self, trainer: Any, batch_index: int, loss: Any, control: Any
        ) -> None:
            if trainer.global_step == 20:
                raise RuntimeError("power cut")

    location = tmp_path / "treadle.db"
    config = small_config(
        tmp_path / "run", experiment_location=str(location), epochs=3, log_every_n_steps=1
    )
    train, val = loaders()
    trainer_cls = pytest.importorskip("treadle.engine.trainer").Trainer

    def trainer(training_config: TrainingConfig, manager: PluginManager) -> Any:
        return trainer_cls(
            model=TinyClassifier(),
            config=None,
            training_config=training_config,
            task_spec=classification_task(),
            plugin_manager=manager,
            device="cpu",
        )

    with pytest.raises(RuntimeError, match="power cut"):
        trainer(config, _tracking_manager(("power-cut", PowerCut()))).train(train, val)
    trainer(attrs.evolve(config, resume="auto"), _tracking_manager()).train(train, val)
    with ExperimentDB(location) as db:
        (run,) = db.find_runs()
        assert (run.status, run.attempt) == ("completed", 2)
        live = db.get_metrics(run.run_id, names=["train/batch_loss"])
        assert list(live["step"]) == list(range(1, 25))
        assert list(live["epoch"]) == [0] * 8 + [1] * 8 + [2] * 8
        everything = db.get_metrics(run.run_id, names=["train/batch_loss"], include_superseded=True)
        assert list(everything[everything["superseded"]]["step"]) == [17, 18, 19, 20]
        assert list(db.get_history(run.run_id)["epoch"]) == [0, 1, 2]


@needs_engine
@pytest.mark.slow
def test_two_trainers_sharing_one_frozen_config_each_record_their_own_run(
    tmp_path: Path,
) -> None:
    """The second run starts and ends while the first is between its epochs; each run's
    hooks must reach its own experiment logger, not the other's."""
    location = tmp_path / "treadle.db"
    config = small_config(tmp_path / "run", experiment_location=str(location), epochs=2)
    trainer_cls = pytest.importorskip("treadle.engine.trainer").Trainer
    results: dict[str, Any] = {}

    def trainer(manager: PluginManager) -> Any:
        return trainer_cls(
            model=TinyClassifier(),
            config=None,
            training_config=config,
            task_spec=classification_task(),
            plugin_manager=manager,
            device="cpu",
        )

    class TrainAnotherInBetween:
        @hookimpl
        def treadle_on_epoch_end(self, epoch: int) -> None:
            if epoch == 0:
                results["inner"] = trainer(_tracking_manager()).train(*loaders())

    results["outer"] = trainer(_tracking_manager(("in-between", TrainAnotherInBetween()))).train(
        *loaders()
    )
    with ExperimentDB(location) as db:
        runs = db.find_runs()
        assert len(runs) == 2
        assert all(run.status == "completed" for run in runs)
        assert {run.summary.get("total_time") for run in runs} == {
            results[name]["total_time"] for name in ("outer", "inner")
        }, "each run's summary holds its own results"
