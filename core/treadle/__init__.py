"""treadle: a modular PyTorch training engine. A small core of pluggy hooks; every capability,
the built-ins included, is a plugin found through the ``treadle`` entry-point group.

Public names load on first use (PEP 562), so ``import treadle`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from treadle.errors import (
    ConfigError,
    DataError,
    PluginConflictError,
    PluginError,
    PluginLoadError,
    RegistrationError,
    StorageError,
    TreadleError,
    UnknownNameError,
)
from treadle.lazy import lazy_attributes

__version__ = "0.1.0"

#: Marks a function as a hook implementation: ``@treadle.hookimpl``.
hookimpl = pluggy.HookimplMarker("treadle")

if TYPE_CHECKING:
    from treadle.collators import CollatorRegistry
    from treadle.config import PluginsConfig, TrainingConfig, TrainingConfigBuilder
    from treadle.control import TrainerControl
    from treadle.data import DataLoaderConfig, DataLoaderFactory, UniversalDataModule
    from treadle.engine.accumulation import AccumulationStats, GradientAccumulator
    from treadle.engine.checkpoints import CheckpointManager, CheckpointMetadata
    from treadle.engine.drift import DriftMetrics, build_profile
    from treadle.engine.gradient_monitor import (
        GradientHealth,
        GradientMonitor,
        check_gradient_health,
    )
    from treadle.engine.loops import EpochResult, TrainingLoop, ValidationLoop
    from treadle.engine.metrics import AlertConfig, MetricsEngine
    from treadle.engine.tracker import MetricsTracker
    from treadle.engine.trainer import Trainer
    from treadle.experiments import ExperimentDB
    from treadle.export import ExportError, create_export_bundle
    from treadle.losses import LossInputs, LossStrategyRegistry, ModelOutput, get_loss_strategy
    from treadle.model_registry import ModelRegistry
    from treadle.plugins import PluginManager, get_plugin_manager, get_registry, make_plugin_manager
    from treadle.seed import set_random_seed
    from treadle.storage import ModelRegistryEntry, open_store
    from treadle.task import TaskSpec

_LAZY: dict[str, str] = {
    # engine
    "Trainer": "treadle.engine.trainer",
    "TrainingLoop": "treadle.engine.loops",
    "ValidationLoop": "treadle.engine.loops",
    "EpochResult": "treadle.engine.loops",
    "GradientAccumulator": "treadle.engine.accumulation",
    "AccumulationStats": "treadle.engine.accumulation",
    "GradientMonitor": "treadle.engine.gradient_monitor",
    "GradientHealth": "treadle.engine.gradient_monitor",
    "check_gradient_health": "treadle.engine.gradient_monitor",
    "MetricsEngine": "treadle.engine.metrics",
    "AlertConfig": "treadle.engine.metrics",
    "DriftMetrics": "treadle.engine.drift",
    "build_profile": "treadle.engine.drift",
    "MetricsTracker": "treadle.engine.tracker",
    "CheckpointManager": "treadle.engine.checkpoints",
    "CheckpointMetadata": "treadle.engine.checkpoints",
    # losses, collators, data
    "LossInputs": "treadle.losses",
    "LossStrategyRegistry": "treadle.losses",
    "ModelOutput": "treadle.losses",
    "get_loss_strategy": "treadle.losses",
    "CollatorRegistry": "treadle.collators",
    "DataLoaderConfig": "treadle.data",
    "DataLoaderFactory": "treadle.data",
    "UniversalDataModule": "treadle.data",
    # storage
    "ModelRegistry": "treadle.model_registry",
    "ModelRegistryEntry": "treadle.storage",
    "ExperimentDB": "treadle.experiments",
    "open_store": "treadle.storage",
    # export
    "create_export_bundle": "treadle.export",
    "ExportError": "treadle.export",
    # core
    "PluginManager": "treadle.plugins",
    "PluginsConfig": "treadle.config",
    "TaskSpec": "treadle.task",
    "TrainerControl": "treadle.control",
    "TrainingConfig": "treadle.config",
    "TrainingConfigBuilder": "treadle.config",
    "get_plugin_manager": "treadle.plugins",
    "get_registry": "treadle.plugins",
    "make_plugin_manager": "treadle.plugins",
    "set_random_seed": "treadle.seed",
}

__all__ = [
    "ConfigError",
    "DataError",
    "PluginConflictError",
    "PluginError",
    "PluginLoadError",
    "RegistrationError",
    "StorageError",
    "TreadleError",
    "UnknownNameError",
    "__version__",
    "hookimpl",
    *_LAZY,
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
