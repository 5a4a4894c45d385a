"""Hook implementations of the example plugin: registrations only, a few lines each."""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register
from treadle_example.collate import TabularCollator
from treadle_example.focal import FocalLoss
from treadle_example.numpy_mlp import NumpyMLPExporter


@hookimpl
def treadle_register_losses(register: Register) -> None:
    register("focal", FocalLoss)


@hookimpl
def treadle_register_collators(register: Register) -> None:
    register("tabular", TabularCollator)


@hookimpl
def treadle_register_exporters(register: Register) -> None:
    register("numpy_mlp", NumpyMLPExporter)
