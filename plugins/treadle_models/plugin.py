"""Hook implementations of the models plugin: registrations only, a few lines each.

Each name is registered as a ``"module:attr"`` reference: the implementations import torch,
and discovery (``treadle --help``, ``treadle plugins``) must not.
"""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register


@hookimpl
def treadle_register_models(register: Register) -> None:
    register("mlp_classifier", "treadle_models.factories:build_mlp_classifier")
    register("small_cnn", "treadle_models.factories:build_small_cnn")
    register("tiny_gpt", "treadle_models.factories:build_tiny_gpt")
