"""Conformance checks for command-line sub-commands, treadle's and any plugin's.

Call :func:`check_command` with the command object and, to run it, arguments it succeeds
with::

    from treadle.testing.commands import check_command
    from acme_treadle.report import ReportCommand


    def test_report_command_conforms(tmp_path):
        check_command(ReportCommand(), name="acme-report", argv=["--location", str(tmp_path)])

The rules:

``describes itself``
    ``help`` is one non-empty line (``treadle --help`` lists it).
``adds arguments``
    ``add_arguments(parser)`` on a ``treadle NAME`` sub-parser works and its help renders.
``imports light``
    In a fresh interpreter, importing the command's module after ``import treadle`` loads
    none of :data:`HEAVY_MODULES` (pandas, scikit-learn, ``torch._dynamo``, ...; pass your own
    list as ``heavy_modules``): ``treadle --help`` imports every command. Import them inside
    ``run``.
``runs``
    (with ``argv``) ``run(args)`` on the parsed arguments returns exit status 0 (an int, or
    None). ``args.plugin_manager`` is set, as the command line sets it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from treadle.testing.report import ConformanceReport, Rule, RuleRunner

if TYPE_CHECKING:
    from treadle.plugins import PluginManager

__all__ = ["HEAVY_MODULES", "RULES", "check_command"]

#: Modules a command's module must not import by default: general libraries that each cost a
#: large share of a second or more (``torch._dynamo``: about 1 s, measured).
HEAVY_MODULES = (
    "pandas",
    "scipy",
    "sklearn",
    "matplotlib",
    "datasets",
    "transformers",
    "tensorflow",
    "jax",
    "torch._dynamo",
)

#: The rules :func:`check_command` enforces, in order.
RULES = (
    Rule("describes itself", "help is one non-empty line"),
    Rule("adds arguments", "add_arguments(parser) works and the sub-command's help renders"),
    Rule("imports light", "its module imports none of the heavy libraries after treadle"),
    Rule("runs", "run(args) on arguments it takes returns exit status 0"),
)

_PROBE = """
import json, sys
import treadle, treadle.plugins
before = set(sys.modules)
import importlib
importlib.import_module(sys.argv[1])
heavy = json.loads(sys.argv[2])
print(json.dumps(sorted(name for name in heavy if name in sys.modules and name not in before)))
"""


def check_command(
    command: Any,
    *,
    name: str = "conformance",
    argv: Sequence[str] | None = None,
    plugin_manager: PluginManager | None = None,
    heavy_modules: Sequence[str] = HEAVY_MODULES,
    timeout: float = 120.0,
) -> ConformanceReport:
    """Run the rules above on ``command`` (an instance, as ``registry.create`` gives it).

    :param name: its registered name.
    :param argv: arguments after ``treadle NAME`` that it runs with successfully; None skips
        the ``runs`` rule (a command that trains or serves needs a test of its own).
    :param plugin_manager: set as ``args.plugin_manager`` (default: the global manager).
    :param heavy_modules: what the command's module must not import (the libraries your own
        plugin depends on, say).
    :param timeout: seconds for the fresh interpreter of the import rule.
    :returns: the report; ``details["status"]`` is the exit status when it ran.
    :raises ConformanceError: a rule is broken; the message names it.
    """
    subject = f"{name} ({type(command).__qualname__})"
    rules = RuleRunner("commands", subject, RULES)
    help_text = getattr(command, "help", None)
    if not isinstance(help_text, str) or not help_text.strip() or "\n" in help_text.strip():
        rules.fail("describes itself", f"help is {help_text!r}; give one line saying what it does")
    rules.passes("describes itself")

    parser = argparse.ArgumentParser(prog="treadle")
    sub = parser.add_subparsers(dest="command", required=True)
    command_parser = sub.add_parser(name, help=help_text, description=help_text)
    try:
        command.add_arguments(command_parser)
        command_parser.format_help()
    except Exception as err:
        raise rules.error(
            "adds arguments", f"add_arguments raised {type(err).__name__}: {err}"
        ) from err
    command_parser.set_defaults(_command=command)
    rules.passes("adds arguments")

    module = type(command).__module__
    if module == "__main__" or importlib.util.find_spec(module) is None:
        rules.skip("imports light", f"module {module!r} cannot be imported by name")
    else:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, module, json.dumps(list(heavy_modules))],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            rules.fail("imports light", f"importing {module} failed:\n{done.stderr[-2000:]}")
        heavy = json.loads(done.stdout.strip().splitlines()[-1])
        if heavy:
            rules.fail(
                "imports light",
                f"importing {module} loads {', '.join(heavy)}; treadle --help imports every "
                f"command, so import them inside run()",
            )
        rules.passes("imports light")

    if argv is None:
        rules.skip("runs", "no argv given")
        return rules.report()
    try:
        args = parser.parse_args([name, *argv])
    except SystemExit as err:
        raise rules.error("runs", f"its parser refused {list(argv)} (exit {err.code})") from err
    if plugin_manager is None:
        from treadle.plugins import get_plugin_manager

        plugin_manager = get_plugin_manager()
    args.plugin_manager = plugin_manager
    try:
        status = command.run(args)
    except Exception as err:
        raise rules.error("runs", f"run({list(argv)}) raised {type(err).__name__}: {err}") from err
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
        rules.fail("runs", f"run returned {status!r}; return the exit status, an int")
    if status:
        rules.fail("runs", f"run({list(argv)}) returned exit status {status}")
    rules.details["status"] = int(status or 0)
    rules.passes("runs")
    return rules.report()
