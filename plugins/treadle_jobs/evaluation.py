"""The ``evaluation`` job: a registered model on a data set, its metrics logged as an
experiment run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from treadle.errors import ConfigError
from treadle.jobs.context import JobContext
from treadle_jobs.training import TRAINING_PRELOAD, json_number

if TYPE_CHECKING:
    import torch

    from treadle.config import TrainingConfig
    from treadle.model_registry import ModelRegistry
    from treadle.storage import ModelRegistryEntry

__all__ = ["EvaluationJob", "evaluate_model", "find_model", "model_reference"]

#: counts the evaluation reports beside the metrics; not compared, not logged as metrics
_BOOKKEEPING = ("val_samples", "val_batches", "val_runtime")


def model_reference(config: Mapping[str, Any], job_name: str) -> tuple[str, dict[str, Any]]:
    """The registry location and ``get_model`` arguments of a job's ``model`` entry:
    ``{"model": 42 | "42" | "name:1.0.0" | "@production", "registry_location": "treadle.db"}``.

    :raises ConfigError: no or a malformed model reference.
    """
    from treadle.model_loading import parse_model_ref

    reference = config.get("model")
    if isinstance(reference, bool) or not isinstance(reference, str | int):
        msg = (
            f"an {job_name} job's config needs 'model': a model id (42), name:version "
            f"('gpt:1.0.0') or tag ('@production'); got {reference!r}"
        )
        raise ConfigError(msg)
    location = config.get("registry_location", "treadle.db")
    if not isinstance(location, str) or not location:
        msg = f"'registry_location' must be a path or URL string: {location!r}"
        raise ConfigError(msg)
    return location, parse_model_ref(str(reference))


def find_model(registry: ModelRegistry, reference: str | int) -> ModelRegistryEntry:
    """The registry entry a reference (``42``, ``name:1.0.0``, ``@tag``) names.

    :raises UnknownNameError: nothing matches.
    """
    from treadle.model_loading import parse_model_ref

    return registry.get_model(**parse_model_ref(str(reference)))


def evaluate_model(
    model: torch.nn.Module, config: TrainingConfig, context: JobContext
) -> dict[str, float]:
    """``model``'s validation metrics (``val_loss``, ``val_<metric>``: the names training
    logs) on the validation split of ``config``'s data set (``max_val_samples`` applies).

    :raises ConfigError: the data set has no validation split.
    """
    import torch.utils.data

    from treadle.data import UniversalDataModule
    from treadle.engine.trainer import Trainer

    module = UniversalDataModule.from_training_config(config, plugin_manager=context.plugin_manager)
    full = module.val_dataset()
    if len(full) == 0:
        msg = (
            f"data set {config.dataset!r} has no validation split to evaluate on; set "
            f"validation_split > 0 in the training config"
        )
        raise ConfigError(msg)
    val_data: torch.utils.data.Dataset[Any] = full
    if config.max_val_samples is not None and config.max_val_samples < len(full):
        val_data = torch.utils.data.Subset(full, range(config.max_val_samples))
    trainer = Trainer(
        model=model,
        config=None,
        training_config=config,
        task_spec=module.task_spec,
        device=config.device,
        plugin_manager=context.plugin_manager,
    )
    values = trainer.evaluate(val_data, metric_prefix="val_")
    return {name: value for name, value in values.items() if name not in _BOOKKEEPING}


def _log_run(
    location: str, entry: ModelRegistryEntry, metrics: Mapping[str, float], context: JobContext
) -> int:
    """Record the evaluation as a completed experiment run named by the job's key (a retried
    job finds its run instead of logging a second one)."""
    from treadle.experiments import ExperimentDB

    run_name = f"evaluation-{context.job_key}"
    with ExperimentDB(location, plugin_manager=context.plugin_manager) as db:
        existing = db.find_runs(name=run_name, limit=1)
        if existing:
            return existing[0].run_id
        run_id = db.log_run(
            run_name,
            {"model_id": entry.model_id, "name": entry.name, "version": entry.version},
            notes=f"evaluation of {entry.name} {entry.version} by job {context.job_id}",
            status="running",
        )
        db.log_metrics(run_id, metrics)
        db.update_run(run_id, status="completed")
    return run_id


class EvaluationJob:
    """``evaluation``: config ``{"model": REF, "registry_location": ..., "overrides": {...},
    "experiment_location": ...}``. Validates the model on the data its training config names
    (``overrides`` replace fields, e.g. another ``dataset``), returns the metrics and logs
    them as an experiment run (``experiment_location``, default the training config's; null
    logs nothing)."""

    preload = TRAINING_PRELOAD

    def validate_config(self, config: Mapping[str, Any]) -> None:
        model_reference(config, "evaluation")
        overrides = config.get("overrides", {})
        if not isinstance(overrides, Mapping):
            msg = (
                f"an evaluation job's 'overrides' must be a dict of training config fields: "
                f"{overrides!r}"
            )
            raise ConfigError(msg)

    def run(self, context: JobContext) -> Mapping[str, Any]:
        from treadle.config import TrainingConfig
        from treadle.model_loading import load_checkpoint_model
        from treadle.model_registry import ModelRegistry

        location, reference = model_reference(context.config, "evaluation")
        with ModelRegistry(location, plugin_manager=context.plugin_manager) as registry:
            entry = registry.get_model(**reference)
        model, training_config, _ = load_checkpoint_model(
            entry.checkpoint_path, context.plugin_manager
        )
        overrides = dict(context.config.get("overrides", {}))
        config = TrainingConfig.from_dict(
            {**training_config.to_dict(), **overrides}, source="evaluation job 'overrides'"
        )
        config = attrs.evolve(config, checkpoint_dir=str(context.output_dir / "run"))
        metrics = evaluate_model(model, config, context)
        experiment_location = context.config.get("experiment_location", config.experiment_location)
        run_id = None
        if experiment_location is not None:
            run_id = _log_run(str(experiment_location), entry, metrics, context)
        return {
            "model_id": entry.model_id,
            "model_name": entry.name,
            "model_version": entry.version,
            "dataset": config.dataset,
            "metrics": {name: json_number(value) for name, value in metrics.items()},
            "run_id": run_id,
        }
