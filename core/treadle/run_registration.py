"""Training that reaches the registry: a finished run's best checkpoint registered as the next
version of its model, once per run, with its metrics, config hash and lineage; and any
treadle checkpoint registered after a verified load.

``treadle train`` calls :func:`register_run` when a run completes; ``treadle registry
register`` calls :func:`register_checkpoint`. A run registers under the key
``run:<run id>:step:<its last optimizer step>``, so registering it again (a crash right after
registering, a second call) never makes a second version: the registry hands back the first
(:meth:`ModelRegistry.register_model
<treadle.model_registry.ModelRegistry.register_model>`'s ``job_key``). A finished run resumed
for more epochs trained further, and registers its new best as a new version.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from treadle.storage import DuplicateModelError

if TYPE_CHECKING:
    from treadle.config import TrainingConfig
    from treadle.engine.drift import DataProfile
    from treadle.model_registry import ModelRegistry
    from treadle.plugins import PluginManager
    from treadle.storage import ModelRegistryEntry

__all__ = [
    "experiment_run_id",
    "register_checkpoint",
    "register_run",
    "registry_config_hash",
    "run_job_key",
]

logger = logging.getLogger(__name__)

#: how often a registration asks for the next version again when a concurrent one took it
_VERSION_ATTEMPTS = 5
#: where a config names its run's places, not what is trained: left out of the config hash
_PLACE_FIELDS = ("checkpoint_dir", "resume", "run_name", "notes")


def registry_config_hash(config: TrainingConfig) -> str:
    """The config hash a registered model carries: SHA-256 of the config without the fields
    that only place the run (``checkpoint_dir``, ``resume``, ``run_name``, ``notes``), so a
    run, its resumed attempts and a rerun elsewhere of the same config agree."""
    from treadle.config import TrainingConfig

    defaults = TrainingConfig()
    placed = attrs.evolve(config, **{name: getattr(defaults, name) for name in _PLACE_FIELDS})
    return placed.config_hash()


def run_job_key(run_id: str, global_step: int) -> str:
    """The registry key of a run's registration once it ended at optimizer step
    ``global_step``: one model version per run (and per extension of it)."""
    return f"run:{run_id}:step:{global_step}"


def experiment_run_id(
    location: str | None, run_dir: str | os.PathLike[str], plugin_manager: PluginManager | None
) -> int | None:
    """The experiment run recorded for ``run_dir`` in the store at ``location`` (the
    tracking logger records each run's folder), or ``None``."""
    if location is None:
        return None
    from treadle.errors import StorageError
    from treadle.experiments import ExperimentDB

    try:
        with ExperimentDB(location, plugin_manager=plugin_manager) as db:
            runs = db.find_runs(run_dir=str(Path(run_dir).resolve()), limit=1)
    except StorageError as err:
        logger.warning("no lineage to an experiment run: %s", err)
        return None
    return runs[0].run_id if runs else None


def register_checkpoint(
    registry: ModelRegistry,
    *,
    name: str,
    checkpoint: str | os.PathLike[str],
    task_type: str,
    metrics: Mapping[str, float],
    config_hash: str,
    version: str | None = None,
    tags: Sequence[str] = (),
    training_run_id: int | None = None,
    parent_model_id: int | None = None,
    data_profile: DataProfile | Mapping[str, Any] | None = None,
    job_key: str | None = None,
) -> ModelRegistryEntry:
    """Register ``checkpoint`` as a version of model ``name``: ``version``, or the next free
    one (:meth:`~treadle.model_registry.ModelRegistry.next_version`, asked again when a
    concurrent registration takes it first).

    :raises DuplicateModelError: ``version`` is given and taken.
    """
    attempts = 1 if version is not None else _VERSION_ATTEMPTS
    for attempt in range(attempts):
        chosen = version if version is not None else registry.next_version(name)
        try:
            model_id = registry.register_model(
                name=name,
                version=chosen,
                checkpoint_path=str(checkpoint),
                task_type=task_type,
                metrics=dict(metrics),
                config_hash=config_hash,
                training_run_id=training_run_id,
                parent_model_id=parent_model_id,
                tags=tuple(tags),
                data_profile=data_profile,
                job_key=job_key,
            )
        except DuplicateModelError:
            if attempt == attempts - 1:
                raise
            continue
        return registry.get_model(model_id=model_id)
    raise AssertionError  # unreachable: the loop returns or raises


def best_checkpoint_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of the epoch the best checkpoint was saved at (its history row), else the
    final ones; numbers only."""
    from treadle.engine.checkpoints.names import CHECKPOINT_NAME

    best = results.get("best_checkpoint")
    match = CHECKPOINT_NAME.match(Path(best).name) if best else None
    row: Mapping[str, Any] = results.get("final_metrics") or {}
    if match is not None and match["step"] is None:
        epoch = int(match["epoch"])
        found = [item for item in results.get("history") or [] if item.get("epoch") == epoch]
        if found:
            row = found[-1]
    return {
        name: float(value)
        for name, value in row.items()
        if name != "epoch" and isinstance(value, int | float) and not isinstance(value, bool)
    }


def register_run(
    registry: ModelRegistry,
    results: Mapping[str, Any],
    config: TrainingConfig,
    *,
    task_type: str,
    plugin_manager: PluginManager | None = None,
    data_profile: DataProfile | Mapping[str, Any] | None = None,
) -> ModelRegistryEntry | None:
    """Register a finished run's best checkpoint as the next version of
    ``config.model_name``, with the metrics of its epoch, :func:`registry_config_hash`,
    lineage to the experiment run that recorded it (``training_run_id``) and ``data_profile``
    when there is one. A run registers once: registering it again returns the first entry.

    :param results: :meth:`Trainer.train <treadle.engine.trainer.Trainer.train>`'s results.
    :returns: the entry, or ``None`` when the run saved no best checkpoint.
    """
    checkpoint = results.get("best_checkpoint")
    if not checkpoint:
        logger.warning("run %s has no best checkpoint: nothing registered", results.get("run_id"))
        return None
    run_id = results.get("run_id")
    return register_checkpoint(
        registry,
        name=config.model_name,
        checkpoint=checkpoint,
        task_type=task_type,
        metrics=best_checkpoint_metrics(results),
        config_hash=registry_config_hash(config),
        training_run_id=experiment_run_id(
            config.experiment_location, results["run_dir"], plugin_manager
        ),
        data_profile=data_profile,
        job_key=None
        if run_id is None
        else run_job_key(str(run_id), int(results.get("global_step") or 0)),
    )
