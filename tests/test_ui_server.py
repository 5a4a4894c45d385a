"""``treadle ui`` pages and JSON over a real store: runs recorded by real Trainer runs, a model
with a retrained child, jobs in every state, a schedule and retraining decisions."""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest

pytest.importorskip("starlette", reason='treadle ui needs the "ui" extra')
from starlette.testclient import TestClient

from tests.test_ui_support import (
    FAILED_JOB_ERROR,
    UiStore,
    build_ui_store,
    row_of,
    text_of,
)
from treadle.experiments import ExperimentDB
from treadle.jobs.cron import CronSchedule
from treadle_ui.app import UI_STATIC, UiApp, create_app
from treadle_ui.runs_view import RunNameIndex
from treadle_ui.settings import StoreLocations, UiSettings
from treadle_ui.stores import StoreReader

BASE = "http://127.0.0.1:8765"


@pytest.fixture(scope="module")
def ui_store(tmp_path_factory: pytest.TempPathFactory) -> UiStore:
    return build_ui_store(tmp_path_factory.mktemp("ui-store"))


def make_app(location: Path, **settings: Any) -> UiApp:
    reader = StoreReader(StoreLocations.shared(str(location)))
    return create_app(
        UiSettings(locations=StoreLocations.shared(str(location)), **settings), reader
    )


@pytest.fixture(scope="module")
def ui(ui_store: UiStore) -> Iterator[UiApp]:
    app = make_app(ui_store.location, page_size=3)
    yield app
    app.reader.close()


@pytest.fixture(scope="module")
def client(ui: UiApp) -> Iterator[TestClient]:
    with TestClient(ui.app, base_url=BASE) as test_client:
        yield test_client


# -- runs -------------------------------------------------------------------------------------


def test_the_runs_table_shows_names_statuses_best_loss_epochs_and_attempts(
    client: TestClient, ui_store: UiStore
) -> None:
    response = client.get("/runs", params={"page_size": 50})
    assert response.status_code == 200
    page = response.text
    # page_size=3: the newest three, newest first, and a link to older ones
    ids = [int(value) for value in re.findall(r'<tr data-run-id="(\d+)"', page)]
    assert ids == [ui_store.html_run, ui_store.failed_run, ui_store.retrain_run]
    assert 'rel="next"' in page
    older = client.get("/runs", params={"page": 2}).text
    assert re.findall(r'<tr data-run-id="(\d+)"', older) == [str(ui_store.baseline_run)]
    baseline = row_of(older, "data-run-id", ui_store.baseline_run)
    best = ui_store.baseline_results["best_val_loss"]
    assert "blobs-baseline" in baseline
    assert "completed" in baseline
    assert f"{best:.4g}" in baseline
    # 2 epochs, 1 attempt
    assert re.search(r"\b2 \S+ m?s 1\b", baseline), baseline  # 137 ms or 2.4 s
    failed = row_of(page, "data-run-id", ui_store.failed_run)
    assert "failed" in failed
    assert "RuntimeError: power cut at step 5" in failed


def test_runs_filter_by_status_and_by_part_of_the_name(
    client: TestClient, ui_store: UiStore
) -> None:
    failed = client.get("/runs", params={"status": "failed"}).text
    assert re.findall(r'<tr data-run-id="(\d+)"', failed) == [str(ui_store.failed_run)]
    blobs = client.get("/runs", params={"name": "BLOBS-"}).text
    assert [int(value) for value in re.findall(r'<tr data-run-id="(\d+)"', blobs)] == [
        ui_store.failed_run,
        ui_store.retrain_run,
        ui_store.baseline_run,
    ][:3]
    assert "3 runs with “BLOBS-” in the name" in text_of(blobs)
    both = client.get("/runs", params={"name": "retrain", "status": "completed"}).text
    assert re.findall(r'<tr data-run-id="(\d+)"', both) == [str(ui_store.retrain_run)]
    none = client.get("/runs", params={"status": "died"}).text
    assert "No runs match these filters" in text_of(none)


