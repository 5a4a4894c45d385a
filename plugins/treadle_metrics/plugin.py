"""Hook implementations of the metrics plugin: registrations only, a few lines each.

Each name is registered as a ``"module:attr"`` reference: the implementations import torch,
and discovery (``treadle --help``, ``treadle plugins``) must not.
"""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register


@hookimpl
def treadle_register_metrics(register: Register) -> None:
    register("accuracy", "treadle_metrics.classification:Accuracy")
    register("perplexity", "treadle_metrics.language:Perplexity")
    register("token_accuracy", "treadle_metrics.language:TokenAccuracy")
    register("pixel_accuracy", "treadle_metrics.segmentation:PixelAccuracy")
