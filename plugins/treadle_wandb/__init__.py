"""treadle built-in plugin: the ``wandb`` logger, sending a run's metrics to Weights & Biases.

Needs the optional extra: ``pip install "treadle[wandb]"``.
"""

from __future__ import annotations

from treadle_wandb.logger import WandbLogger

__all__ = ["WandbLogger"]
