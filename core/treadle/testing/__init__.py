"""Test kit for treadle and for plugin authors: an opt-in pytest plugin.

Enable it in a ``conftest.py``::

    pytest_plugins = ["treadle.testing"]

It provides the ``plugin_manager`` fixture (an isolated manager: nothing discovered, nothing
global) and :func:`check_hookimpls`, which a plugin's own test suite calls on its plugin module
to catch misspelled hooks, unknown arguments and forgotten ``@hookimpl`` markers before a user
does. A check per kind lives in a submodule (``losses``, ``collators``, ``models``,
``metrics``, ``loggers``, ``exporters``, ``stores``, ``jobs``, ``commands``, ``datasets``), each
returning a :class:`~treadle.testing.report.ConformanceReport`; :data:`RULES` lists their rules.

``pytest --treadle-conformance`` adds one test per name the project's distribution registers
(its ``pyproject.toml``'s project name, or ``--treadle-package``), running the check of the
name's kind, and prints a table of the results; ``python -m treadle.testing DISTRIBUTION`` does
the same without pytest's collection.

It is deliberately not a ``pytest11`` entry point: that would import torch in every pytest run
on any machine where treadle is installed.
"""

from __future__ import annotations

import importlib
import inspect
import shutil
import tempfile
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from treadle import hookspecs
from treadle.plugins import PluginManager, make_plugin_manager

if TYPE_CHECKING:
    from treadle.testing.report import Rule
    from treadle.testing.runner import ConformanceCase, ConformanceResult

__all__ = ["RULES", "check_hookimpls", "isolated_plugin_manager", "plugin_manager", "rules_of"]

#: The module of each kind's check (its ``RULES``), by registry kind.
_KIT_MODULES = {
    "losses": "treadle.testing.losses",
    "collators": "treadle.testing.collators",
    "models": "treadle.testing.models",
    "metrics": "treadle.testing.metrics",
    "loggers": "treadle.testing.loggers",
    "exporters": "treadle.testing.exporters",
    "storage": "treadle.testing.stores",
    "job_types": "treadle.testing.jobs",
    "commands": "treadle.testing.commands",
    "datasets": "treadle.testing.datasets",
}


def rules_of(kind: str) -> tuple[Rule, ...]:
    """The rules the kit checks for ``kind`` (a registry kind: ``losses``, ...), in order."""
    rules: tuple[Rule, ...] = importlib.import_module(_KIT_MODULES[kind]).RULES
    return rules


def __getattr__(name: str) -> Any:
    # RULES imports every kit module (torch, the engine): only when asked for
    if name == "RULES":
        return {kind: rules_of(kind) for kind in _KIT_MODULES}
    msg = f"module 'treadle.testing' has no attribute {name!r}"
    raise AttributeError(msg)


_SPEC_NAMES = {name for name in vars(hookspecs) if name.startswith("treadle_")}


def isolated_plugin_manager(*plugins: tuple[str, object]) -> PluginManager:
    """A plugin manager with only the given ``(name, plugin)`` pairs: no entry points, no
    ``TREADLE_DISABLE_PLUGINS``, nothing shared with other tests."""
    return make_plugin_manager(load_entry_points=False, disabled=(), plugins=plugins)


@pytest.fixture
def plugin_manager() -> PluginManager:
    """An isolated, empty plugin manager: register exactly what the test needs with
    ``plugin_manager.register(module_or_object, name="...")``."""
    return isolated_plugin_manager()


def check_hookimpls(plugin: object) -> list[str]:
    """Problems with ``plugin``'s hook implementations, one sentence each (empty when fine).

    Finds: a ``treadle_*`` function not marked with ``@hookimpl`` (pluggy ignores it silently),
    a marked implementation of a hook that does not exist (with the closest name), and an
    argument the hook's specification does not provide.
    """
    import difflib

    problems = []
    marker_attr = "treadle_impl"
    for name, function in inspect.getmembers(plugin, callable):
        if not name.startswith("treadle_"):
            continue
        marked = hasattr(function, marker_attr)
        if name not in _SPEC_NAMES:
            if marked:
                close = difflib.get_close_matches(name, sorted(_SPEC_NAMES), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"{name} is marked @hookimpl but is no treadle hook{hint}")
            continue
        if not marked:
            problems.append(f"{name} is not marked with @hookimpl, so pluggy never calls it")
            continue
        spec_args = set(inspect.signature(getattr(hookspecs, name)).parameters)
        impl_args = [
            parameter.name
            for parameter in inspect.signature(function).parameters.values()
            if parameter.name != "self"
        ]
        unknown = [arg for arg in impl_args if arg not in spec_args]
        if unknown:
            problems.append(
                f"{name} takes {', '.join(unknown)}, which the hook does not provide "
                f"(it provides {', '.join(sorted(spec_args))})"
            )
        defaults = [
            parameter.name
            for parameter in inspect.signature(function).parameters.values()
            if parameter.default is not inspect.Parameter.empty
        ]
        if defaults:
            problems.append(
                f"{name} gives defaults to {', '.join(defaults)}; hook implementations take "
                f"none (pluggy versions disagree on what they then receive)"
            )
    return problems


