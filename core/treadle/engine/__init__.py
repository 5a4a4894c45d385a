"""The training engine: Trainer, loops, gradients, checkpoints, metrics and drift.

Names load on first use (PEP 562): ``from treadle.engine import Trainer`` imports the trainer,
not the checkpoint or metrics code it does not need yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from treadle.lazy import lazy_attributes

if TYPE_CHECKING:
    from treadle.engine.dispatch import LifecycleDispatch
    from treadle.engine.loops import EpochProgress, EpochResult, TrainingLoop, ValidationLoop
    from treadle.engine.optim import build_optimizer, build_scheduler, parameter_groups
    from treadle.engine.precision import Precision, resolve_precision
    from treadle.engine.trainer import Trainer, resolve_device
    from treadle.engine.view import RunView

_LAZY: dict[str, str] = {
    "Trainer": "treadle.engine.trainer",
    "resolve_device": "treadle.engine.trainer",
    "TrainingLoop": "treadle.engine.loops",
    "ValidationLoop": "treadle.engine.loops",
    "EpochResult": "treadle.engine.loops",
    "EpochProgress": "treadle.engine.loops",
    "LifecycleDispatch": "treadle.engine.dispatch",
    "RunView": "treadle.engine.view",
    "Precision": "treadle.engine.precision",
    "resolve_precision": "treadle.engine.precision",
    "build_optimizer": "treadle.engine.optim",
    "build_scheduler": "treadle.engine.optim",
    "parameter_groups": "treadle.engine.optim",
    # built by the engine's other parts
    "CheckpointManager": "treadle.engine.checkpoints",
    "CheckpointMetadata": "treadle.engine.checkpoints",
    "GradientAccumulator": "treadle.engine.accumulation",
    "AccumulationStats": "treadle.engine.accumulation",
    "GradientMonitor": "treadle.engine.gradient_monitor",
    "GradientHealth": "treadle.engine.gradient_monitor",
    "GradientExplosionError": "treadle.engine.gradient_monitor",
    "check_gradient_health": "treadle.engine.gradient_monitor",
    "MetricsEngine": "treadle.engine.metrics",
    "AlertConfig": "treadle.engine.metrics",
    "DriftMetrics": "treadle.engine.metrics",
}

__all__ = [
    "AccumulationStats",
    "AlertConfig",
    "CheckpointManager",
    "CheckpointMetadata",
    "DriftMetrics",
    "EpochProgress",
    "EpochResult",
    "GradientAccumulator",
    "GradientExplosionError",
    "GradientHealth",
    "GradientMonitor",
    "LifecycleDispatch",
    "MetricsEngine",
    "Precision",
    "RunView",
    "Trainer",
    "TrainingLoop",
    "ValidationLoop",
    "build_optimizer",
    "build_scheduler",
    "check_gradient_health",
    "parameter_groups",
    "resolve_device",
    "resolve_precision",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
