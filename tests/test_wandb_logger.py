"""The ``wandb`` logger plugin, run for real with ``WANDB_MODE=offline`` (no network)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

from tests.trainer_fixtures import (
    TinyClassifier,
    classification_task,
    engine_plugin_manager,
    loaders,
    needs_engine,
    small_config,
)
from treadle.config.training import PluginsConfig
from treadle.engine.trainer import Trainer
from treadle.errors import ConfigError

wandb = pytest.importorskip("wandb")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))


def _manager() -> object:
    import treadle_wandb.plugin

    return engine_plugin_manager(("wandb", treadle_wandb.plugin))


@needs_engine
@pytest.mark.slow
def test_a_run_with_wandb_project_logs_offline_and_a_resume_continues_the_same_run(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    config = small_config(run_dir, epochs=1, wandb_project="treadle-tests", run_name="blobs")
    trainer = Trainer(
        TinyClassifier(),
        None,
        config,
        classification_task(),
        device="cpu",
        plugin_manager=_manager(),
    )
    results = trainer.train(*loaders())
    run_id = (run_dir / "wandb-run-id").read_text().strip()
    offline_runs = list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline_runs) == 1, list((run_dir / "wandb").iterdir())
    assert list(offline_runs[0].glob("*.wandb")), "the run's history file was written"
    assert results["final_metrics"]["val_loss"] > 0

    resumed = small_config(run_dir, epochs=2, wandb_project="treadle-tests", resume="auto")
    Trainer(
        TinyClassifier(),
        None,
        resumed,
        classification_task(),
        device="cpu",
        plugin_manager=_manager(),
    ).train(*loaders())
    assert (run_dir / "wandb-run-id").read_text().strip() == run_id


@pytest.mark.slow
def test_the_logger_sends_metrics_and_clamps_replayed_steps(tmp_path: Path) -> None:
    from treadle_wandb import WandbLogger

    logger = WandbLogger(small_config(tmp_path, wandb_project="p"), run_dir=tmp_path)
    logger.log_metrics({"train/batch_loss": 0.5, "val/accuracy": float("nan")}, step=10)
    logger.log_metrics({"train/batch_loss": 0.25}, step=4)  # replayed after a resume
    assert logger._last_step == 10
    logger.close()
    # run.finish() only asks W&B's service to close the run; the service writes the run file
    # (buffered in blocks) when it does. teardown() waits for the service to exit, so for every
    # run it had. Reading before that saw only the 7-byte header under load (issue 14).
    wandb.teardown()
    (history,) = (tmp_path / "wandb").glob("offline-run-*/*.wandb")
    assert b"train/batch_loss" in history.read_bytes(), "the metrics reached W&B's run file"
    logger.close()  # twice is harmless
    with pytest.raises(ValueError, match="closed"):
        logger.log_metrics({"x": 1.0}, step=11)


def test_unknown_options_are_refused_with_the_known_ones(tmp_path: Path) -> None:
    from treadle_wandb import WandbLogger

    config = attrs.evolve(
        small_config(tmp_path), plugins=PluginsConfig(options={"wandb": {"entitty": "acme"}})
    )
    with pytest.raises(ConfigError, match=r"entitty.*known: entity"):
        WandbLogger(config, run_dir=tmp_path)


def test_wandb_project_switches_the_logger_on_through_the_plugin(tmp_path: Path) -> None:
    import treadle_wandb.plugin
    from treadle.engine.binding import configure_run
    from treadle.testing import check_hookimpls, isolated_plugin_manager

    assert check_hookimpls(treadle_wandb.plugin) == []
    manager = isolated_plugin_manager(("wandb", treadle_wandb.plugin))
    assert configure_run(manager, small_config(tmp_path)).logger_names == []
    switched_on = small_config(tmp_path, wandb_project="p")
    assert configure_run(manager, switched_on).logger_names == ["wandb"]


@pytest.fixture
def _no_wandb_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Online mode, no API key anywhere W&B looks, no terminal to prompt on."""
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.mark.usefixtures("_no_wandb_credentials")
@pytest.mark.parametrize("build", ["logger", "MetricsEngine", "MetricsTracker"])
def test_without_credentials_treadle_says_to_log_in_or_log_offline(
    tmp_path: Path, build: str
) -> None:
    """Issue 14: wandb's UsageError came from deep inside its login; treadle's ConfigError
    says what to do, when the logger is built (before any training)."""
    from treadle.engine.metrics import MetricsEngine
    from treadle.engine.tracker import MetricsTracker
    from treadle_wandb import WandbLogger

    config = small_config(tmp_path, wandb_project="p")
    builders: dict[str, Callable[[], object]] = {
        "logger": lambda: WandbLogger(config, run_dir=tmp_path),
        "MetricsEngine": lambda: MetricsEngine(
            use_wandb=True, training_config=config, plugin_manager=_manager()
        ),
        "MetricsTracker": lambda: MetricsTracker(
            use_wandb=True, training_config=config, plugin_manager=_manager()
        ),
    }
    with pytest.raises(ConfigError) as caught:
        builders[build]()
    message = str(caught.value)
    assert message.startswith("The 'wandb' logger cannot start a W&B run: UsageError: ")
    assert "`wandb login`" in message
    assert "WANDB_MODE=offline" in message
    assert isinstance(caught.value.__cause__, wandb.errors.Error)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"mode": "offlien"}, "mode must be one of online, offline, disabled: 'offlien'"),
        ({"tags": "a,b"}, "tags must be a list of strings: 'a,b'"),
        ({"entity": 3}, "entity must be a string: 3"),
    ],
)
def test_ill_typed_options_are_refused_naming_the_option(
    tmp_path: Path, options: dict[str, object], expected: str
) -> None:
    from treadle_wandb import WandbLogger

    config = attrs.evolve(small_config(tmp_path), plugins=PluginsConfig(options={"wandb": options}))
    with pytest.raises(ConfigError, match=f"plugins.options.wandb.{expected}"):
        WandbLogger(config, run_dir=tmp_path)
