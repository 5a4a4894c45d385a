"""Hook implementations of the cli plugin: registrations only, a few lines each.

Commands are registered as ``"module:Class"`` references; the command line imports each one to
build its parser, so the command modules import light and load torch inside ``run``.
"""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register


@hookimpl
def treadle_register_commands(register: Register) -> None:
    register("export", "treadle_cli.commands.export:ExportCommand")
    register("jobs", "treadle_cli.commands.jobs:JobsCommand")
    register("plugin", "treadle_cli.commands.scaffold:PluginCommand")
    register("plugins", "treadle_cli.commands.plugins:PluginsCommand")
    register("registry", "treadle_cli.commands.registry:RegistryCommand")
    register("runs", "treadle_cli.commands.runs:RunsCommand")
    register("schedule", "treadle_cli.commands.schedule:ScheduleCommand")
    register("train", "treadle_cli.commands.train:TrainCommand")
    register("verify-resume", "treadle_cli.commands.verify_resume:VerifyResumeCommand")
    register("worker", "treadle_cli.commands.worker:WorkerCommand")
