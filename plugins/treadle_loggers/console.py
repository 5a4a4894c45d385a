"""The ``console`` logger: one compact INFO line per ``log_metrics`` call, through logging."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from treadle.config import TrainingConfig

__all__ = ["ConsoleLogger", "format_metrics"]

logger = logging.getLogger(__name__)


def _format_value(value: float) -> str:
    number = float(value)
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    if not math.isfinite(number) or 1e-3 <= abs(number) < 1e4:
        return f"{number:.4f}"
    return f"{number:.3e}"


def format_metrics(metrics: Mapping[str, float], step: int) -> str:
    """``step 120 | train/batch_loss=0.4213 lr=1.000e-04``: names in the order given."""
    parts = " ".join(f"{name}={_format_value(value)}" for name, value in metrics.items())
    return f"step {step} | {parts}"


class ConsoleLogger:
    """Logs each call's metrics as one line at INFO on ``treadle_loggers.console``.

    It never prints: the ``treadle`` command (or the application) decides where log records go.
    """

    def __init__(
        self, training_config: TrainingConfig | None = None, run_dir: Path | None = None
    ) -> None:
        self.training_config = training_config
        self.run_dir = run_dir

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if logger.isEnabledFor(logging.INFO):
            logger.info("%s", format_metrics(metrics, step))

    def close(self) -> None:
        """Nothing to release."""
