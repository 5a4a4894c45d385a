"""Hook implementations of the torchscript plugin: registrations only, a few lines each."""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register
from treadle_torchscript.pytorch_state import PyTorchExporter
from treadle_torchscript.torch_export import TorchExportExporter
from treadle_torchscript.torchscript import TorchScriptExporter


@hookimpl
def treadle_register_exporters(register: Register) -> None:
    register("torchscript", TorchScriptExporter)
    register("torch_export", TorchExportExporter)
    register("pytorch", PyTorchExporter)
