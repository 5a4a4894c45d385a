"""Hook implementations of the torchscript plugin: registrations only, a few lines each.

Each name is registered as a ``"module:attr"`` reference: the implementations import torch,
and discovery (``treadle --help``, ``treadle plugins``) must not.
"""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register


@hookimpl
def treadle_register_exporters(register: Register) -> None:
    register("torchscript", "treadle_torchscript.torchscript:TorchScriptExporter")
    register("torch_export", "treadle_torchscript.torch_export:TorchExportExporter")
    register("pytorch", "treadle_torchscript.pytorch_state:PyTorchExporter")
