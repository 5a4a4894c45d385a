"""The ``mlflow`` logger plugin against a local SQLite tracking store, read back with
MLflow's own client (no server)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch

from tests.trainer_fixtures import (
    Blobs,
    TinyClassifier,
    classification_task,
    engine_plugin_manager,
    needs_engine,
    small_config,
)
from treadle import hookimpl
from treadle.config.training import PluginsConfig
from treadle.engine.trainer import Trainer
from treadle.errors import ConfigError
from treadle.plugins import PluginManager
from treadle.task import TaskSpec

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("sqlalchemy")


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, migrated once (MLflow's migrations take seconds)."""
    folder = tmp_path_factory.mktemp("mlflow-template")
    path = folder / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path: Path, migrated_store: Path) -> dict[str, str]:
    path = tmp_path / "mlflow.db"
    shutil.copyfile(migrated_store, path)
    return {
        "tracking_uri": f"sqlite:///{path}",
        "artifact_location": str(tmp_path / "artifacts"),
        "experiment": "tests",
    }


class CrashAt:
    def __init__(self, step: int) -> None:
        self.step = step

    @hookimpl
    def treadle_on_batch_end(self, trainer: Any) -> None:
        if trainer.global_step == self.step:
            msg = f"crash after step {self.step}"
            raise RuntimeError(msg)


def manager(*extra: tuple[str, object]) -> PluginManager:
    import treadle_mlflow.plugin

    built = engine_plugin_manager(("mlflow", treadle_mlflow.plugin), *extra)
    built.registry("collators").register("stack", torch.utils.data.default_collate)
    return built


def train(
    run_dir: Path,
    options: dict[str, Any],
    *,
    resume: str | None = None,
    crash_at: int | None = None,
    **overrides: Any,
) -> Any:
    config = small_config(
        run_dir,
        epochs=2,
        log_every_n_steps=1,
        save_every_n_steps=4,
        resume=resume,
        run_name="blobs",
        plugins=PluginsConfig(options={"mlflow": options}),
        **overrides,
    )
    extra = [("crash", CrashAt(crash_at))] if crash_at is not None else []
    torch.manual_seed(0)
    task = attrs.evolve(classification_task(), collator="stack")
    trainer = Trainer(
        TinyClassifier(), None, config, task, device="cpu", plugin_manager=manager(*extra)
    )
    return trainer.train(Blobs(64, seed=0), Blobs(32, seed=1))


