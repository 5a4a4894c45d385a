"""A real store for the ``treadle ui`` tests: runs recorded by real Trainer runs (one failed),
a registered model with a retrained child, jobs in every state, a schedule and retraining
decisions. Helpers only: the tests live in ``test_ui_*.py`` beside it."""

from __future__ import annotations

import html
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.trainer_fixtures import Blobs, TinyClassifier, classification_task, loaders, small_config
from treadle import hookimpl
from treadle.config import TrainingConfig
from treadle.engine.drift import build_profile
from treadle.experiments import ExperimentDB
from treadle.jobs.manager import JobManager
from treadle.jobs.scheduler import TrainingScheduler
from treadle.jobs.triggers import RetrainingTrigger
from treadle.model_registry import ModelRegistry
from treadle.plugins import PluginManager, make_plugin_manager

__all__ = [
    "HTML_NAME",
    "SlowBatches",
    "UiStore",
    "build_ui_store",
    "row_of",
    "serve_in_thread",
    "small_config",
    "text_of",
    "train",
]

#: a run name and a model name that are HTML: every page must show them as text
HTML_NAME = '<script>alert("run")</script><b>bold</b>'
FAILED_JOB_ERROR = (
    "Traceback (most recent call last):\n"
    '  File "job.py", line 3, in run\n'
    "RuntimeError: CUDA out of memory while loading <weights> & friends"
)


@attrs.frozen(kw_only=True)
class UiStore:
    """What the store holds, by id."""

    location: Path
    baseline_run: int
    retrain_run: int
    failed_run: int
    html_run: int
    parent_model: int
    child_model: int
    jobs: dict[str, int]
    schedule_id: int
    logged_steps: int
    baseline_results: dict[str, Any] = attrs.field(hash=False)


class _PowerCut:
    """Raises at a step: a run that fails mid-training, as a real one does."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    @hookimpl
    def treadle_on_batch_end(self, trainer: Any, batch_index: int, loss: Any, control: Any) -> None:
        if trainer.global_step == self.at_step:
            msg = "power cut at step 5"
            raise RuntimeError(msg)


class SlowBatches:
    """Sleeps after each batch, so a background run logs over several seconds."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    @hookimpl
    def treadle_on_batch_end(self, trainer: Any, batch_index: int, loss: Any, control: Any) -> None:
        time.sleep(self.seconds)


def train(
    config: TrainingConfig, *extra_plugins: object, manager: PluginManager | None = None
) -> dict[str, Any]:
    """One real Trainer run of the tiny classifier on the blobs data."""
    from treadle.engine.trainer import Trainer

    plugin_manager = manager or make_plugin_manager()
    for index, plugin in enumerate(extra_plugins):
        plugin_manager.register(plugin, name=f"ui-test-extra-{index}-{id(plugin)}")
    train_loader, val_loader = loaders()
    trainer = Trainer(
        model=TinyClassifier(),
        config=None,
        training_config=config,
        task_spec=classification_task(),
        plugin_manager=plugin_manager,
        device="cpu",
    )
    results: dict[str, Any] = trainer.train(train_loader, val_loader)
    return results


def _config(root: Path, name: str, location: Path, **overrides: Any) -> TrainingConfig:
    return small_config(
        root / name,
        experiment_location=str(location),
        registry_location=str(location),
        run_name=name,
        log_every_n_steps=1,
        **overrides,
    )