class _DiedStore:
    """A store that reports runs as ``died``, a status this treadle does not know: the
    store protocols let a third party's (or a later) store report any text."""

    def __init__(self, store: Any, died: int) -> None:
        self._store = store
        self._died = died

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _mark(self, runs: list[Any]) -> list[Any]:
        return [
            attrs.evolve(run, status="died") if run.run_id == self._died else run for run in runs
        ]

    def find_runs(self, **filters: Any) -> list[Any]:
        wanted = filters.pop("status", None)
        runs = self._mark(self._store.find_runs(**filters))
        return [run for run in runs if wanted is None or run.status == wanted]

    def get_run(self, run_id: int) -> Any:
        return self._mark([self._store.get_run(run_id)])[0]


def test_a_status_the_ui_does_not_know_is_listed_and_filterable_as_the_store_reports_it(
    tmp_path: Path,
) -> None:
    location = tmp_path / "treadle.db"
    with ExperimentDB(location) as db:
        run_id = db.log_run("ghost")
        db.log_run("alive")
    app = make_app(location)
    app.reader.experiments.store = _DiedStore(app.reader.experiments.store, run_id)
    with app.reader.curves() as curves:
        curves.store = _DiedStore(curves.store, run_id)
    with TestClient(app.app, base_url=BASE) as test_client:
        page = test_client.get("/runs", params={"status": "died"}).text
        assert re.findall(r'<tr data-run-id="(\d+)"', page) == [str(run_id)]
        assert '<span class="status tone-bad">died</span>' in page
        assert '<option value="died">' in page
        run_page = test_client.get(f"/runs/{run_id}").text
        assert '<span class="status tone-bad" data-run-status>died</span>' in run_page
        assert test_client.get(f"/api/runs/{run_id}/series").json()["live"] is False
    app.reader.close()


def test_a_name_search_finds_runs_created_after_the_first_search_reading_only_new_ones(
    tmp_path: Path,
) -> None:
    location = tmp_path / "treadle.db"
    with ExperimentDB(location) as db:
        for index in range(300):
            db.log_run(f"sweep-{index}")
        index = RunNameIndex()
        assert index.matching("fresh") == []
        index.refresh(db)
        assert len(index.matching("SWEEP-")) == 300
        reads: list[Any] = []
        real = db.store.find_runs

        def counted(**filters: Any) -> Any:
            found = real(**filters)
            reads.append((filters, len(found)))
            return found

        db.store.find_runs = counted  # type: ignore[method-assign]
        index.refresh(db)
        assert reads == [({"limit": 64}, 64)]  # nothing new: only the newest 64 again
        fresh = db.log_run("fresh-run")
        index.refresh(db)
        assert index.matching("fresh") == [fresh]


def test_the_run_page_shows_config_checkpoints_with_sizes_alerts_and_the_registered_model(
    client: TestClient, ui_store: UiStore
) -> None:
    response = client.get(f"/runs/{ui_store.baseline_run}")
    assert response.status_code == 200
    page, words = response.text, text_of(response.text)
    assert "blobs-baseline" in words
    assert "learning_rate 0.01" in words  # the resolved config
    assert "blobs 1.0.0" in words  # registered from this run
    folder = Path(ui_store.baseline_results["run_dir"])
    files = sorted(folder.glob("epoch_*.pt"))
    assert files
    for file in files:
        assert file.name in words
        size = file.stat().st_size
        assert f"{size / 1024:.1f} KiB" in words
    best = Path(ui_store.baseline_results["best_checkpoint"]).name
    assert row_of(page, "data-checkpoint", best).endswith("best")
    others = [file.name for file in files if file.name != best]
    assert all("best" not in row_of(page, "data-checkpoint", name) for name in others)
    assert "No alerts" in words
    assert 'data-series-url="/api/runs/' in page


def test_alerts_and_drift_are_shown_for_the_runs_that_have_them(
    client: TestClient, ui_store: UiStore, tmp_path: Path
) -> None:
    words = text_of(client.get(f"/runs/{ui_store.html_run}").text)
    # drift 0.31 is past the critical threshold 0.2, 0.05 is healthy; epochs 2 and 1 are the
    # stored epochs 1 and 0 counted from 1, as everything a person reads counts them
    assert "drift_js_divergence 2 2 0.31 critical" in words
    assert "drift_js_divergence 1 1 0.05 healthy" in words
    with ExperimentDB(ui_store.location) as db:
        spiky = db.log_run("spiky", {"gradient_norm_critical": 5.0})
        for epoch, (val_loss, norm) in enumerate([(1.0, 1.0), (1.5, 9.0)]):
            db.log_metrics(
                spiky,
                {
                    "train_loss": 1.0,
                    "val_loss": val_loss,
                    "learning_rate": 0.01,
                    "gradient_norm": norm,
                },
                epoch=epoch,
                step=epoch + 1,
            )
    words = text_of(client.get(f"/runs/{spiky}").text)
    assert "val_loss_spike at epoch 2: val_loss rose 50.0% (1 -> 1.5), more than 20%" in words
    assert "gradient_norm at epoch 2: gradient norm 9 is above 5" in words


