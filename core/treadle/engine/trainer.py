"""The Trainer: sets a run up once, then drives epochs, validation, early stopping,
checkpoints, metrics and lifecycle hooks by delegating to the engine's parts.

Composition, not inheritance: the Trainer holds a training loop, a validation loop, a gradient
accumulator and monitor, a checkpoint manager, a metrics engine and the lifecycle dispatcher,
and none of them reaches back into it.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch

from treadle.control import TrainerControl
from treadle.engine.assembly import EngineParts
from treadle.engine.dispatch import LifecycleDispatch
from treadle.engine.loops import EpochProgress, EpochResult, TrainingLoop, ValidationLoop
from treadle.engine.optim import build_optimizer, build_scheduler, warmup_steps
from treadle.engine.ownership import INTERRUPTING_SIGNALS, OwnedFolder, StopOnSignals
from treadle.engine.precision import Precision, resolve_precision
from treadle.engine.resume import (
    EarlyStopping,
    ResumePoint,
    apply_resume,
    build_trainer_state,
    position_loader,
)
from treadle.engine.view import RunState, RunView
from treadle.seed import capture_rng_state, restore_rng_state, set_random_seed

if TYPE_CHECKING:
    from treadle.config import TrainingConfig
    from treadle.engine.accumulation import GradientAccumulator
    from treadle.engine.distributed import DistributedContext
    from treadle.engine.gradient_monitor import GradientMonitor
    from treadle.plugins import PluginManager
    from treadle.task import TaskSpec

__all__ = ["Trainer", "resolve_device"]

logger = logging.getLogger(__name__)


def resolve_device(requested: str | torch.device) -> torch.device:
    """The device to train on. ``auto`` picks CUDA when present; ``cuda`` without a GPU falls
    back to the CPU with one warning."""
    name = str(requested)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(
            f"device {name!r} was requested but CUDA is not available; training on the CPU. "
            f"Pass device='cpu' to silence this.",
            stacklevel=3,
        )
        return torch.device("cpu")
    return device


class Trainer:
    """Trains a model on a task with a :class:`~treadle.config.TrainingConfig`.

    >>> trainer = Trainer(model=model, config=model_config, training_config=config,
    ...                   task_spec=task_spec)
    >>> results = trainer.train(train_data, val_data)
    >>> results["best_epoch"], results["best_val_loss"], results["total_time"]

    :param model: the module to train; it takes the batch's tensors as keyword arguments.
    :param config: the model's architecture config (a ``SimpleNamespace`` or anything); kept
        for reference and saved in checkpoints when it holds plain values.
    :param training_config: every hyperparameter of the run.
    :param task_spec: the task: loss, collator and metrics are resolved from it once, here.
    :param hooks: the API reference's duck-typed hooks object (``on_training_start()``,
        ``on_epoch_start(epoch)``, ``on_batch_end(batch_idx, loss)``,
        ``on_validation_end(metrics)``, ``on_epoch_end(epoch, metrics)``,
        ``on_training_end()``), called for this trainer only, after the plugins' hooks.
    :param device: ``cuda`` (falls back to the CPU with a warning when absent), ``cpu``,
        ``cuda:1`` or ``auto``.
    :param plugin_manager: whose plugins run; default: the process-wide manager, or one
        honouring ``training_config.plugins.disable``.
    :param profile_hooks: time every hook implementation (``results["hook_profile"]``).
    :raises UnknownNameError: the task names a loss or metric nobody registered.

    :ivar gradient_accumulator: the :class:`~treadle.engine.GradientAccumulator` of the latest
        :meth:`train` call (``None`` before the first): its ``get_stats()`` are that run's.
    :ivar gradient_monitor: the :class:`~treadle.engine.GradientMonitor` of the latest run.
    :ivar dispatch: the lifecycle hooks the latest run bound.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: Any,
        training_config: TrainingConfig,
        task_spec: TaskSpec,
        hooks: object | None = None,
        device: str | torch.device = "cuda",
        plugin_manager: PluginManager | None = None,
        *,
        profile_hooks: bool = False,
    ) -> None:
        from treadle.losses import get_loss_strategy
        from treadle.plugins import plugin_manager_for

        self.model = model
        self.config = config
        self.training_config = training_config
        self.task_spec = task_spec
        self.hooks = hooks
        self.device = resolve_device(device)
        self.plugin_manager = plugin_manager or plugin_manager_for(training_config.plugins)
        self.profile_hooks = profile_hooks
        # resolved once: nothing is looked up by name on the per-batch path
        self.loss_strategy = get_loss_strategy(
            task_spec.loss_name, plugin_manager=self.plugin_manager, **task_spec.loss_options
        )
        metrics = self.plugin_manager.registry("metrics")
        self.metric_factories = [metrics.get(name) for name in task_spec.metric_names]
        self.control = TrainerControl()
        self.state = RunState()
        self.dispatch: LifecycleDispatch | None = None
        self.gradient_accumulator: GradientAccumulator | None = None
        self.gradient_monitor: GradientMonitor | None = None

    # -- data --------------------------------------------------------------------------------

    def _as_loader(self, data: Any, *, is_eval: bool) -> Iterable[Any]:
        """A Dataset through the task's DataLoaderFactory; a DataLoader, or any other
        re-iterable of ready batches, as given."""
        from treadle.data import DataLoaderConfig, DataLoaderFactory, yields_batches

        if yields_batches(data):  # a list of sample dicts is a dataset, not batches
            return data

        config = self.training_config
        factory = DataLoaderFactory(
            task_spec=self.task_spec,
            seed=config.random_seed,
            pin_memory=self.device.type == "cuda",
            num_workers=config.num_workers,
            plugin_manager=self.plugin_manager,
        )
        loader_config = DataLoaderConfig(
            batch_size=config.batch_size, shuffle=not is_eval, drop_last=False
        )
        loader: Iterable[Any] = factory.create_loader(data, loader_config, is_eval=is_eval)
        return loader

    # -- training ----------------------------------------------------------------------------

    def train(self, train_data: Any, val_data: Any = None) -> dict[str, Any]:
        """Train for ``training_config.epochs`` epochs, validating after each.

        :param train_data: a Dataset (batched by the task's DataLoaderFactory and collator),
            or a DataLoader (or any re-iterable) yielding mappings of tensors with ``labels``.
        :param val_data: the same for validation, or ``None`` to skip validation (early
            stopping then watches ``train_loss``).
        :returns: ``best_epoch``, ``best_val_loss``, ``total_time``, ``final_metrics``,
            ``history`` (one dict per epoch), ``stop_reason``, ``global_step``, ``run_dir``,
            ``best_checkpoint``, ``run_id``, ``status`` and, with ``profile_hooks``,
            ``hook_profile``. ``status`` is ``completed`` (trained to the end, or stopped
            early by early stopping or a hook), ``interrupted`` (stopped by SIGINT or SIGTERM
            after saving: ``resume="auto"`` continues it exactly) or ``already_completed``
            (``resume="auto"`` found the run complete: nothing was trained, the results are
            the ones it recorded).
        :raises RunFolderBusyError: resuming a run whose process is still alive.

        Each new run gets a folder of its own: ``checkpoint_dir`` when it holds no other run,
        else the first free of ``checkpoint_dir-2``, ``-3``, ...; ``results["run_dir"]`` names
        it. ``resume="auto"`` continues the newest of those folders. While it trains, the run
        holds a lock on its folder, and SIGINT (Ctrl-C) and SIGTERM save a checkpoint at the
        next optimizer step and stop it (see :mod:`treadle.engine.ownership`;
        ``handle_signals=False`` leaves signals alone).

        Under ``torchrun`` (or in a process group the caller started) the run is distributed:
        see :mod:`treadle.engine.distributed` and ``docs/distributed.md``. A user DataLoader
        is then used as given, so it needs its own ``DistributedSampler``.
        """
        from treadle.engine.distributed import init_distributed, warn_about_launch

        config = self.training_config
        distributed = init_distributed(self.device)
        warn_about_launch(distributed, config.strategy, config.devices)
        if distributed is None:
            return self._train_owned(train_data, val_data, None)
        self.device = distributed.device
        try:
            return self._train_owned(train_data, val_data, distributed)
        except BaseException as error:
            peer_error = distributed.handle_failure(error)
            if peer_error is not None:
                raise peer_error from error
            raise
        finally:
            distributed.close()

    def _train_owned(
        self, train_data: Any, val_data: Any, distributed: DistributedContext | None
    ) -> dict[str, Any]:
        """Claim the run's folder, train in it, and record how the run ended."""
        from treadle.engine.ownership import claim_for_training

        owned = claim_for_training(self.training_config, distributed)
        if owned.complete_results is not None:
            owned.release()
            logger.info("run %s in %s is complete; nothing to train", owned.run_id, owned.path)
            return {
                **owned.complete_results,
                "run_dir": str(owned.path),
                "run_id": owned.run_id,
                "status": "already_completed",
            }
        try:
            run = _Run(self, train_data, val_data, distributed, owned)
        except BaseException:
            owned.abandon()  # it never started: the next new run may take the folder
            raise
        status, results = "failed", None
        try:
            results = run.execute()
            status = results["status"]
            return results
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            owned.finish(status, results, early_stopped=run.early_stopping.should_stop)

    def _validation_loop(
        self, precision: Precision, distributed: DistributedContext | None
    ) -> ValidationLoop:
        """The task's validation loop: its loss, its metrics, its pad id."""
        return ValidationLoop(
            self.loss_strategy,
            metrics=self.metric_factories,
            precision=precision,
            pad_token_id=self.task_spec.pad_token_id,
            distributed=distributed,
        )

    def evaluate(self, eval_data: Any, *, metric_prefix: str = "eval_") -> dict[str, float]:
        """Run one validation pass of the model as it is now: no training, no checkpoint.

        :param eval_data: a Dataset (batched by the task's DataLoaderFactory and collator), or
            a DataLoader (or any re-iterable) yielding mappings of tensors with ``labels``.
        :param metric_prefix: put before every name of the result.
        :returns: ``{prefix}loss``, each task metric as ``{prefix}<name>``, and
            ``{prefix}samples``, ``{prefix}batches`` and ``{prefix}runtime`` (seconds).
        :raises ValueError: the data yields no batch.
        """
        from treadle.engine.distributed import DistributedContext

        loader = self._as_loader(eval_data, is_eval=True)
        model = self.model.to(self.device)
        distributed = DistributedContext.current(self.device)
        if distributed is not None and _is_sharded(model):
            distributed.parallel = "fsdp"
        precision = resolve_precision(
            self.training_config.precision, self.training_config.use_amp, self.device
        )
        loop = self._validation_loop(precision, distributed)
        result = loop.run_epoch(0, model, loader, self.device)
        if result.num_batches == 0:
            msg = "Trainer.evaluate: the evaluation data yielded no batch; nothing to evaluate"
            raise ValueError(msg)
        values = {"loss": result.loss, **result.metrics}
        values["samples"] = float(result.num_samples)
        values["batches"] = float(result.num_batches)
        values["runtime"] = result.epoch_duration_seconds
        return {f"{metric_prefix}{name}": float(value) for name, value in values.items()}


