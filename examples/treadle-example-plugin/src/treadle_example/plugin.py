"""Hook implementations of the example plugin: registrations only, a few lines each.

Names are registered as ``"module:attr"`` references: treadle imports a module (and torch)
only when the name is used, so ``treadle --help`` and ``treadle plugins`` stay fast.
"""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register


@hookimpl
def treadle_register_losses(register: Register) -> None:
    register("focal", "treadle_example.focal:FocalLoss")


@hookimpl
def treadle_register_collators(register: Register) -> None:
    register("tabular", "treadle_example.collate:TabularCollator")


@hookimpl
def treadle_register_exporters(register: Register) -> None:
    register("numpy_mlp", "treadle_example.numpy_mlp:NumpyMLPExporter")
