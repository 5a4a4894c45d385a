"""The ``retraining`` job: ask the RetrainingTrigger whether the current model needs it, then
train as the ``training`` job does, starting from the current model's weights and linking it
as the new version's parent; the decision and its reasons are part of the result."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from treadle.errors import ConfigError, UnknownNameError
from treadle.jobs.context import JobContext
from treadle.jobs.triggers import RetrainingDecision, RetrainingTrigger
from treadle_jobs.evaluation import evaluate_model, find_model
from treadle_jobs.training import TRAINING_PRELOAD, read_training_config, train_and_register

if TYPE_CHECKING:
    from treadle.config import TrainingConfig
    from treadle.model_registry import ModelRegistry
    from treadle.storage import ModelRegistryEntry

__all__ = ["RetrainingJob", "last_retrain_at"]

logger = logging.getLogger(__name__)

_TRIGGER_KEYS = (
    "monitor_metric",
    "degradation_threshold",
    "min_days_between_retrains",
    "drift_threshold",
    "higher_is_better",
)
#: the training config fields that fix a model's shape: weights carry over when they match
_ARCHITECTURE = (
    "model_type",
    "vocab_size",
    "max_seq_len",
    "d_model",
    "num_layers",
    "num_heads",
    "d_ff",
)


def _trigger(config: Mapping[str, Any]) -> RetrainingTrigger | None:
    options = config.get("trigger")
    if options is None:
        return None
    if not isinstance(options, Mapping) or set(options) - set(_TRIGGER_KEYS):
        msg = (
            f"a retraining job's 'trigger' must be a dict with keys among "
            f"{', '.join(_TRIGGER_KEYS)}: {options!r}"
        )
        raise ConfigError(msg)
    return RetrainingTrigger(**options)


def _metrics(config: Mapping[str, Any], key: str) -> dict[str, float] | None:
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(
        isinstance(number, int | float) and not isinstance(number, bool)
        for number in value.values()
    ):
        msg = f"a retraining job's {key!r} must map metric names to numbers: {value!r}"
        raise ConfigError(msg)
    return {str(name): float(number) for name, number in value.items()}


def _check(config: Mapping[str, Any]) -> None:
    read_training_config(config)
    _trigger(config)
    _metrics(config, "current_metrics")
    _metrics(config, "reference_metrics")
    drift = config.get("drift_score")
    if drift is not None and (isinstance(drift, bool) or not isinstance(drift, int | float)):
        msg = f"a retraining job's 'drift_score' must be a number: {drift!r}"
        raise ConfigError(msg)
    parent = config.get("parent_model")
    if parent is not None and (isinstance(parent, bool) or not isinstance(parent, str | int)):
        msg = f"'parent_model' must be a model id, name:version or @tag: {parent!r}"
        raise ConfigError(msg)


def last_retrain_at(registry: ModelRegistry, model_name: str) -> str | None:
    """When model ``model_name`` was last retrained: the newest registered version that has
    a parent (ISO 8601), or ``None``."""
    for entry in registry.store.find_models(name=model_name, limit=None):
        if entry.parent_model_id is not None:
            return entry.created_at
    return None


def _parent(
    registry: ModelRegistry, config: Mapping[str, Any], model_name: str
) -> ModelRegistryEntry | None:
    reference = config.get("parent_model")
    if reference is not None:
        return find_model(registry, reference)
    try:
        return registry.get_model(name=model_name)
    except UnknownNameError:
        return None


def _decide(
    trigger: RetrainingTrigger,
    context: JobContext,
    registry: ModelRegistry,
    training_config: TrainingConfig,
    parent: ModelRegistryEntry | None,
) -> RetrainingDecision:
    config = context.config
    if parent is None:
        return RetrainingDecision(
            should_retrain=True,
            reasons=(f"no version of {training_config.model_name!r} is registered yet",),
            monitor_metric=trigger.monitor_metric,
            degradation=None,
            drift_score=None,
        )
    reference = _metrics(config, "reference_metrics") or dict(parent.metrics)
    current = _metrics(config, "current_metrics")
    if current is None:
        from treadle.model_loading import load_checkpoint_model

        model, _, _ = load_checkpoint_model(parent.checkpoint_path, context.plugin_manager)
        current = evaluate_model(model, training_config, context)
        logger.info("model %d on today's data: %s", parent.model_id, current)
    drift = config.get("drift_score")
    return trigger.should_retrain(
        current,
        reference,
        None if drift is None else float(drift),
        last_retrain_at(registry, training_config.model_name),
        now=datetime.now().astimezone(),
    )


def _initial_state(
    parent: ModelRegistryEntry, training_config: TrainingConfig, context: JobContext
) -> tuple[dict[str, Any] | None, str]:
    """The parent's weights when its architecture matches the new config's, and why not."""
    from treadle.model_loading import load_checkpoint_model

    model, parent_config, _ = load_checkpoint_model(parent.checkpoint_path, context.plugin_manager)
    different = [
        field
        for field in _ARCHITECTURE
        if getattr(parent_config, field) != getattr(training_config, field)
    ]
    if different:
        return None, f"fresh weights: the parent differs in {', '.join(different)}"
    return model.state_dict(), f"started from the weights of model {parent.model_id}"


class RetrainingJob:
    """``retraining``: config ``{"training_config": {...}}``, optionally ``"trigger"``
    (RetrainingTrigger options: without it the job always retrains, as a scheduled retrain
    does), ``"parent_model"`` (default: the newest version of ``model_name``),
    ``"warm_start"`` (default true: start from the parent's weights), and
    ``"current_metrics"``, ``"reference_metrics"``, ``"drift_score"`` to decide on given
    numbers (by default the parent is evaluated on the config's data and compared with the
    metrics it was registered with)."""

    preload = TRAINING_PRELOAD

    def validate_config(self, config: Mapping[str, Any]) -> None:
        _check(config)

    def run(self, context: JobContext) -> Mapping[str, Any]:
        from treadle.model_registry import ModelRegistry

        training_config = read_training_config(context.config)
        name = training_config.model_name
        with ModelRegistry(
            training_config.registry_location, plugin_manager=context.plugin_manager
        ) as registry:
            parent = _parent(registry, context.config, name)
            trigger = _trigger(context.config)
            decision = (
                None
                if trigger is None
                else _decide(trigger, context, registry, training_config, parent)
            )
        summary = None if decision is None else decision.to_dict()
        if decision is not None and not decision:
            logger.info("no retraining of %s: %s", name, "; ".join(decision.reasons))
            return {"retrained": False, "model_name": name, "decision": summary}
        initial_state, start = None, "fresh weights: no parent"
        if parent is not None and context.config.get("warm_start", True):
            initial_state, start = _initial_state(parent, training_config, context)
        result = train_and_register(
            context, training_config, parent=parent, initial_state=initial_state
        )
        result.update(retrained=True, decision=summary, start=start)
        return result
