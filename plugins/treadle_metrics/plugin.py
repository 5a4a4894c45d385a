"""Hook implementations of the metrics plugin: registrations only, a few lines each."""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register
from treadle_metrics.classification import Accuracy
from treadle_metrics.language import Perplexity, TokenAccuracy
from treadle_metrics.segmentation import PixelAccuracy


@hookimpl
def treadle_register_metrics(register: Register) -> None:
    register("accuracy", Accuracy)
    register("perplexity", Perplexity)
    register("token_accuracy", TokenAccuracy)
    register("pixel_accuracy", PixelAccuracy)
