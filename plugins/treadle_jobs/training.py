"""The ``training`` job: the main job's flow (``treadle train``) run from a stored config, its
model registered under the job's key so that a retried attempt never registers two models."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from treadle.errors import ConfigError
from treadle.jobs.context import JobContext

if TYPE_CHECKING:
    import torch

    from treadle.config import TrainingConfig
    from treadle.model_registry import ModelRegistry
    from treadle.storage import ModelRegistryEntry

__all__ = [
    "TRAINING_PRELOAD",
    "TrainingJob",
    "json_number",
    "next_version",
    "read_training_config",
    "registered_by_job",
    "train_and_register",
]

logger = logging.getLogger(__name__)

#: what the fork server imports once for training-like jobs: torch, the engine and data, and
#: ``torch._dynamo``, which the first optimizer of a process would otherwise load (~1 s)
TRAINING_PRELOAD = (
    "torch",
    "torch._dynamo",
    "treadle.run_setup",
    "treadle.engine.trainer",
    "treadle.data.module",
    "treadle.model_registry",
    "treadle.experiments",
)

#: how often a registration retries when a concurrent job took the version it chose
_VERSION_ATTEMPTS = 5


def read_training_config(config: Mapping[str, Any]) -> TrainingConfig:
    """The ``training_config`` entry of a job config, validated (fields it leaves out take
    their defaults).

    :raises ConfigError: it is missing or invalid; every problem listed.
    """
    from treadle.config import TrainingConfig

    data = config.get("training_config")
    if not isinstance(data, Mapping):
        msg = (
            "a training job's config needs 'training_config': a TrainingConfig as a dict "
            "(config={'training_config': training_config.to_dict()})"
        )
        raise ConfigError(msg)
    return TrainingConfig.from_dict(data, source="job config 'training_config'")


def json_number(value: float) -> float | None:
    """``value`` as a float for a job's result, ``None`` when it is not finite (results are
    strict JSON)."""
    number = float(value)
    return number if math.isfinite(number) else None


def next_version(registry: ModelRegistry, name: str) -> str:
    """The version after the highest ``MAJOR.MINOR.PATCH`` of model ``name`` (patch + 1), or
    ``1.0.0`` for a new name."""
    versions = []
    for entry in registry.store.find_models(name=name, limit=None):
        parts = entry.version.split(".")
        if len(parts) == 3 and all(part.isdigit() for part in parts):
            versions.append(tuple(int(part) for part in parts))
    if not versions:
        return "1.0.0"
    major, minor, patch = max(versions)
    return f"{major}.{minor}.{patch + 1}"


def registered_by_job(
    registry: ModelRegistry, name: str, job_key: str
) -> ModelRegistryEntry | None:
    """The version of ``name`` a job with ``job_key`` registered, if one did."""
    for entry in registry.store.find_models(name=name, limit=None):
        if entry.job_key == job_key:
            return entry
    return None


def _training_run_id(
    config: TrainingConfig, run_dir: str | None, context: JobContext
) -> int | None:
    """The experiment run the tracking logger recorded for ``run_dir``, if any."""
    if config.experiment_location is None or run_dir is None:
        return None
    from treadle.experiments import ExperimentDB

    with ExperimentDB(config.experiment_location, plugin_manager=context.plugin_manager) as db:
        runs = db.find_runs(run_dir=str(Path(run_dir).resolve()), limit=1)
    return runs[0].run_id if runs else None


def _register(
    registry: ModelRegistry,
    config: TrainingConfig,
    context: JobContext,
    **fields: Any,
) -> int:
    from treadle.storage import DuplicateModelError

    for attempt in range(_VERSION_ATTEMPTS):
        version = next_version(registry, config.model_name)
        try:
            return registry.register_model(
                name=config.model_name,
                version=version,
                job_key=context.job_key,
                **fields,
            )
        except DuplicateModelError:
            # another job registered this version between our read and write: take the next
            if attempt == _VERSION_ATTEMPTS - 1:
                raise
    raise AssertionError  # unreachable: the loop returns or raises


def _export(
    model: torch.nn.Module,
    entry: ModelRegistryEntry,
    config: TrainingConfig,
    task_spec: Any,
    registry: ModelRegistry,
    context: JobContext,
) -> dict[str, Any]:
    from treadle.export import create_export_bundle, read_manifest

    bundle = create_export_bundle(
        model,
        config={"name": entry.name, "version": entry.version, "model_id": entry.model_id},
        task_spec=task_spec,
        training_config=config,
        output_dir=str(context.output_dir / "exports"),
        formats=list(config.export_formats),
        plugin_manager=context.plugin_manager,
    )
    manifest = read_manifest(bundle)
    registry.add_export_formats(entry.model_id, list(manifest["artifacts"]))
    return {
        "bundle_path": str(bundle),
        "export_status": manifest["status"],
        "export_errors": dict(manifest["errors"]),
    }


def train_and_register(
    context: JobContext,
    training_config: TrainingConfig,
    *,
    parent: ModelRegistryEntry | None = None,
    initial_state: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train as ``treadle train`` does (model from the model registry, data from the data
    module, the Trainer) into this attempt's folder, register the best checkpoint under the
    job's key, and export it when ``export_formats`` asks.

    A job whose earlier attempt registered its model already (it died after registering)
    does not train again: it returns that model, exporting it if the config asks.

    :param parent: the model this one is retrained from (its lineage).
    :param initial_state: weights to start from (a ``state_dict``), e.g. the parent's.
    :returns: the job's result: run folder, metrics, model id, version, parent, bundle.
    """
    from treadle.model_registry import ModelRegistry

    registry = ModelRegistry(
        training_config.registry_location, plugin_manager=context.plugin_manager
    )
    config = attrs.evolve(
        training_config,
        checkpoint_dir=str(context.output_dir / "run"),
        run_name=training_config.run_name or context.job_key,
    )
    parent_id = None if parent is None else parent.model_id
    result: dict[str, Any] = {"model_name": config.model_name, "parent_model_id": parent_id}
    entry = registered_by_job(registry, config.model_name, context.job_key)
    if entry is not None:
        logger.info(
            "job %s registered model %d already: not training again",
            context.job_key,
            entry.model_id,
        )
        result.update(model_id=entry.model_id, model_version=entry.version, reused=True)
        if config.export_formats:
            from treadle.model_loading import load_checkpoint_model

            model, saved_config, task_spec = load_checkpoint_model(
                entry.checkpoint_path, context.plugin_manager
            )
            result.update(_export(model, entry, saved_config, task_spec, registry, context))
        return result

    from treadle.run_setup import build_run_setup

    setup = build_run_setup(config, context.plugin_manager)
    if initial_state is not None:
        setup.model.load_state_dict(dict(initial_state))
    results = setup.make_trainer(context.plugin_manager).train(setup.train_data, setup.val_data)
    metrics = {
        name: float(value)
        for name, value in (results.get("final_metrics") or {}).items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    best_val_loss = results.get("best_val_loss")
    result.update(
        run_dir=results.get("run_dir"),
        best_val_loss=None if best_val_loss is None else json_number(best_val_loss),
        metrics={name: json_number(value) for name, value in metrics.items()},
        stop_reason=results.get("stop_reason"),
        model_id=None,
    )
    checkpoint = results.get("best_checkpoint")
    if checkpoint is None:
        logger.warning("job %s saved no checkpoint: nothing registered", context.job_key)
        return result
    model_id = _register(
        registry,
        config,
        context,
        checkpoint_path=str(checkpoint),
        task_type=setup.task_spec.task_type,
        metrics=metrics,
        config_hash=training_config.config_hash(),
        training_run_id=_training_run_id(config, results.get("run_dir"), context),
        parent_model_id=parent_id,
    )
    entry = registry.get_model(model_id=model_id)
    result.update(model_id=entry.model_id, model_version=entry.version, reused=False)
    if config.export_formats:
        result.update(_export(setup.model, entry, config, setup.task_spec, registry, context))
    return result


class TrainingJob:
    """``training``: config ``{"training_config": {...}}``; trains, registers the model (and
    exports it when ``export_formats`` is set)."""

    preload = TRAINING_PRELOAD

    def validate_config(self, config: Mapping[str, Any]) -> None:
        read_training_config(config)

    def run(self, context: JobContext) -> Mapping[str, Any]:
        return train_and_register(context, read_training_config(context.config))
