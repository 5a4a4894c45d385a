"""treadle built-in plugin: built-in model factories: tiny GPT, MLP classifier, small CNN."""

from __future__ import annotations

from typing import TYPE_CHECKING

from treadle.lazy import lazy_attributes

if TYPE_CHECKING:
    from treadle_models.cnn import SmallCNN
    from treadle_models.factories import (
        build_mlp_classifier,
        build_small_cnn,
        build_tiny_gpt,
        fitting_models,
    )
    from treadle_models.gpt import TinyGPT
    from treadle_models.mlp import MLPClassifier

__all__ = [
    "MLPClassifier",
    "SmallCNN",
    "TinyGPT",
    "build_mlp_classifier",
    "build_small_cnn",
    "build_tiny_gpt",
    "fitting_models",
]

# lazy: discovery imports this package for its plugin.py, and these modules import torch
__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        "MLPClassifier": "treadle_models.mlp",
        "SmallCNN": "treadle_models.cnn",
        "TinyGPT": "treadle_models.gpt",
        "build_mlp_classifier": "treadle_models.factories",
        "build_small_cnn": "treadle_models.factories",
        "build_tiny_gpt": "treadle_models.factories",
        "fitting_models": "treadle_models.factories",
    },
)
