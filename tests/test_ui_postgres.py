"""``treadle ui`` over a PostgreSQL store (a throwaway server): the pages read only through the
store protocols, so they show the same things as over SQLite."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason='treadle ui needs the "ui" extra')
from starlette.testclient import TestClient

from tests.test_ui_support import row_of, text_of
from treadle.experiments import ExperimentDB
from treadle.jobs.manager import JobManager
from treadle.jobs.scheduler import TrainingScheduler
from treadle.model_registry import ModelRegistry
from treadle_ui.app import create_app
from treadle_ui.settings import StoreLocations, UiSettings
from treadle_ui.stores import StoreReader

pytest_plugins = ["tests.postgres_fixtures"]


def test_every_page_reads_a_postgresql_store(postgres_url: str, tmp_path: Path) -> None:
    with ExperimentDB(postgres_url) as db:
        run_id = db.log_run("pg-run", {"learning_rate": 0.01})
        for epoch in range(3):
            db.log_metrics(
                run_id,
                {"train_loss": 1.0 / (epoch + 1), "val_loss": 1.2 / (epoch + 1)},
                epoch=epoch,
                step=(epoch + 1) * 10,
            )
        db.update_run(run_id, status="completed")
        other = db.log_run("pg-other")
        db.log_metrics(other, {"val_loss": 0.9}, epoch=0, step=10)
    with ModelRegistry(postgres_url) as registry:
        parent = registry.register_model(
            "pg-model", "1.0.0", tmp_path / "a.pt", "classification", {"val_loss": 0.4},
            training_run_id=run_id, model_size_mb=1.0, memory_req_gb=0.1, tags=("production",),
        )  # fmt: skip
        child = registry.register_model(
            "pg-model", "1.1.0", tmp_path / "b.pt", "classification", {"val_loss": 0.3},
            parent_model_id=parent, model_size_mb=1.0, memory_req_gb=0.1,
        )  # fmt: skip
    with JobManager(postgres_url) as queue:
        job_id = queue.submit_job("noop", {}, max_retries=0)
        claim = queue.store.claim("pg-worker", lease_seconds=60)
        assert claim is not None
        queue.store.fail(claim, "ValueError: bad <input>", outcome="failed", retry_delay=0)
    with TrainingScheduler(postgres_url) as scheduler:
        scheduler.create_schedule("pg-nightly", "noop", {}, "30 1 * * *", timezone="Asia/Tokyo")

    locations = StoreLocations.shared(postgres_url)
    ui = create_app(UiSettings(locations=locations), StoreReader(locations))
    with TestClient(ui.app, base_url="http://127.0.0.1:8765") as client:
        runs = client.get("/runs").text
        assert "pg-run" in row_of(runs, "data-run-id", run_id)
        assert "0.4 3" in row_of(runs, "data-run-id", run_id)  # best val loss, epochs
        assert "running" in row_of(runs, "data-run-id", other)
        assert re.findall(r'<tr data-run-id="(\d+)"', client.get("/runs?name=PG-R").text) == [
            str(run_id)
        ]
        assert "learning_rate 0.01" in text_of(client.get(f"/runs/{run_id}").text)
        payload = client.get(f"/api/runs/{run_id}/series").json()
        (loss,) = payload["charts"]
        assert [series["points"] for series in loss["series"]] == [3, 3]
        assert loss["x"] == [10, 20, 30]
        compare = client.get(f"/api/compare/series?run={run_id}&run={other}").json()
        val = next(chart for chart in compare["charts"] if chart["key"] == "metric:val_loss")
        assert [series["points"] for series in val["series"]] == [3, 1]
        models = client.get("/models").text
        assert f'data-parent="{parent}" data-child="{child}"' in models
        assert "production → 1.0.0" in text_of(models)
        assert "Retrained from pg-model 1.0.0" in text_of(client.get(f"/models/{child}").text)
        jobs = client.get("/jobs").text
        assert "ValueError: bad <input>" in row_of(jobs, "data-job-id", job_id)
        assert "pg-nightly" in text_of(jobs)
        assert "01:30 JST" in text_of(jobs)  # on Tokyo's clock
        assert "pg-worker" in text_of(client.get(f"/jobs/{job_id}").text)
    ui.reader.close()
