"""The ``treadle`` command: the parser and error handling; every sub-command is a plugin's.

The built-in sub-commands come from the ``cli`` plugin (``treadle_cli``) through
``treadle_register_commands``, as a third party's do: two plugins registering one name is the
registry's usual conflict error, unless one of them passes ``override=True``.

Results go to stdout, diagnostics to stderr; ``-v`` / ``-q`` set the log level. Errors treadle
raises on purpose print as one message and exit with status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from treadle import __version__
from treadle.errors import TreadleError

if TYPE_CHECKING:
    from treadle.plugins import PluginManager
    from treadle.protocols import Command

__all__ = ["build_parser", "main"]


class _UnavailableCommand:
    """Stands in for a registered command that fails to load: listed in ``--help`` as
    unavailable, and running it reports the error."""

    def __init__(self, error: TreadleError) -> None:
        self.error = error
        self.help = f"unavailable: failed to load ({type(error).__name__}; run it for the cause)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Takes any arguments (the command line lets them through), to report the error."""

    def run(self, args: argparse.Namespace) -> int:
        raise self.error


def load_commands(manager: PluginManager) -> dict[str, Command]:
    """Every registered command, instantiated; one that fails to load stands in with its error.

    :raises PluginConflictError: two plugins register one command name.
    """
    registry = manager.registry("commands")
    commands: dict[str, Command] = {}
    for name in registry.names():
        try:
            commands[name] = registry.create(name)
        except TreadleError as err:
            commands[name] = _UnavailableCommand(err)
    return commands


def build_parser(commands: Mapping[str, Command]) -> argparse.ArgumentParser:
    """The ``treadle`` parser with one sub-parser per command, sorted by name."""
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
        command.add_arguments(command_parser)
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
    try:
        commands = load_commands(manager)
    except TreadleError as err:
        print(f"treadle: {err}", file=sys.stderr)
        return 2
    if not commands:
        disabled = ", ".join(manager.disabled) or "none"
        print(
            f"treadle: no sub-commands are registered (disabled plugins: {disabled}); the "
            f"built-in ones come from the plugin 'cli'.",
            file=sys.stderr,
        )
        return 2
    parser = build_parser(commands)
    args, extra = parser.parse_known_args(arguments)
    if extra and not isinstance(args._command, _UnavailableCommand):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
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
