"""Hook implementations of the models plugin: registrations only, a few lines each."""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register
from treadle_models.factories import build_mlp_classifier, build_small_cnn, build_tiny_gpt


@hookimpl
def treadle_register_models(register: Register) -> None:
    register("mlp_classifier", build_mlp_classifier)
    register("small_cnn", build_small_cnn)
    register("tiny_gpt", build_tiny_gpt)