class _Run:
    """One call of :meth:`Trainer.train`: the set-up parts and the epoch loop."""

    def __init__(
        self,
        trainer: Trainer,
        train_data: Any,
        val_data: Any,
        distributed: DistributedContext | None,
        owned: OwnedFolder,
    ) -> None:
        config = trainer.training_config
        self.trainer = trainer
        self.owned = owned
        self.distributed = distributed
        self.config = config
        self.started = time.perf_counter()
        self.control = trainer.control
        self.state = trainer.state
        set_random_seed(config.random_seed, config.deterministic)
        self.train_loader = trainer._as_loader(train_data, is_eval=False)
        self.val_loader = None if val_data is None else trainer._as_loader(val_data, is_eval=True)
        self.accumulation_steps = config.gradient_accumulation_steps
        batches = _length(self.train_loader)
        if distributed is not None:
            from treadle.engine.distributed import check_sampler

            distributed.check_same_length(batches, "the training data")
            check_sampler(train_data, distributed, "the training data")
        self.state.training_batches = batches if _has_length(self.train_loader) else None
        if self.val_loader is not None and _has_length(self.val_loader):
            self.state.validation_batches = _length(self.val_loader)
        self.steps_per_epoch = math.ceil(batches / self.accumulation_steps) if batches else 0
        total_steps = self.steps_per_epoch * config.epochs
        self.warmup_steps = warmup_steps(total_steps, config.warmup_ratio)

        model = trainer.model.to(trainer.device)
        prepare_model = getattr(trainer.loss_strategy, "prepare_model", None)
        if callable(prepare_model):
            prepare_model(model)
        self.model = model
        self.forward_model: torch.nn.Module = model
        if distributed is not None:
            # before the optimizer: FSDP replaces the parameters with sharded ones
            self.forward_model = distributed.wrap_model(model, config.strategy)
        self.optimizer = build_optimizer(model, config)
        self.scheduler = build_scheduler(
            self.optimizer, config.scheduler, total_steps, self.warmup_steps
        )
        self.precision = resolve_precision(config.precision, config.use_amp, trainer.device)
        self.scaler = self.precision.make_scaler()
        if config.compile_mode is not None:
            compiled = torch.compile(self.forward_model, mode=config.compile_mode)
            self.forward_model = compiled  # type: ignore[assignment]
        # DDP's forward may broadcast buffers, a collective that ranks holding different
        # numbers of validation batches would not all join; the plain module needs none
        is_ddp = distributed is not None and distributed.parallel == "ddp"
        self.eval_model = model if is_ddp else self.forward_model

        self.run_dir = owned.path
        self.view = RunView(
            training_config=config,
            task_spec=trainer.task_spec,
            model=model,
            optimizer=self.optimizer,
            device=trainer.device,
            run_dir=self.run_dir,
            state=self.state,
        )
        self.parts = EngineParts(
            trainer, self.run_dir, distributed=distributed, run_id=owned.run_id
        )
        try:
            self.dispatch = LifecycleDispatch(
                trainer.plugin_manager,
                trainer.hooks,
                run_plugins=self.parts.run_plugins,
                profile=trainer.profile_hooks,
            )
        except BaseException:
            self.parts.close()  # the loggers are open already
            raise
        trainer.dispatch = self.dispatch
        trainer.gradient_accumulator = self.parts.accumulator
        trainer.gradient_monitor = self.parts.monitor
        self.training_loop = TrainingLoop(
            self.parts.accumulator,
            self.parts.monitor,
            trainer.loss_strategy,
            config.max_grad_norm,
            dispatch=self.dispatch,
            view=self.view,
            control=self.control,
            state=self.state,
            precision=self.precision,
            scaler=self.scaler,
            pad_token_id=trainer.task_spec.pad_token_id,
            log_every_n_steps=config.log_every_n_steps,
            distributed=distributed,
        )
        self.validation_loop = trainer._validation_loop(self.precision, distributed)
        monitor = config.monitor_metric
        if self.val_loader is None and monitor.startswith("val_"):
            monitor = "train_" + monitor.removeprefix("val_")
            logger.info("no validation data: early stopping and 'best' watch %s", monitor)
        self.early_stopping = EarlyStopping(
            monitor=monitor,
            mode=config.monitor_mode,
            patience=config.early_stopping_patience,
            min_delta=config.early_stopping_min_delta,
        )
        self.history: list[dict[str, float]] = []
        self.start_epoch = 0
        self.resume_point: ResumePoint | None = None
        self.epoch_rng: dict[str, Any] | None = None
        self.last_save = time.monotonic()
        self.stop_reason: str | None = None

    # -- the run -----------------------------------------------------------------------------

    def execute(self) -> dict[str, Any]:
        dispatch = self.dispatch
        signals = StopOnSignals(self.control)
        if self.config.handle_signals:
            signals.install()
        try:
            self._resume()
            if dispatch.on_training_start is not None:
                dispatch.on_training_start(trainer=self.view, control=self.control)
            self._train_epochs()
            self.parts.close()  # pending asynchronous saves finish (or fail) here
            results = self._results()
            if dispatch.on_training_end is not None:
                dispatch.on_training_end(trainer=self.view, results=results)
            return results
        except BaseException as error:
            self._report_exception(error)
            try:
                self.parts.close()
            except Exception as close_error:
                error.add_note(f"closing checkpoints and loggers then failed too: {close_error!r}")
            raise
        finally:
            signals.restore()

    def _train_epochs(self) -> None:
        config = self.config
        control = self.control
        dispatch = self.dispatch
        self._agree()
        if control.should_stop:
            self.stop_reason = control.stop_reason or "stopped by a training_start hook"
            return
        for epoch in range(self.start_epoch, config.epochs):
            self.state.epoch = epoch
            point, self.resume_point = self.resume_point, None
            if point is None or point.epoch_complete:
                if point is not None:
                    restore_rng_state(point.rng_state)
                if dispatch.on_epoch_start is not None:
                    dispatch.on_epoch_start(trainer=self.view, epoch=epoch, control=control)
                self._agree()
                if control.should_stop:
                    self.stop_reason = control.stop_reason or "stopped by an epoch_start hook"
                    return
                progress = EpochProgress()
                self.epoch_rng = capture_rng_state()
                batches = position_loader(self.train_loader, epoch, 0, 0)
            else:
                # continue inside the epoch exactly: replay its start, skip what was consumed
                assert point.epoch_rng_state is not None
                assert point.progress is not None
                restore_rng_state(point.epoch_rng_state)
                self.epoch_rng = point.epoch_rng_state
                progress = point.progress
                batches = position_loader(
                    self.train_loader, epoch, progress.batches, progress.samples
                )
                restore_rng_state(point.rng_state)
            result = self.training_loop.run_epoch(
                epoch,
                self.forward_model,
                batches,
                self.optimizer,
                self.scheduler,
                self.trainer.device,
                self._log_step,
                progress=progress,
                on_optimizer_step=self._after_optimizer_step,
            )
            if not result.completed:
                if control.should_save:
                    control.should_save = False
                    self._save(epoch, {"train_loss": result.loss}, progress=progress)
                self.stop_reason = control.stop_reason or "stopped by a hook"
                return
            if self._finish_epoch(epoch, result):
                return

    def _finish_epoch(self, epoch: int, result: EpochResult) -> bool:
        """Validate, log, check early stopping and checkpoint; ``True`` ends the run."""
        control = self.control
        dispatch = self.dispatch
        metrics: dict[str, float] = {
            "train_loss": result.loss,
            "learning_rate": result.learning_rate,
        }
        if result.gradient_norm is not None:
            metrics["gradient_norm"] = result.gradient_norm
        metrics.update(self._validate(epoch))
        metrics["epoch_time"] = result.epoch_duration_seconds
        self.parts.log_epoch(epoch, result, metrics)
        improved = self.early_stopping.update(epoch, metrics)
        self.history.append({"epoch": epoch, **metrics})
        if dispatch.on_epoch_end is not None:
            dispatch.on_epoch_end(trainer=self.view, epoch=epoch, metrics=metrics, control=control)
        self._agree()
        due = (epoch + 1) % self.config.save_every_n_epochs == 0 or epoch + 1 == self.config.epochs
        if due or control.should_save or (improved and self.config.keep_best_k):
            control.should_save = False
            self._save(epoch, metrics, progress=None)
        if self.early_stopping.should_stop:
            self.stop_reason = self.early_stopping.reason
            return True
        if control.should_stop:
            self.stop_reason = control.stop_reason or "stopped by a hook"
            return True
        return False

    def _validate(self, epoch: int) -> dict[str, float]:
        if self.val_loader is None:
            return {}
        dispatch = self.dispatch
        if dispatch.on_validation_start is not None:
            dispatch.on_validation_start(trainer=self.view, epoch=epoch, control=self.control)
        val_loader = self.val_loader
        if dispatch.on_validation_batch_end is not None:
            val_loader = _Announced(val_loader, dispatch.on_validation_batch_end, self.view, epoch)
        result = self.validation_loop.run_epoch(
            epoch, self.eval_model, val_loader, self.trainer.device
        )
        metrics = {"val_loss": result.loss}
        metrics.update({f"val_{name}": value for name, value in result.metrics.items()})
        if dispatch.on_validation_end is not None:
            dispatch.on_validation_end(
                trainer=self.view, epoch=epoch, metrics=metrics, control=self.control
            )
        return metrics

    def _log_step(self, loss: float, step: int) -> None:
        if self.distributed is not None:
            loss = self.distributed.mean(loss)
        self.parts.log_step(loss, step, float(self.optimizer.param_groups[0]["lr"]))

    def _agree(self) -> None:
        """Every rank takes the stop, save and validation requests any rank's hooks made."""
        if self.distributed is not None:
            self.distributed.agree(self.control)

    def _after_optimizer_step(self, progress: EpochProgress) -> bool:
        """At every optimizer-step boundary: requested validation, interval and requested
        saves, stop requests. ``True`` ends the epoch."""
        control = self.control
        config = self.config
        step = self.state.global_step
        minutes_due: bool | None = None
        if self.distributed is not None:
            # the ranks' clocks differ: decide the timed save together, with the requests
            (minutes_due,) = self.distributed.agree(control, self._minutes_due())
        if control.should_validate:
            control.should_validate = False
            metrics = self._validate(self.state.epoch)
            if metrics:
                self.parts.log_metrics(metrics, step)
        if minutes_due is None:
            minutes_due = self._minutes_due()
        due = (
            config.save_every_n_steps is not None and step % config.save_every_n_steps == 0
        ) or minutes_due
        if due or (control.should_save and not control.should_stop):
            control.should_save = False
            self._save(self.state.epoch, {}, progress=progress)
        return control.should_stop

    def _minutes_due(self) -> bool:
        minutes = self.config.save_every_minutes
        return minutes is not None and time.monotonic() - self.last_save >= 60 * minutes

    # -- checkpoints -------------------------------------------------------------------------

    def _save(
        self, epoch: int, metrics: Mapping[str, float], progress: EpochProgress | None
    ) -> None:
        if progress is not None and self.distributed is not None:
            progress = self.distributed.shared_progress(progress)
        plugin_state: dict[str, Any] = {}
        if self.dispatch.on_save_checkpoint is not None:
            self.dispatch.on_save_checkpoint(trainer=self.view, plugin_state=plugin_state)
        trainer_state = build_trainer_state(
            run=self, epoch=epoch, progress=progress, plugin_state=plugin_state
        )
        self.parts.save(
            epoch=epoch,
            metrics=metrics,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            trainer_state=trainer_state,
            global_step=self.state.global_step,
        )
        self.last_save = time.monotonic()

    def _resume(self) -> None:
        target = self.config.resume
        if not target:
            return
        loaded = self.parts.load_for_resume(
            target, self.model, self.optimizer, self.scheduler, self.scaler
        )
        if loaded is None:
            return
        apply_resume(self, loaded)

    # -- signals, failures, results ---------------------------------------------------------

    def _report_exception(self, error: BaseException) -> None:
        on_exception = self.dispatch.on_exception
        if on_exception is None:
            return
        try:
            on_exception(trainer=self.view, exception=error)
        except Exception as hook_error:
            error.add_note(f"treadle_on_exception then failed too: {hook_error!r}")

    def _results(self) -> dict[str, Any]:
        history = self.history
        val_losses = [
            row["val_loss"] for row in history if not math.isnan(row.get("val_loss", math.nan))
        ]
        results: dict[str, Any] = {
            "best_epoch": self.early_stopping.best_epoch,
            "best_val_loss": min(val_losses) if val_losses else None,
            "total_time": time.perf_counter() - self.started,
            "final_metrics": dict(history[-1]) if history else {},
            "history": [dict(row) for row in history],
            "stop_reason": self.stop_reason,
            "global_step": self.state.global_step,
            "run_dir": str(self.run_dir),
            "best_checkpoint": self.parts.best_checkpoint(),
            "run_id": self.owned.run_id,
            "status": "interrupted" if self._interrupted() else "completed",
        }
        if self.trainer.profile_hooks:
            results["hook_profile"] = self.dispatch.timings()
        return results

    def _interrupted(self) -> bool:
        """Stopped by SIGINT or SIGTERM before the last epoch ended: resumable."""
        history = self.history
        finished = bool(history) and history[-1].get("epoch") == self.config.epochs - 1
        return self.stop_reason in INTERRUPTING_SIGNALS and not finished


def _is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _length(loader: Iterable[Any]) -> int:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return 0


def _has_length(loader: Iterable[Any]) -> bool:
    try:
        len(loader)  # type: ignore[arg-type]
    except TypeError:
        return False
    return True


class _Announced:
    """A validation loader that calls ``treadle_on_validation_batch_end`` after each batch: when
    the loop asks for the next one (or learns there is none), the batch before is done. Used
    only when something implements the hook."""

    def __init__(self, loader: Iterable[Any], hook: Any, view: RunView, epoch: int) -> None:
        self.loader = loader
        self.hook = hook
        self.view = view
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        hook, view, epoch = self.hook, self.view, self.epoch
        for batch_index, batch in enumerate(self.loader):
            yield batch
            hook(trainer=view, epoch=epoch, batch_index=batch_index)
