"""Workflow 5 end to end, with every built-in plugin: a training job registers a model; a
schedule fires; the retraining job trains from the stored config and registers a new version
whose parent is the previous one; evaluation and export jobs use the registry; a retried
training job does not register a second model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from treadle.config import PRESETS, TrainingConfig
from treadle.jobs.context import JobContext
from treadle.jobs.manager import JobManager
from treadle.jobs.scheduler import TrainingScheduler
from treadle.model_registry import ModelRegistry
from treadle.plugins import make_plugin_manager

ROOT = Path(__file__).resolve().parents[1]


def _tiny_config(location: Path) -> dict[str, Any]:
    config = TrainingConfig.from_dict(
        {
            **PRESETS["quick_prototype"],
            "epochs": 1,
            "batch_size": 8,
            "d_model": 32,
            "num_heads": 2,
            "d_ff": 64,
            "num_layers": 1,
            "max_seq_len": 32,
            "max_train_samples": 48,
            "max_val_samples": 16,
            "device": "cpu",
            "loggers": ["jsonl"],
            "model_name": "e2e-gpt",
            "run_name": None,
            "registry_location": str(location),
            "experiment_location": str(location),
        }
    )
    return config.to_dict()


@pytest.mark.slow
def test_a_schedule_fires_a_retraining_that_registers_a_child_version(tmp_path: Path) -> None:
    location = tmp_path / "treadle.db"
    plugin_manager = make_plugin_manager()
    manager = JobManager(location, plugin_manager=plugin_manager)
    scheduler = TrainingScheduler(location, plugin_manager=plugin_manager)
    training_config = _tiny_config(location)

    trained = manager.submit_job("training", {"training_config": training_config}, priority=10)
    schedule_id = scheduler.create_schedule(
        "daily-retrain",
        "retraining",
        {"training_config": training_config},
        "0 2 * * *",
        priority=8,
        timezone="Europe/Berlin",
    )
    next_fire = scheduler.get_schedule(schedule_id).next_fire_at
    assert next_fire is not None
    from datetime import datetime

    (fired,) = scheduler.run_pending(datetime.fromisoformat(next_fire).timestamp() + 60)
    assert fired.job_id is not None
    never = {"degradation_threshold": 1e9, "drift_threshold": 1e9, "min_days_between_retrains": 0}
    held_back = manager.submit_job(
        "retraining", {"training_config": training_config, "trigger": never}, priority=6
    )
    evaluated = manager.submit_job(
        "evaluation", {"model": "e2e-gpt:1.0.1", "registry_location": str(location)}, priority=4
    )
    exported = manager.submit_job(
        "export",
        {"model": "e2e-gpt:1.0.1", "registry_location": str(location), "formats": ["pytorch"]},
        priority=2,
    )

    worker = subprocess.run(
        [
            *(sys.executable, "-m", "treadle", "-q", "worker", "--json"),
            *("--location", str(location), "--worker-id", "e2e", "--max-jobs", "5"),
            *("--output-root", str(tmp_path / "runs"), "--retry-backoff", "0"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert worker.returncode == 0, worker.stderr[-3000:]
    report = json.loads(worker.stdout)
    jobs = {job_id: manager.get_job(job_id) for job_id in (trained, fired.job_id, held_back)}
    failures = {
        job_id: job.error_message for job_id, job in jobs.items() if job.status != "completed"
    }
    assert report["completed"] == 5, (report, failures, manager.get_job(evaluated).error_message)

    registry = ModelRegistry(location, plugin_manager=plugin_manager)
    first = registry.get_model(version="1.0.0", name="e2e-gpt")
    second = registry.get_model(version="1.0.1", name="e2e-gpt")
    assert first.parent_model_id is None
    assert second.parent_model_id == first.model_id  # the retrain's lineage
    assert first.job_key is not None
    assert first.job_key.startswith(f"job-{trained}-")
    assert second.training_run_id is not None  # the run it came from was logged
    retrained = manager.get_job(fired.job_id).result or {}
    assert retrained["retrained"] is True
    assert retrained["start"] == f"started from the weights of model {first.model_id}"
    assert retrained["parent_model_id"] == first.model_id
    assert manager.get_job(fired.job_id).schedule_id == schedule_id
    # the trigger said no: nothing trained or registered, and the reasons are kept
    declined = manager.get_job(held_back).result or {}
    assert declined["retrained"] is False
    assert any("within" in reason for reason in declined["decision"]["reasons"])
    assert len(registry.store.find_models(name="e2e-gpt", limit=None)) == 2
    evaluation = manager.get_job(evaluated).result or {}
    assert evaluation["model_id"] == second.model_id
    assert evaluation["metrics"]["val_loss"] > 0
    export = manager.get_job(exported).result or {}
    assert Path(export["bundle_path"]).is_dir()
    assert "pytorch" in registry.get_model(model_id=second.model_id).export_formats

    # a later attempt of the training job (its worker died after registering) trains nothing
    # and registers nothing: the registration is keyed by the job
    from treadle_jobs.training import TrainingJob

    job = manager.get_job(trained)
    uid = first.job_key.removeprefix(f"job-{trained}-")
    context = JobContext(
        job_id=trained,
        job_type="training",
        attempt=2,
        worker_id="again",
        config=job.config,
        output_dir=tmp_path / "runs" / f"job-{trained}-attempt-2",
        store_location=str(location),
        claimed_at=0.0,
        plugin_manager=plugin_manager,
        job_uid=uid,
    )
    again = TrainingJob().run(context)
    assert (again["model_id"], again["reused"]) == (first.model_id, True)
    assert len(registry.store.find_models(name="e2e-gpt", limit=None)) == 2
