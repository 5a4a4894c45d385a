"""Hook implementations of the onnx plugin: registrations only, a few lines each.

Each name is registered as a ``"module:attr"`` reference: the implementations import torch,
and discovery (``treadle --help``, ``treadle plugins``) must not.
"""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register


@hookimpl
def treadle_register_exporters(register: Register) -> None:
    register("onnx", "treadle_onnx.exporter:OnnxExporter")
