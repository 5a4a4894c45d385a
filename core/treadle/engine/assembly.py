"""The engine parts a run builds from its config: gradient accumulator and monitor, checkpoint
manager, metrics engine and loggers, and the objects bound to the run's own hooks, behind the
few calls the Trainer makes of them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from treadle.engine.binding import RunPlugin
    from treadle.engine.distributed import DistributedContext
    from treadle.engine.loops import EpochResult
    from treadle.engine.trainer import Trainer
    from treadle.protocols import MetricLogger

__all__ = ["EngineParts"]

logger = logging.getLogger(__name__)


class EngineParts:
    """Builds and holds a run's accumulator, monitor, checkpoint manager, metrics engine and
    loggers; the Trainer talks to them only through this object's methods.

    The run writes to the loggers ``training_config.loggers`` names, and to those the
    plugins' ``treadle_configure_run`` implementations add (the tracking plugin adds
    ``experiment`` when an experiment store is configured, say). :attr:`run_plugins` are the
    objects bound to this run's lifecycle hooks: every logger, and what plugins bound.

    In a distributed run (``distributed`` given) only rank 0 has loggers and writes
    checkpoints; the other ranks open the checkpoint folder after rank 0 did, to read from it
    when resuming. Saving and loading are then collectives: every rank calls them. Objects the
    plugins bind are bound on every rank.
    """

    def __init__(
        self,
        trainer: Trainer,
        run_dir: Path,
        *,
        distributed: DistributedContext | None = None,
        run_id: str | None = None,
    ) -> None:
        from treadle.engine.accumulation import GradientAccumulator
        from treadle.engine.binding import RunPlugin, configure_run
        from treadle.engine.checkpoints import CheckpointManager
        from treadle.engine.gradient_monitor import GradientMonitor
        from treadle.engine.metrics import AlertConfig, MetricsEngine, build_loggers

        config = trainer.training_config
        configured = configure_run(trainer.plugin_manager, config)
        logger_names = list(config.loggers)
        logger_names += [name for name in configured.logger_names if name not in logger_names]
        self.distributed = distributed
        self.is_main = distributed is None or distributed.is_main
        self.accumulator = GradientAccumulator(
            accumulation_steps=config.gradient_accumulation_steps,
            max_gradient_norm=config.max_grad_norm,
            clip_by_global_norm=True,
        )
        self.monitor = GradientMonitor(
            check_interval=config.gradient_check_interval,
            norm_threshold_warning=config.gradient_norm_warning,
            norm_threshold_critical=config.gradient_norm_critical,
            log_distribution=False,
            critical_action=config.gradient_critical_action,
        )
        if not self.is_main:
            assert distributed is not None
            # rank 0 first: opening sweeps stray files and may rewrite the index
            distributed.barrier()
        self.checkpoints = CheckpointManager(
            checkpoint_dir=str(run_dir),
            keep_best_k=config.keep_best_k,
            keep_last_n=config.keep_last_n,
            monitor=config.monitor_metric,
            mode=config.monitor_mode,
            save_interval_epochs=1,  # the Trainer decides when to save
            async_save=config.async_checkpointing,
            run_id=run_id,
        )
        if distributed is not None and self.is_main:
            distributed.barrier()
        self._closed = False
        self.loggers: list[MetricLogger] = (
            build_loggers(
                logger_names,
                training_config=config,
                run_dir=run_dir,
                plugin_manager=trainer.plugin_manager,
            )
            if self.is_main
            else []
        )
        self.run_plugins: list[RunPlugin] = [
            RunPlugin(
                f"logger:{position}:{name}", sink, f"logger {name!r} ({type(sink).__qualname__})"
            )
            # no loggers off rank 0
            for position, (name, sink) in enumerate(zip(logger_names, self.loggers, strict=False))
        ]
        self.run_plugins += configured.bound
        self.metrics_engine = MetricsEngine(
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            alert_config=AlertConfig(gradient_norm_threshold=config.gradient_norm_critical),
            loggers=self.loggers,
        )

    # -- metrics -----------------------------------------------------------------------------

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for sink in self.loggers:
            sink.log_metrics(metrics, step)

    def log_step(self, loss: float, step: int, learning_rate: float) -> None:
        """Per-step figures, at optimizer step ``step`` (called every ``log_every_n_steps``)."""
        self.log_metrics({"train/batch_loss": loss, "train/learning_rate": learning_rate}, step)

    def log_epoch(self, epoch: int, result: EpochResult, metrics: Mapping[str, float]) -> None:
        """The epoch's row through the metrics engine: history, alerts, loggers."""
        val = {name: value for name, value in metrics.items() if name.startswith("val_")}
        self.metrics_engine.log_epoch(
            epoch=epoch,
            train_metrics={"loss": result.loss},
            val_metrics=val or None,
            learning_rate=result.learning_rate,
            gradient_norm=result.gradient_norm or 0.0,
            epoch_duration=result.epoch_duration_seconds,
            step=result.global_step,
        )

    # -- checkpoints -------------------------------------------------------------------------

    def save(
        self,
        *,
        epoch: int,
        metrics: Mapping[str, float],
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        scaler: Any,
        trainer_state: dict[str, Any],
        global_step: int,
    ) -> Any:
        """Write a checkpoint; distributed, rank 0 writes the unwrapped model's full state
        (gathered from the shards under FSDP) and every rank waits until it is written."""
        distributed = self.distributed
        if distributed is not None:
            model, optimizer = distributed.checkpoint_sources(model, optimizer)
        saved = None
        if self.is_main:
            saved = self.checkpoints.save_checkpoint(
                epoch,
                dict(metrics),
                model,
                optimizer,
                scheduler,
                None,
                scaler=scaler,
                trainer_state=trainer_state,
                global_step=global_step,
            )
        if distributed is not None:
            distributed.barrier()
        return saved

    def load_for_resume(
        self,
        target: str,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        scaler: Any,
    ) -> Any:
        """Load ``target`` (a path, or ``auto`` for the newest valid checkpoint of this run)
        into the parts; ``None`` when ``auto`` finds nothing to resume."""
        path: Path | str | None = target
        distributed = self.distributed
        if target == "auto":
            path = self.checkpoints.latest_valid_checkpoint() if self.is_main else None
            if distributed is not None:
                # rank 0's choice: every rank must load the same file
                path = distributed.broadcast(None if path is None else str(path))
            if path is None:
                logger.info("resume='auto': no checkpoint in %s; starting fresh", self.run_dir)
                return None
        if distributed is not None:
            model, optimizer = distributed.checkpoint_targets(model, optimizer)
        return self.checkpoints.load_checkpoint(
            str(path), model, optimizer, scheduler, scaler=scaler
        )

    @property
    def run_dir(self) -> Path:
        return Path(self.checkpoints.checkpoint_dir)

    def best_checkpoint(self) -> str | None:
        best = self.checkpoints.get_best_checkpoint()
        found = None if best is None else str(best)
        if self.distributed is not None:
            found = self.distributed.broadcast(found)  # rank 0 alone saved
        return found

    def close(self) -> None:
        """Finish pending checkpoint writes and close the loggers (both attempted, once)."""
        if self._closed:
            return
        self._closed = True
        errors: list[BaseException] = []
        self.monitor.flush_warnings()
        for part in (self.checkpoints, self.metrics_engine):
            try:
                part.close()
            except Exception as error:
                errors.append(error)
        if errors:
            raise errors[0]
