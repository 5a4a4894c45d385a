"""``treadle plugin new NAME [--kinds loss,collator,...]``: a ready plugin package, from the
templates of :mod:`treadle_cli.scaffold`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from treadle.errors import ConfigError
from treadle_cli.scaffold import KIND_TEMPLATES, answers_for, registered_names, write

__all__ = ["PluginCommand"]


class PluginCommand:
    """``treadle plugin new NAME [--kinds ...] [--directory DIR] [--distribution ...]
    [--package ...] [--version ...] [--force]``."""

    help = "start a plugin package: treadle plugin new NAME --kinds loss,collator,..."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        new = actions.add_parser(
            "new",
            help="write a plugin package: pyproject with the entry point, a plugin module, "
            "an example per kind, tests that run the conformance kit, a README",
            description="Write a plugin package that installs with pip install -e, passes its "
            "own tests as written, and is listed by treadle plugins.",
        )
        new.add_argument("name", help="the plugin's name, its entry-point name (acme)")
        new.add_argument(
            "--kinds",
            default="loss",
            help=f"comma-separated kinds, an example of each: {', '.join(KIND_TEMPLATES)} "
            f"(default: %(default)s)",
        )
        new.add_argument(
            "--directory", type=Path, help="where to write it (default: ./<distribution>)"
        )
        new.add_argument("--distribution", help="distribution name (default: treadle-<name>)")
        new.add_argument("--package", help="import package (default: treadle_<name>)")
        new.add_argument("--version", default="0.1.0", help="first version (default: %(default)s)")
        new.add_argument(
            "--force",
            action="store_true",
            help="write into a folder that holds files (files of the same names are replaced)",
        )

    def run(self, args: argparse.Namespace) -> int:
        kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
        try:
            answers = answers_for(
                args.name,
                kinds,
                distribution=args.distribution,
                package=args.package,
                version=args.version,
            )
        except ValueError as err:
            raise ConfigError(str(err)) from err
        folder = args.directory or Path(answers.distribution)
        try:
            written = write(answers, folder, force=args.force)
        except FileExistsError as err:
            raise ConfigError(str(err)) from err
        names = [f"{kind} {', '.join(found)}" for kind, found in registered_names(answers).items()]
        print(f"wrote {folder}/ ({len(written)} files): {'; '.join(names)}")
        print(
            f"next:\n"
            f"  cd {folder}\n"
            f"  pip install -e .             # treadle finds it through its entry point\n"
            f"  treadle plugins              # lists '{answers.name}'\n"
            f"  pytest                       # its tests and the conformance kit, with a table"
        )
        sys.stdout.flush()
        return 0
