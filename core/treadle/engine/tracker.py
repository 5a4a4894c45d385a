"""MetricsTracker: the API reference's legacy face over the MetricsEngine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from treadle.engine.metrics import AlertConfig, MetricsEngine

if TYPE_CHECKING:
    import pandas

    from treadle.config import TrainingConfig
    from treadle.plugins import PluginManager
    from treadle.protocols import MetricLogger

__all__ = ["MetricsTracker"]


class MetricsTracker:
    """Records epoch metrics and returns them as a table; kept for code written against the
    older API. New code uses :class:`~treadle.engine.metrics.MetricsEngine`, which this wraps.

    :param use_wandb: also log to the logger registered as ``wandb`` (see
        :class:`~treadle.engine.metrics.MetricsEngine`).
    :param loggers: other metric sinks to forward every epoch to.
    """

    def __init__(
        self,
        use_wandb: bool = False,
        *,
        loggers: Sequence[MetricLogger] | None = None,
        training_config: TrainingConfig | None = None,
        run_dir: Path | None = None,
        plugin_manager: PluginManager | None = None,
    ) -> None:
        self.engine = MetricsEngine(
            use_wandb=use_wandb,
            alert_config=AlertConfig(),
            loggers=loggers,
            training_config=training_config,
            run_dir=run_dir,
            plugin_manager=plugin_manager,
        )

    def log_epoch(
        self,
        epoch: int,
        train_metrics: Mapping[str, float],
        val_metrics: Mapping[str, float] | None,
        learning_rate: float,
        gradient_norm: float,
        epoch_duration: float = 0.0,
    ) -> None:
        """Record one epoch (metric names as in :meth:`MetricsEngine.log_epoch`)."""
        self.engine.log_epoch(
            epoch=epoch,
            train_metrics=train_metrics,
            val_metrics=val_metrics,
            learning_rate=learning_rate,
            gradient_norm=gradient_norm,
            epoch_duration=epoch_duration,
        )

    def get_summary(self) -> pandas.DataFrame:
        """One row per epoch; columns ``epoch``, ``train_loss``, ``val_loss``, then every other
        metric logged (``val_accuracy``, ``learning_rate``, ``gradient_norm``, ...)."""
        return self.engine.get_summary()

    def get_best_epoch(self, metric: str = "val_loss", mode: str = "min") -> int:
        """The epoch with the lowest (``mode='min'``) or highest ``metric``; NaN never wins.

        :raises ValueError: nothing logged yet, or no finite value of ``metric``.
        """
        if mode not in ("min", "max"):
            msg = f"mode must be 'min' or 'max': {mode!r}"
            raise ValueError(msg)
        rows = [
            row
            for row in self.engine.history
            if isinstance(row.get(metric), float) and row[metric] == row[metric]
        ]
        if not rows:
            msg = f"No finite {metric!r} logged yet."
            raise ValueError(msg)
        chooser: Any = min if mode == "min" else max
        best: dict[str, Any] = chooser(rows, key=lambda row: row[metric])
        return int(best["epoch"])

    def close(self) -> None:
        """Close the loggers."""
        self.engine.close()