def test_pages_answer_while_a_long_curve_is_being_read(
    client: TestClient, ui: UiApp, ui_store: UiStore
) -> None:
    holding = threading.Event()
    release = threading.Event()

    def long_read() -> None:
        with ui.reader.curves():
            holding.set()
            release.wait(timeout=30)

    reader = threading.Thread(target=long_read)
    reader.start()
    try:
        assert holding.wait(timeout=10)
        assert client.get(f"/runs/{ui_store.baseline_run}").status_code == 200
        assert client.get("/jobs").status_code == 200
    finally:
        release.set()
        reader.join()


def test_unknown_ids_are_404_pages_naming_them(client: TestClient) -> None:
    for path in ("/runs/9999", "/models/9999", "/jobs/9999"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "9999" in text_of(response.text)
    assert client.get("/api/runs/9999/series").json()["error"]


# -- curves -----------------------------------------------------------------------------------


def _series(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        series["label"]: {**series, "x": chart["x"], "chart": chart["key"]}
        for chart in payload["charts"]
        for series in chart["series"]
    }


def test_the_curves_have_as_many_points_as_were_logged(
    client: TestClient, ui_store: UiStore
) -> None:
    payload = client.get(f"/api/runs/{ui_store.baseline_run}/series").json()
    assert payload["live"] is False
    series = _series(payload)
    steps = ui_store.logged_steps
    assert series["train/batch_loss"]["points"] == steps
    assert series["train/batch_loss"]["total"] == steps
    assert series["train/batch_loss"]["chart"] == "loss"
    assert series["val_loss"]["chart"] == "loss"
    assert series["val_loss"]["points"] == 2
    # the values are those logged, at their steps
    with ExperimentDB(ui_store.location) as db:
        logged = db.metric_rows([ui_store.baseline_run], names=["val_loss"])
    chart = next(chart for chart in payload["charts"] if chart["key"] == "loss")
    index = chart["series"].index(next(s for s in chart["series"] if s["label"] == "val_loss"))
    drawn = [
        (x, value)
        for x, value in zip(chart["x"], chart["series"][index]["values"], strict=True)
        if value is not None
    ]
    assert drawn == [(row.step, pytest.approx(row.value)) for row in logged]


def test_the_epoch_axis_draws_epoch_metrics_at_their_epoch_and_steps_as_epoch_means(
    client: TestClient, ui_store: UiStore
) -> None:
    payload = client.get(
        f"/api/runs/{ui_store.baseline_run}/series", params={"axis": "epoch"}
    ).json()
    series = _series(payload)
    assert series["val_loss"]["x"] == [1, 2]  # stored epochs 0 and 1, counted from 1
    assert series["val_loss"]["aggregated"] is False
    assert series["train/batch_loss"]["points"] == 2
    assert series["train/batch_loss"]["aggregated"] is True


def test_a_long_curve_is_downsampled_on_the_server_keeping_its_spike(
    client: TestClient, ui_store: UiStore
) -> None:
    with ExperimentDB(ui_store.location) as db:
        run_id = db.log_run("long")
        rows = [
            ("train/batch_loss", 100.0 if step == 3210 else 1.0 / step, 0, step, time.time())
            for step in range(1, 5001)
        ]
        db.store.add_metrics(run_id, None, rows)
    payload = client.get(f"/api/runs/{run_id}/series", params={"max_points": 200}).json()
    (series,) = payload["charts"][0]["series"]
    assert series["total"] == 5000
    assert series["points"] <= 200
    assert series["downsampled"] is True
    values = dict(zip(payload["charts"][0]["x"], series["values"], strict=True))
    assert values[3210] == 100.0
    assert values[1] == 1.0
    assert values[5000] == pytest.approx(1 / 5000)


def test_a_running_run_is_live_and_its_version_changes_when_rows_arrive(
    client: TestClient, ui_store: UiStore
) -> None:
    with ExperimentDB(ui_store.location) as db:
        run_id = db.log_run("live")
        db.log_metrics(run_id, {"train/batch_loss": 1.0}, epoch=0, step=1)
        first = client.get(f"/api/runs/{run_id}/series").json()
        assert first["live"] is True
        assert first["runs"][0]["tone"] == "live"
        assert client.get(f"/api/runs/{run_id}/series").json()["version"] == first["version"]
        db.log_metrics(run_id, {"train/batch_loss": 0.5}, epoch=0, step=2)
        second = client.get(f"/api/runs/{run_id}/series").json()
        assert second["version"] != first["version"]
        assert _series(second)["train/batch_loss"]["points"] == 2
        db.update_run(run_id, status="completed")
    done = client.get(f"/api/runs/{run_id}/series").json()
    assert done["live"] is False
    assert done["runs"][0]["status"] == "completed"


def test_several_runs_are_overlaid_one_series_per_run_in_each_metric_chart(
    client: TestClient, ui_store: UiStore
) -> None:
    ids = [ui_store.baseline_run, ui_store.retrain_run, ui_store.failed_run]
    page = client.get("/compare", params=[("run", str(run_id)) for run_id in ids])
    assert page.status_code == 200
    words = text_of(page.text)
    assert "blobs-baseline" in words
    assert "blobs-retrain" in words
    assert "run_name" in words  # the config values that differ
    query = "&".join(f"run={run_id}" for run_id in ids)
    payload = client.get(f"/api/compare/series?{query}").json()
    charts = {chart["key"]: chart for chart in payload["charts"]}
    batch = charts["metric:train/batch_loss"]["series"]
    assert [series["label"] for series in batch] == [
        f"#{ui_store.baseline_run} blobs-baseline",
        f"#{ui_store.retrain_run} blobs-retrain",
        f"#{ui_store.failed_run} blobs-broken",
    ]
    assert [series["color"] for series in batch] == [0, 1, 2]
    assert batch[2]["points"] == 5  # the broken run logged 5 steps before its power cut
    # the broken run never validated: the val_loss chart has the other two, colours kept
    assert [series["color"] for series in charts["metric:val_loss"]["series"]] == [0, 1]


def test_compare_refuses_bad_ids_and_names_missing_ones(client: TestClient) -> None:
    assert client.get("/compare", params={"run": "x"}).status_code == 400
    assert "No run with id 777" in text_of(client.get("/compare", params={"run": "777"}).text)


# -- models -----------------------------------------------------------------------------------


def test_the_models_page_shows_versions_tags_metrics_exports_runs_and_the_lineage_edge(
    client: TestClient, ui_store: UiStore
) -> None:
    page = client.get("/models").text
    parent = row_of(page, "data-model-id", ui_store.parent_model)
    child = row_of(page, "data-model-id", ui_store.child_model)
    assert "1.0.0" in parent
    assert "production" in parent
    assert "onnx, torchscript" in parent
    assert f"run #{ui_store.baseline_run}" in parent
    assert "0.9" in parent
    assert "1.1.0" in child
    assert "staging" in child
    assert f"run #{ui_store.retrain_run}" in child
    assert f"#{ui_store.parent_model}" in child  # its parent
    edge = f'data-parent="{ui_store.parent_model}" data-child="{ui_store.child_model}"'
    assert edge in page
    assert "production → 1.0.0" in text_of(page)


def test_a_model_page_shows_its_line_its_run_and_its_data_profile(
    client: TestClient, ui_store: UiStore
) -> None:
    child = text_of(client.get(f"/models/{ui_store.child_model}").text)
    assert "Retrained from blobs 1.0.0" in child
    assert f"blobs-retrain (run #{ui_store.retrain_run})" in child
    assert "Registered without a data profile" in child
    parent_page = client.get(f"/models/{ui_store.parent_model}").text
    parent = text_of(parent_page)
    assert "Retrained into blobs 1.1.0" in parent
    assert "64 samples, 2 features" in parent
    assert "feature_0 numeric 20" in parent
    assert (
        f'data-parent="{ui_store.parent_model}" data-child="{ui_store.child_model}"' in parent_page
    )
    assert "Promote" not in parent  # read-only by default


# -- jobs -------------------------------------------------------------------------------------


def test_the_jobs_page_shows_every_status_attempts_worker_lease_and_last_error(
    client: TestClient, ui_store: UiStore
) -> None:
    page = client.get("/jobs", params={"page": 1}).text
    words = text_of(page)
    for status in ("pending", "running", "completed", "failed", "cancelled"):
        assert f"{status} 1" in words or f"{status} 3" in words, status
    every = "".join(client.get("/jobs", params={"page": page}).text for page in (1, 2, 3))
    failed = row_of(every, "data-job-id", ui_store.jobs["failed"])
    assert "RuntimeError: CUDA out of memory while loading <weights> & friends" in failed
    assert "worker-b" in failed
    assert "1 / 1" in failed  # attempts, of at most max_retries + 1
    running = row_of(every, "data-job-id", ui_store.jobs["running"])
    assert "worker-c" in running
    assert re.search(r"ends in (9|10) min", running), running
    assert "pending" in row_of(every, "data-job-id", ui_store.jobs["pending"])
    failed_only = client.get("/jobs", params={"status": "failed"}).text
    assert re.findall(r'<tr data-job-id="(\d+)"', failed_only) == [str(ui_store.jobs["failed"])]


def test_a_job_page_shows_its_attempts_and_the_whole_traceback(
    client: TestClient, ui_store: UiStore
) -> None:
    page = client.get(f"/jobs/{ui_store.jobs['failed']}").text
    blocks = re.findall(r'<pre class="error-block">(.*?)</pre>', page, flags=re.S)
    # the last error, and the attempt's error
    assert [html.unescape(block) for block in blocks] == [FAILED_JOB_ERROR, FAILED_JOB_ERROR]
    assert "<weights>" not in page
    assert "worker-b" in text_of(page)


def test_each_schedule_shows_its_next_fire_time_in_its_time_zone(
    client: TestClient, ui_store: UiStore
) -> None:
    page = client.get("/jobs").text
    row = row_of(page, "data-schedule-id", ui_store.schedule_id)
    expected = datetime.fromtimestamp(
        CronSchedule("0 2 * * *", "Europe/Berlin").next_after(time.time()), UTC
    )
    local = expected.astimezone(ZoneInfo("Europe/Berlin")).strftime("%Y-%m-%d %H:%M %Z")
    assert local.endswith(("02:00 CET", "02:00 CEST"))
    assert local in row
    assert expected.strftime("%Y-%m-%d %H:%M:%S UTC") in row
    assert "nightly-retrain" in row
    assert "Europe/Berlin" in row


def test_recent_retraining_decisions_show_the_outcome_and_the_reasons(
    client: TestClient, ui_store: UiStore
) -> None:
    words = text_of(client.get("/jobs").text)
    assert "retrained val_loss degraded by 50.0% (0.6 -> 0.9), above the 10.0% threshold" in words
    assert f"model #{ui_store.child_model} from #{ui_store.parent_model}" in words
    assert "not retrained val_loss changed by +1.7%, within the 10.0% threshold" in words


# -- assets -----------------------------------------------------------------------------------


def test_the_vendored_chart_library_is_served_unchanged_with_its_license(
    client: TestClient,
) -> None:
    notes = (UI_STATIC / "VENDORED.txt").read_text(encoding="utf-8")
    for name, digest in re.findall(r"-> (\S+)\s+sha256 ([0-9a-f]{64})", notes):
        assert hashlib.sha256((UI_STATIC / name).read_bytes()).hexdigest() == digest, name
    script = client.get("/static/uPlot-1.6.32.iife.min.js")
    assert script.status_code == 200
    assert script.text.startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    assert "MIT License" in (UI_STATIC / "uPlot-1.6.32.LICENSE").read_text(encoding="utf-8")
    page = client.get("/runs/1").text
    # no address outside this server: it works offline
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_json_endpoints_hold_no_nan(client: TestClient, ui_store: UiStore) -> None:
    with ExperimentDB(ui_store.location) as db:
        run_id = db.log_run("nan")
        db.log_metrics(run_id, {"val_loss": math.nan}, epoch=0, step=1)
        db.log_metrics(run_id, {"val_loss": 0.5}, epoch=1, step=2)
    raw = client.get(f"/api/runs/{run_id}/series").text
    payload = json.loads(raw, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert _series(payload)["val_loss"]["values"] == [None, 0.5]
