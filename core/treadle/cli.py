"""The ``treadle`` command: core sub-commands plus those plugins register.

Results go to stdout, diagnostics to stderr; ``-v`` / ``-q`` set the log level. Errors treadle
raises on purpose print as one message and exit with status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from treadle import __version__
from treadle.errors import TreadleError

__all__ = ["CORE_COMMANDS", "main"]

logger = logging.getLogger(__name__)

#: Core sub-commands, imported only when run: ``name: "module:Class"``.
CORE_COMMANDS: dict[str, str] = {
    "plugins": "treadle.commands.plugins:PluginsCommand",
    "export": "treadle.commands.export:ExportCommand",
    "train": "treadle.commands.train:TrainCommand",
    "verify-resume": "treadle.commands.verify_resume:VerifyResumeCommand",
    "runs": "treadle.commands.runs:RunsCommand",
    "registry": "treadle.commands.registry:RegistryCommand",
    "worker": "treadle.commands.worker:WorkerCommand",
    "jobs": "treadle.commands.jobs:JobsCommand",
    "schedule": "treadle.commands.schedule:ScheduleCommand",
}


def _load_core_command(spec: str) -> object:
    module_name, _, class_name = spec.partition(":")
    return getattr(importlib.import_module(module_name), class_name)()


def build_parser(commands: dict[str, object]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="treadle",
        description="treadle: a modular PyTorch training engine.",
    )
    parser.add_argument("--version", action="version", version=f"treadle {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in sorted(commands):
        command = commands[name]
        help_text = getattr(command, "help", "")
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        command.add_arguments(command_parser)  # type: ignore[attr-defined]
        command_parser.set_defaults(_command=command)
    return parser


def _configure_logging(verbose: int, quiet: int) -> None:
    level = logging.INFO - 10 * verbose + 10 * quiet
    logging.basicConfig(
        level=max(logging.DEBUG, min(level, logging.CRITICAL)),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    from treadle.plugins import make_plugin_manager

    arguments = list(sys.argv[1:] if argv is None else argv)
    # Log levels first: discovery below may already log.
    levels = argparse.ArgumentParser(add_help=False)
    levels.add_argument("-v", "--verbose", action="count", default=0)
    levels.add_argument("-q", "--quiet", action="count", default=0)
    early, _ = levels.parse_known_args(arguments)
    _configure_logging(early.verbose, early.quiet)
    # Non-strict: `treadle plugins` must list a broken plugin; other commands refuse below.
    manager = make_plugin_manager(strict=False)
    commands: dict[str, object] = {
        name: _load_core_command(spec) for name, spec in CORE_COMMANDS.items()
    }
    try:
        for entry in manager.registry("commands").entries():
            if entry.name in commands:
                logger.warning(
                    "command %r from %s is shadowed by treadle's own", entry.name, entry.provenance
                )
                continue
            commands[entry.name] = entry.obj() if isinstance(entry.obj, type) else entry.obj
    except TreadleError as err:
        print(f"treadle: {err}", file=sys.stderr)
        return 2
    parser = build_parser(commands)
    args = parser.parse_args(arguments)
    broken = [info for info in manager.plugin_infos() if info.status == "broken"]
    if broken and args.command != "plugins":
        for info in broken:
            print(
                f"treadle: plugin {info.name!r} ({info.distribution} {info.version}) is broken: "
                f"{info.error}. Fix or uninstall it, or disable it with "
                f"TREADLE_DISABLE_PLUGINS={info.name}.",
                file=sys.stderr,
            )
        return 2
    args.plugin_manager = manager
    try:
        status = args._command.run(args)
    except TreadleError as err:
        print(f"treadle {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("treadle: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    raise SystemExit(main())