# -- pytest --treadle-conformance ---------------------------------------------------------------

_RESULT_PROPERTY = "treadle_conformance"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("treadle", "treadle plugin conformance")
    group.addoption(
        "--treadle-conformance",
        action="store_true",
        help="add a test per name the project's distribution registers, running its kind's "
        "conformance check, and print a table of the results",
    )
    group.addoption(
        "--treadle-package",
        metavar="DISTRIBUTION",
        help="the distribution to check (default: the name in the rootdir's pyproject.toml)",
    )


def _project_distribution(config: pytest.Config) -> tuple[str, dict[str, Any]]:
    """The distribution to check and its ``[tool.treadle.conformance]`` settings."""
    from treadle.testing.runner import find_settings

    pyproject = Path(config.rootpath) / "pyproject.toml"
    chosen = config.getoption("treadle_package")
    if chosen:
        project = pyproject if pyproject.is_file() else None
        settings = find_settings(chosen, project) if project else find_settings(chosen)
        return chosen, settings
    if not pyproject.is_file():
        msg = (
            f"--treadle-conformance: no pyproject.toml in {config.rootpath}; name the "
            f"distribution with --treadle-package"
        )
        raise pytest.UsageError(msg)
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    name = data.get("project", {}).get("name")
    if not name:
        msg = f"--treadle-conformance: {pyproject} has no [project] name"
        raise pytest.UsageError(msg)
    return name, dict(data.get("tool", {}).get("treadle", {}).get("conformance", {}))


class ConformanceItem(pytest.Item):
    """One registered name's conformance check, as a pytest test."""

    def __init__(
        self,
        *,
        case: ConformanceCase,
        settings: dict[str, Any],
        plugin_manager: PluginManager,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.settings = settings
        self.plugin_manager = plugin_manager

    def runtest(self) -> None:
        from treadle.testing.runner import run_case

        with tempfile.TemporaryDirectory(prefix="treadle-conformance-") as folder:
            result = run_case(self.case, self.settings, Path(folder), self.plugin_manager)
        self.user_properties.append((_RESULT_PROPERTY, _as_record(result)))
        if result.outcome == "skipped":
            pytest.skip(result.message)
        if result.outcome == "failed":
            raise _CaseFailed(result.message)

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None
    ) -> str | Any:
        if isinstance(excinfo.value, _CaseFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"treadle conformance {self.case.id}"


class _CaseFailed(AssertionError):
    """A conformance case failed; its message is the whole report."""


def _as_record(result: ConformanceResult) -> dict[str, Any]:
    return {
        "kind": result.case.kind,
        "name": result.case.name,
        "outcome": result.outcome,
        "seconds": result.seconds,
        "summary": result.summary,
    }


class _ConformanceSession:
    """Registered for a session run with ``--treadle-conformance``: adds the items, gathers
    their results (from workers too: they travel in ``user_properties``) and prints them."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: list[dict[str, Any]] = []

    @pytest.hookimpl(tryfirst=True)  # before -k and -m deselect
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        from treadle.testing.runner import discover_cases

        distribution, settings = _project_distribution(config)
        manager = make_plugin_manager()
        try:
            cases = discover_cases(distribution, manager)
        except ValueError as err:
            raise pytest.UsageError(f"--treadle-conformance: {err}") from err
        for case in cases:
            items.append(
                ConformanceItem.from_parent(
                    session,
                    name=f"treadle-conformance[{case.id}]",
                    nodeid=f"treadle-conformance::{case.id}",
                    case=case,
                    settings=settings,
                    plugin_manager=manager,
                )
            )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for key, value in report.user_properties:
            if key == _RESULT_PROPERTY and report.when == "call" and isinstance(value, dict):
                self.records.append(value)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.records:
            return
        from treadle.testing.runner import ConformanceCase, ConformanceResult, format_table

        results = [
            ConformanceResult(
                ConformanceCase(record["kind"], record["name"], ""),
                record["outcome"],
                record["seconds"],
                message=record["summary"],
            )
            for record in self.records
        ]
        terminalreporter.section("treadle conformance")
        terminalreporter.line(
            format_table(results, width=shutil.get_terminal_size((100, 24)).columns)
        )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("treadle_conformance", default=False):
        config.pluginmanager.register(_ConformanceSession(config), "treadle-conformance")
