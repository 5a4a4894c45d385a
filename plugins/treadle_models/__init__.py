"""treadle built-in plugin: built-in model factories: tiny GPT, MLP classifier, small CNN."""

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