class TokenBag(torch.nn.Module):
    """Mean of token embeddings, then a linear layer: a text classifier small enough to export."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(32, 8)
        self.out = torch.nn.Linear(8, 2)

    def forward(self, input_ids: torch.Tensor, **unused: Any) -> torch.Tensor:
        return self.out(self.embed(input_ids).mean(dim=1))


def token_samples(size: int, seed: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 32, (size, 6), generator=generator)
    labels = (ids[:, 0] > 16).long()
    return [{"input_ids": row, "labels": label} for row, label in zip(ids, labels, strict=True)]


def client(store: dict[str, str]) -> Any:
    return mlflow.MlflowClient(tracking_uri=store["tracking_uri"])


def only_run(store: dict[str, str]) -> Any:
    experiment = client(store).get_experiment_by_name("tests")
    runs = client(store).search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return runs[0]


def history(store: dict[str, str], run_id: str, name: str) -> list[tuple[int, float]]:
    points = client(store).get_metric_history(run_id, name)
    return sorted((point.step, point.value) for point in points)


@needs_engine
def test_a_run_is_one_mlflow_run_with_params_and_metrics_at_their_steps(
    tmp_path: Path, store: dict[str, str]
) -> None:
    results = train(tmp_path / "run", store)
    run = only_run(store)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "blobs"
    assert run.data.params["epochs"] == "2"
    assert run.data.params["learning_rate"] == "0.01"
    assert run.data.params["plugins.options.mlflow.experiment"] == "tests"
    assert run.data.tags["treadle.attempt"] == "1"
    assert [step for step, _ in history(store, run.info.run_id, "train/batch_loss")] == list(
        range(1, 17)
    )
    val = history(store, run.info.run_id, "val_loss")
    assert val == [
        (8, pytest.approx(results["history"][0]["val_loss"])),
        (16, pytest.approx(results["history"][1]["val_loss"])),
    ]
    artifacts = [item.path for item in client(store).list_artifacts(run.info.run_id, "treadle")]
    assert artifacts == ["treadle/config.json"]
    recorded = json.loads((tmp_path / "run" / "mlflow-run.json").read_text())
    assert recorded == {"run_id": run.info.run_id, "tracking_uri": store["tracking_uri"]}


@needs_engine
def test_a_resume_continues_the_same_mlflow_run(tmp_path: Path, store: dict[str, str]) -> None:
    with pytest.raises(RuntimeError, match="crash after step 11"):
        train(tmp_path / "run", store, crash_at=11)
    failed = only_run(store)
    assert failed.info.status == "FAILED"
    assert "crash after step 11" in failed.data.tags["treadle.error"]

    train(tmp_path / "run", store, resume="auto")
    run = only_run(store)  # still one run
    assert run.info.run_id == failed.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["treadle.attempt"] == "2"
    assert run.data.tags["treadle.resumed_at_step"] == "8"
    steps = [step for step, _ in history(store, run.info.run_id, "train/batch_loss")]
    # 9-11 twice: the interrupted attempt's values stay in MLflow's history
    assert sorted(set(steps)) == list(range(1, 17))
    assert [step for step in steps if steps.count(step) > 1] == [9, 9, 10, 10, 11, 11]
    names = {item.path for item in client(store).list_artifacts(run.info.run_id, "treadle")}
    assert names == {"treadle/config.json", "treadle/config-attempt-2.json"}


@needs_engine
@pytest.mark.slow
def test_best_checkpoint_bundle_and_registration_on_request(
    tmp_path: Path, store: dict[str, str]
) -> None:
    options = {**store, "log_best_checkpoint": True, "log_bundle": True, "register_as": "blobs"}
    config = small_config(
        tmp_path / "run",
        epochs=1,
        vocab_size=32,
        max_seq_len=6,
        export_formats=("torchscript",),
        plugins=PluginsConfig(options={"mlflow": options}),
    )
    torch.manual_seed(0)
    task = TaskSpec.classification("tokens", num_classes=2, modality="text", collator="stack")
    results = Trainer(TokenBag(), None, config, task, device="cpu", plugin_manager=manager()).train(
        token_samples(32, 0), token_samples(16, 1)
    )
    run = only_run(store)
    listed = {item.path for item in client(store).list_artifacts(run.info.run_id, "checkpoints")}
    assert listed == {f"checkpoints/{Path(results['best_checkpoint']).name}"}
    bundle = {item.path for item in client(store).list_artifacts(run.info.run_id, "bundle")}
    assert "bundle/manifest.json" in bundle
    registry = mlflow.MlflowClient(
        tracking_uri=store["tracking_uri"], registry_uri=store["tracking_uri"]
    )
    (version,) = registry.search_model_versions("name='blobs'")
    assert version.run_id == run.info.run_id
    assert version.source.endswith("/bundle")
    downloaded = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id,
            artifact_path="bundle/manifest.json",
            dst_path=str(tmp_path / "down"),
            tracking_uri=store["tracking_uri"],
        )
    )
    assert json.loads(downloaded.read_text())["status"] == "complete"


def test_unknown_options_are_refused_naming_the_known_ones(tmp_path: Path) -> None:
    from treadle_mlflow import MlflowLogger

    config = small_config(
        tmp_path, plugins=PluginsConfig(options={"mlflow": {"experiment_name": "x"}})
    )
    with pytest.raises(ConfigError, match=r"experiment_name; known: artifact_location"):
        MlflowLogger(config, run_dir=tmp_path)


def test_the_logger_alone_sends_metrics_and_finishes_its_run(
    tmp_path: Path, store: dict[str, str]
) -> None:
    from treadle_mlflow import MlflowLogger

    config = small_config(tmp_path, plugins=PluginsConfig(options={"mlflow": store}))
    sink = MlflowLogger(config, run_dir=tmp_path)
    for step in range(1, 2501):  # more than one log_batch of 1000
        sink.log_metrics({"train/batch_loss": 1.0 / step}, step)
    sink.close()
    run = only_run(store)
    assert run.info.status == "FINISHED"
    assert len(history(store, run.info.run_id, "train/batch_loss")) == 2500


def test_the_sender_process_stores_nan_and_reports_errors(
    tmp_path: Path, store: dict[str, str]
) -> None:
    from treadle_mlflow.sender import MetricSender

    experiment = client(store).create_experiment(
        "tests", artifact_location=store["artifact_location"]
    )
    run_id = client(store).create_run(experiment).info.run_id
    sender = MetricSender(store["tracking_uri"], run_id)
    sender.send([(1, 1000, {"val_loss": float("nan"), "acc": 0.5}), (2, 2000, {"acc": 0.75})])
    with pytest.raises(RuntimeError, match="MlflowException"):
        sender.send([(3, 3000, {"bad name?!": 1.0})])  # MLflow refuses the name
    sender.close()
    ((step, value),) = history(store, run_id, "val_loss")
    assert step == 1
    assert value != value  # NaN
    assert history(store, run_id, "acc") == [(1, 0.5), (2, 0.75)]


def test_a_dead_sender_fails_the_next_send() -> None:
    from treadle_mlflow.sender import MetricSender

    sender = MetricSender("sqlite:///nowhere/at/all.db", "no-run")
    sender._process.kill()
    sender._process.wait()
    with pytest.raises(RuntimeError, match="sender process ended"):
        sender.send([(1, 1000, {"a": 1.0})])
    sender.close()
