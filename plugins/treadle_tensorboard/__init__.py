"""treadle built-in plugin: the ``tensorboard`` logger, a run's metrics as TensorBoard events.

Needs the optional extra: ``pip install "treadle[tensorboard]"``.
"""

from __future__ import annotations

from treadle_tensorboard.logger import TensorBoardLogger

__all__ = ["TensorBoardLogger"]
