"""Hook implementations of the onnx plugin: registrations only, a few lines each."""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register
from treadle_onnx.exporter import OnnxExporter


@hookimpl
def treadle_register_exporters(register: Register) -> None:
    register("onnx", OnnxExporter)
