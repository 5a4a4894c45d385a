"""treadle built-in plugin: the ``mlflow`` logger, one MLflow run per treadle run.

Needs the optional extra: ``pip install "treadle[mlflow]"``.
"""

from __future__ import annotations

from treadle_mlflow.logger import MlflowLogger

__all__ = ["MlflowLogger"]
