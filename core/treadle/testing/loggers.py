"""Conformance checks for metric loggers, treadle's and any plugin's.

Call :func:`check_logger` with the registered class and a folder; give ``read_steps``, a
function reading back the steps your sink kept for a run folder, and the resume rule runs too::

    import json
    from treadle.testing.loggers import check_logger
    from acme_treadle.csv_logger import CsvLogger


    def read_steps(run_dir):
        lines = (run_dir / "metrics.csv").read_text().splitlines()[1:]
        return [int(line.split(",")[0]) for line in lines]


    def test_csv_logger_conforms(tmp_path):
        check_logger(CsvLogger, tmp_path, read_steps=read_steps)

The check plays two runs on one run folder as the Trainer drives them, binding the logger's
``@hookimpl`` methods to each run exactly as a run binds its loggers: the first logs steps 1-6,
saves a checkpoint at step 4 (``treadle_on_save_checkpoint``) and fails
(``treadle_on_exception``, then ``close()``); the second is a new logger on the same folder,
resumed from that checkpoint (``treadle_on_load_checkpoint`` with the trainer at step 4, then
``treadle_on_training_start``), which logs steps 5-8 again with other values, closes and ends
(``treadle_on_training_end``). The rules:

``built the trainer's way``
    ``cls(training_config=..., run_dir=...)`` builds it.
``binds to one run``
    Its ``treadle_*`` methods are lifecycle hooks marked ``@hookimpl`` whose arguments the
    hooks provide (no registration hook: registries are filled once per plugin manager).
``takes metrics``
    ``log_metrics`` takes names holding ``/``, ints, floats, NaN and infinities at
    increasing steps.
``closes after an error``
    ``treadle_on_exception`` then ``close()`` end a failed run without an error.
``plain plugin state``
    What it adds to ``plugin_state`` in ``treadle_on_save_checkpoint`` survives
    ``torch.save`` and ``torch.load(weights_only=True)``, as checkpoints need, and it leaves
    other plugins' keys alone.
``resumes without duplicate steps``
    (with ``read_steps``) after the resumed run, the sink holds each of the steps 1-8 once,
    in order: steps replayed after the checkpoint replace those the failed run logged after
    it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from treadle.protocols import MetricLogger
from treadle.testing.report import ConformanceReport, Rule, RuleRunner

__all__ = ["RULES", "check_logger", "make_run_view"]

#: The rules :func:`check_logger` enforces, in order.
RULES = (
    Rule("built the trainer's way", "cls(training_config=..., run_dir=...) builds it"),
    Rule(
        "binds to one run",
        "its treadle_* methods are @hookimpl lifecycle hooks taking arguments the hooks provide",
    ),
    Rule("takes metrics", "log_metrics takes '/' in names, ints, floats, NaN and infinities"),
    Rule("closes after an error", "treadle_on_exception then close() end a failed run"),
    Rule(
        "plain plugin state",
        "what it adds to plugin_state survives torch.load(weights_only=True); other keys stay",
    ),
    Rule(
        "resumes without duplicate steps",
        "after a failed run and its resume from step 4, the sink holds steps 1-8 once each",
    ),
)

#: Step of the checkpoint the second run resumes from, and the last step of each run.
CHECKPOINT_STEP = 4
FAILED_AT_STEP = 6
LAST_STEP = 8


def make_run_view(training_config: Any, run_dir: Path, global_step: int) -> Any:
    """A :class:`~treadle.protocols.TrainerView` of a small run at ``global_step``, as
    lifecycle hooks receive it (``treadle.engine.view.RunView``)."""
    from treadle.engine.view import RunState, RunView
    from treadle.task import TaskSpec

    model = torch.nn.Linear(4, 3)
    state = RunState()
    state.global_step = global_step
    state.epoch = global_step // 4
    return RunView(
        training_config=training_config,
        task_spec=TaskSpec.classification(
            "conformance",
            num_classes=3,
            modality="tabular",
            preprocessing_config={"num_features": 4},
        ),
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        device=torch.device("cpu"),
        run_dir=Path(run_dir),
        state=state,
    )


def check_logger(
    logger_factory: Callable[..., MetricLogger],
    run_dir: Path,
    *,
    read_steps: Callable[[Path], Sequence[int]] | None = None,
    training_config: Any = None,
    name: str = "logger",
) -> ConformanceReport:
    """Play a failed run and its resume through loggers from ``logger_factory`` in
    ``run_dir`` (see the module docstring) and check the rules above.

    :param read_steps: reads the steps the sink kept for ``run_dir``, in the order a reader
        sees them (for a sink outside the folder, read your test server); None skips the
        resume rule.
    :param training_config: given to the logger (default: ``TrainingConfig`` with
        ``checkpoint_dir=run_dir`` and ``experiment_location`` ``run_dir/experiments.db``).
    :param name: the logger's registered name, for messages.
    :returns: the report; ``details["steps"]``: what ``read_steps`` read, when given.
    :raises ConformanceError: a rule is broken; the message names it.
    """
    from treadle.config import TrainingConfig
    from treadle.control import TrainerControl
    from treadle.engine.binding import RunPlugin
    from treadle.engine.dispatch import LifecycleDispatch
    from treadle.errors import PluginLoadError
    from treadle.plugins import make_plugin_manager
    from treadle.testing import check_hookimpls

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if training_config is None:
        training_config = TrainingConfig(
            checkpoint_dir=str(run_dir),
            experiment_location=str(run_dir / "experiments.db"),
            loggers=(),
        )
    subject = f"{name} ({getattr(logger_factory, '__qualname__', repr(logger_factory))})"
    rules = RuleRunner("loggers", subject, RULES)
    manager = make_plugin_manager(load_entry_points=False, disabled=())

    def build() -> MetricLogger:
        try:
            return logger_factory(training_config=training_config, run_dir=run_dir)
        except Exception as err:
            raise rules.error(
                "built the trainer's way",
                f"cls(training_config=..., run_dir=...) raised {type(err).__name__}: {err}",
            ) from err

    def bind(logger: MetricLogger) -> LifecycleDispatch:
        problems = check_hookimpls(logger)
        if problems:
            rules.fail("binds to one run", "; ".join(problems))
        try:
            return LifecycleDispatch(
                manager, run_plugins=[RunPlugin(f"logger:0:{name}", logger, subject)]
            )
        except PluginLoadError as err:
            raise rules.error("binds to one run", str(err)) from err

    def log(logger: MetricLogger, step: int, offset: float) -> None:
        metrics: dict[str, float] = {
            "train/batch_loss": 1.0 / step + offset,
            "train/learning_rate": 1e-3,
        }
        if step == FAILED_AT_STEP:
            metrics.update({"val_loss": math.nan, "grad/norm": math.inf, "epoch": 1})
        try:
            logger.log_metrics(metrics, step)
        except Exception as err:
            raise rules.error(
                "takes metrics",
                f"log_metrics({metrics!r}, {step}) raised {type(err).__name__}: {err}",
            ) from err

    control = TrainerControl()
    first = build()
    rules.passes("built the trainer's way")
    dispatch = bind(first)
    rules.passes("binds to one run")
    if dispatch.on_training_start is not None:
        dispatch.on_training_start(
            trainer=make_run_view(training_config, run_dir, 0), control=control
        )
    plugin_state: dict[str, Any] = {"other_plugin": {"step": 3}}
    for step in range(1, FAILED_AT_STEP + 1):
        log(first, step, 0.0)
        if step == CHECKPOINT_STEP and dispatch.on_save_checkpoint is not None:
            dispatch.on_save_checkpoint(
                trainer=make_run_view(training_config, run_dir, step), plugin_state=plugin_state
            )
    rules.passes("takes metrics")
    failure = RuntimeError("conformance: the run fails after step 6")
    try:
        if dispatch.on_exception is not None:
            dispatch.on_exception(
                trainer=make_run_view(training_config, run_dir, FAILED_AT_STEP), exception=failure
            )
        first.close()
    except Exception as err:
        raise rules.error(
            "closes after an error",
            f"ending a failed run raised {type(err).__name__}: {err}",
        ) from err
    rules.passes("closes after an error")

    if plugin_state.get("other_plugin") != {"step": 3}:
        rules.fail("plain plugin state", "it changed or removed another plugin's plugin_state key")
    buffer = io.BytesIO()
    try:
        torch.save(plugin_state, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=True)
    except Exception as err:
        raise rules.error(
            "plain plugin state",
            f"its plugin_state {plugin_state!r} does not load with weights_only=True "
            f"({type(err).__name__}: {err}); keep plain types: str, int, float, lists, dicts, "
            f"tensors",
        ) from err
    rules.passes("plain plugin state")

    second = build()
    resumed = bind(second)
    if resumed.on_load_checkpoint is not None:
        resumed.on_load_checkpoint(
            trainer=make_run_view(training_config, run_dir, CHECKPOINT_STEP),
            plugin_state=dict(loaded),
        )
    if resumed.on_training_start is not None:
        resumed.on_training_start(
            trainer=make_run_view(training_config, run_dir, CHECKPOINT_STEP), control=control
        )
    for step in range(CHECKPOINT_STEP + 1, LAST_STEP + 1):
        log(second, step, 10.0)
    second.close()
    if resumed.on_training_end is not None:
        resumed.on_training_end(
            trainer=make_run_view(training_config, run_dir, LAST_STEP),
            results={"final_metrics": {"val_loss": 0.5}},
        )

    if read_steps is None:
        rules.skip(
            "resumes without duplicate steps", "no read_steps to read back what the sink kept"
        )
    else:
        steps = [int(step) for step in read_steps(run_dir)]
        expected = list(range(1, LAST_STEP + 1))
        if steps != expected:
            rules.fail(
                "resumes without duplicate steps",
                f"after a run that failed at step {FAILED_AT_STEP} and its resume from the "
                f"checkpoint at step {CHECKPOINT_STEP}, the sink holds steps {steps}, not "
                f"{expected}; drop or replace what was logged after the resumed step (it is "
                f"trainer.global_step in treadle_on_load_checkpoint)",
            )
        rules.passes("resumes without duplicate steps")
        rules.details["steps"] = steps
    return rules.report()