def build_ui_store(root: Path) -> UiStore:
    """Fill ``root/treadle.db``: see the module's docstring."""
    location = root / "treadle.db"
    manager = make_plugin_manager()
    baseline_config = _config(root, "blobs-baseline", location, epochs=2)
    baseline = train(baseline_config, manager=manager)
    retrain = train(
        _config(root, "blobs-retrain", location, epochs=2), manager=make_plugin_manager()
    )
    with pytest.raises(RuntimeError, match="power cut"):
        train(_config(root, "blobs-broken", location, epochs=2), _PowerCut(5))
    with ExperimentDB(location) as db:
        runs = {run.run_name: run.run_id for run in db.find_runs()}
        html_run = db.log_run(HTML_NAME, {"learning_rate": 0.1}, notes="<i>notes</i>")
        db.log_metrics(html_run, {"val_loss": 1.5, "drift_js_divergence": 0.05}, epoch=0, step=1)
        db.log_metrics(html_run, {"val_loss": 1.25, "drift_js_divergence": 0.31}, epoch=1, step=2)
        db.update_run(html_run, status="completed")
    profile = build_profile(
        {"feature_0": Blobs(64).features[:, 0], "feature_1": Blobs(64).features[:, 1]}
    )
    with ModelRegistry(location) as registry:
        parent = registry.register_model(
            "blobs",
            "1.0.0",
            baseline["best_checkpoint"],
            "classification",
            {"val_loss": baseline["best_val_loss"], "val_accuracy": 0.9},
            baseline_config.config_hash(),
            training_run_id=runs["blobs-baseline"],
            tags=("production",),
            export_formats=("onnx", "torchscript"),
            data_profile=profile,
        )
        child = registry.register_model(
            "blobs",
            "1.1.0",
            retrain["best_checkpoint"],
            "classification",
            {"val_loss": retrain["best_val_loss"], "val_accuracy": 0.93},
            training_run_id=runs["blobs-retrain"],
            parent_model_id=parent,
            tags=("staging",),
        )
    jobs = _fill_jobs(location, baseline_config, manager, parent=parent, child=child)
    with TrainingScheduler(location, plugin_manager=manager) as scheduler:
        schedule_id = scheduler.create_schedule(
            "nightly-retrain", "noop", {}, "0 2 * * *", timezone="Europe/Berlin"
        )
    return UiStore(
        location=location,
        baseline_run=runs["blobs-baseline"],
        retrain_run=runs["blobs-retrain"],
        failed_run=runs["blobs-broken"],
        html_run=html_run,
        parent_model=parent,
        child_model=child,
        jobs=jobs,
        schedule_id=schedule_id,
        logged_steps=int(baseline["global_step"]),
        baseline_results=dict(baseline),
    )


def _fill_jobs(
    location: Path, config: TrainingConfig, manager: PluginManager, *, parent: int, child: int
) -> dict[str, int]:
    """One job in each status; claims made as a worker makes them, through the store."""
    jobs: dict[str, int] = {}
    trigger = RetrainingTrigger(monitor_metric="val_loss", degradation_threshold=0.1)
    with JobManager(location, plugin_manager=manager) as queue:
        store = queue.store

        def claim(job_id: int, worker: str) -> Any:
            claimed = store.claim(worker, lease_seconds=600)
            assert claimed is not None
            assert claimed.job_id == job_id
            return claimed

        jobs["completed"] = queue.submit_job("noop", {})
        store.complete(claim(jobs["completed"], "worker-a"), {"slept": 0})
        jobs["failed"] = queue.submit_job("noop", {}, max_retries=0)
        store.fail(
            claim(jobs["failed"], "worker-b"), FAILED_JOB_ERROR, outcome="failed", retry_delay=0
        )
        retraining = {"training_config": config.to_dict()}
        jobs["retrained"] = queue.submit_job("retraining", retraining)
        decision = trigger.should_retrain({"val_loss": 0.9}, {"val_loss": 0.6}, drift_score=0.05)
        store.complete(
            claim(jobs["retrained"], "worker-a"),
            {
                "retrained": True,
                "model_name": "blobs",
                "model_id": child,
                "parent_model_id": parent,
                "decision": decision.to_dict(),
            },
        )
        jobs["not_retrained"] = queue.submit_job("retraining", retraining)
        calm = trigger.should_retrain({"val_loss": 0.61}, {"val_loss": 0.6}, drift_score=0.01)
        store.complete(
            claim(jobs["not_retrained"], "worker-a"),
            {"retrained": False, "model_name": "blobs", "decision": calm.to_dict()},
        )
        jobs["running"] = queue.submit_job("noop", {"seconds": 60})
        claim(jobs["running"], "worker-c")
        jobs["cancelled"] = queue.submit_job("noop", {})
        queue.cancel_job(jobs["cancelled"])
        jobs["pending"] = queue.submit_job("noop", {}, priority=3)
    return jobs


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields the address."""
    import uvicorn

    from treadle_ui.server import address_of, bind

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            msg = "the ui server did not start within 10 s"
            raise RuntimeError(msg)
        time.sleep(0.02)
    try:
        yield address_of(sock).rstrip("/")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def text_of(page: str) -> str:
    """The page as a person reads it: tags dropped, entities decoded, spaces collapsed."""
    without_tags = re.sub(r"<script\b.*?</script>|<[^>]+>", " ", page, flags=re.S)
    return " ".join(html.unescape(without_tags).split())


def row_of(page: str, attribute: str, value: object) -> str:
    match = re.search(rf'<tr [^>]*{attribute}="{value}".*?</tr>', page, flags=re.S)
    assert match, f"no row with {attribute}={value}"
    return text_of(match.group(0))
