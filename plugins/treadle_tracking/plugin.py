"""Hook implementations of the tracking plugin: the ``experiment`` logger, and the lifecycle
events its run's record needs (each a no-op for runs that log to no experiment store)."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from treadle import hookimpl
from treadle.hookspecs import Register
from treadle.protocols import TrainerView
from treadle_tracking.logger import PLUGIN_STATE_KEY, ExperimentLogger, logger_for


@hookimpl
def treadle_register_loggers(register: Register) -> None:
    register("experiment", ExperimentLogger)


@hookimpl
def treadle_on_load_checkpoint(trainer: TrainerView, plugin_state: Mapping[str, Any]) -> None:
    tracker = logger_for(trainer.training_config)
    if tracker is not None:
        tracker.resume_from(plugin_state)


@hookimpl
def treadle_on_training_start(trainer: TrainerView) -> None:
    tracker = logger_for(trainer.training_config)
    if tracker is not None:
        tracker.begin(global_step=trainer.global_step)


@hookimpl
def treadle_on_save_checkpoint(
    trainer: TrainerView, plugin_state: MutableMapping[str, Any]
) -> None:
    tracker = logger_for(trainer.training_config)
    if tracker is not None:
        plugin_state[PLUGIN_STATE_KEY] = tracker.checkpoint_state()


@hookimpl
def treadle_on_exception(trainer: TrainerView, exception: BaseException) -> None:
    tracker = logger_for(trainer.training_config)
    if tracker is not None:
        tracker.fail(exception)


@hookimpl
def treadle_on_training_end(trainer: TrainerView, results: Mapping[str, Any]) -> None:
    tracker = logger_for(trainer.training_config)
    if tracker is not None:
        tracker.finish(results)
