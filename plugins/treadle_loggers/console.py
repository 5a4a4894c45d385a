"""The ``console`` logger: one compact line per ``log_metrics`` call, through logging."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from treadle_loggers.figures import format_value
from treadle_loggers.progress import shows_bar

if TYPE_CHECKING:
    from treadle.config import TrainingConfig

__all__ = ["ConsoleLogger", "format_metrics"]

logger = logging.getLogger(__name__)


def format_metrics(metrics: Mapping[str, float], step: int, epochs: int | None = None) -> str:
    """``step 120 | train/batch_loss=0.4213 lr=1.000e-04``: names in the order given. An
    epoch's row (one with ``epoch``, counted from 0 as the API does) reads as people count:
    ``epoch 3/10 (step 120) | train_loss=0.3921 val_loss=0.4102``."""
    epoch = metrics.get("epoch")
    parts = " ".join(
        f"{name}={format_value(value)}" for name, value in metrics.items() if name != "epoch"
    )
    if epoch is None:
        return f"step {step} | {parts}"
    of = f"/{epochs}" if epochs else ""
    return f"epoch {int(epoch) + 1}{of} (step {step}) | {parts}"


class ConsoleLogger:
    """Logs each call's metrics as one line on ``treadle_loggers.console``: at INFO, or at
    DEBUG while the run draws a progress bar, which shows the same figures (``treadle -v``
    shows the lines then too).

    It never prints: the ``treadle`` command (or the application) decides where log records go.
    """

    def __init__(
        self, training_config: TrainingConfig | None = None, run_dir: Path | None = None
    ) -> None:
        self.training_config = training_config
        self.run_dir = run_dir
        self.epochs = None if training_config is None else training_config.epochs
        self.level = logging.DEBUG if shows_bar(training_config) else logging.INFO

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if logger.isEnabledFor(self.level):
            logger.log(self.level, "%s", format_metrics(metrics, step, self.epochs))

    def close(self) -> None:
        """Nothing to release."""
