"""One conformance run for a plugin package: find every name its distribution registers, run
the check of each name's kind, and print a table. Behind ``pytest --treadle-conformance`` and
``python -m treadle.testing DISTRIBUTION``.

Names are found through the installed plugin manager (entry points, as users get them): every
registered name whose provenance is the distribution, in every kind. Settings per name come
from the ``[tool.treadle.conformance]`` table of the package's ``pyproject.toml``
(:mod:`treadle.testing.cases`).
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import tempfile
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from treadle.testing.cases import CHECKERS, NotConfigured
from treadle.testing.report import ConformanceError, ConformanceReport

if TYPE_CHECKING:
    from treadle.plugins import PluginManager

__all__ = [
    "ConformanceCase",
    "ConformanceRun",
    "ConformanceResult",
    "discover_cases",
    "failure_messages",
    "find_settings",
    "format_table",
    "run_case",
    "run_conformance",
]


@attrs.frozen
class ConformanceCase:
    """One registered name to check.

    :ivar kind: its registry kind (``losses``).
    :ivar name: the registered name (``focal``).
    :ivar provenance: the plugin, distribution and version that registered it.
    """

    kind: str
    name: str
    provenance: str

    @property
    def id(self) -> str:
        """``losses:focal``: how pytest and the table name it."""
        return f"{self.kind}:{self.name}"


@attrs.frozen
class ConformanceResult:
    """What checking one name gave.

    :ivar outcome: ``passed``, ``failed`` (a rule broken, or the object could not be loaded)
        or ``skipped`` (a setting the check needs was not declared).
    :ivar report: the report, when it passed.
    :ivar message: the failure or the reason for skipping.
    """

    case: ConformanceCase
    outcome: str
    seconds: float
    report: ConformanceReport | None = None
    message: str = ""

    @property
    def summary(self) -> str:
        """One line for the table."""
        if self.report is not None:
            return self.report.summary()
        return self.message.splitlines()[0] if self.message else ""


@attrs.frozen
class ConformanceRun:
    """Every result of one run; ``ok`` when none failed."""

    distribution: str
    results: tuple[ConformanceResult, ...]

    @property
    def ok(self) -> bool:
        return all(result.outcome != "failed" for result in self.results)

    def table(self) -> str:
        return format_table(self.results)


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def discover_cases(distribution: str, plugin_manager: PluginManager) -> list[ConformanceCase]:
    """Every name ``distribution`` registers through ``plugin_manager``, by kind then name.

    :raises ValueError: the distribution is not installed, declares no ``treadle`` entry
        point, or the installed plugins clash or fail to load; the message says what to do.
    """
    from treadle.registry import KINDS

    wanted = _normalized(distribution)
    try:
        installed = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        msg = (
            f"distribution {distribution!r} is not installed: install it first "
            f"(pip install -e . in its folder) so that its entry points exist"
        )
        raise ValueError(msg) from None
    if not [entry for entry in installed.entry_points if entry.group == "treadle"]:
        msg = (
            f"distribution {distribution!r} declares no entry point in the 'treadle' group: add "
            f"[project.entry-points.treadle] to its pyproject.toml and reinstall it"
        )
        raise ValueError(msg)
    from treadle.errors import TreadleError

    cases = []
    for kind in KINDS:
        try:
            entries = plugin_manager.registry(kind).entries()
        except TreadleError as err:  # a clash or a broken plugin: nothing can be checked
            msg = f"the installed plugins cannot be loaded: {err}"
            raise ValueError(msg) from err
        for entry in entries:
            owner = entry.provenance.distribution
            if owner is not None and _normalized(owner) == wanted:
                cases.append(ConformanceCase(kind, entry.name, str(entry.provenance)))
    return cases


def run_case(
    case: ConformanceCase,
    settings: Mapping[str, Any],
    workdir: Path,
    plugin_manager: PluginManager,
) -> ConformanceResult:
    """Check one name with its kind's checker; never raises for a broken plugin."""
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)

    def result(outcome: str, **fields: Any) -> ConformanceResult:
        return ConformanceResult(case, outcome, time.perf_counter() - started, **fields)

    kind_settings = settings.get(case.kind, {})
    own = dict(kind_settings.get(case.name, {})) if isinstance(kind_settings, Mapping) else {}
    try:
        registered = plugin_manager.registry(case.kind).get(case.name)
        report = CHECKERS[case.kind](case.name, registered, own, workdir, plugin_manager)
    except NotConfigured as reason:
        return result("skipped", message=str(reason))
    except ConformanceError as err:
        return result("failed", message=str(err))
    except Exception as err:  # a plugin that cannot even be loaded or driven fails its case
        return result(
            "failed", message=f"{case.id} could not be checked: {type(err).__name__}: {err}"
        )
    return result("passed", report=report)


def find_settings(distribution: str, project: Path | None = None) -> dict[str, Any]:
    """The ``[tool.treadle.conformance]`` table of the distribution's ``pyproject.toml``:
    ``project``'s if given, else the folder of an editable install (PEP 610's
    ``direct_url.json``), else the working directory's when its project has that name;
    ``{}`` when none is found."""
    candidates = []
    if project is not None:
        candidates.append(Path(project))
    try:
        direct_url = importlib.metadata.distribution(distribution).read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        direct_url = None
    if direct_url:
        url = json.loads(direct_url).get("url", "")
        if url.startswith("file://"):
            candidates.append(Path(url.removeprefix("file://")))
    candidates.append(Path.cwd())
    for folder in candidates:
        pyproject = folder / "pyproject.toml" if folder.is_dir() else folder
        if not pyproject.is_file():
            continue
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        name = data.get("project", {}).get("name", "")
        if project is None and _normalized(name) != _normalized(distribution):
            continue
        table = data.get("tool", {}).get("treadle", {}).get("conformance", {})
        return dict(table)
    return {}


def run_conformance(
    distribution: str,
    *,
    settings: Mapping[str, Any] | None = None,
    plugin_manager: PluginManager | None = None,
    workdir: Path | None = None,
    kinds: Sequence[str] | None = None,
) -> ConformanceRun:
    """Check every name ``distribution`` registers.

    :param settings: the ``[tool.treadle.conformance]`` table (default: :func:`find_settings`).
    :param plugin_manager: where names are found (default: a new manager with the installed
        plugins, discovered as users get them).
    :param workdir: where checks write (default: a temporary folder, removed afterwards).
    :param kinds: only these kinds.
    :raises ValueError: the distribution is not installed or registers through no entry point.
    """
    from treadle.plugins import make_plugin_manager

    manager = plugin_manager or make_plugin_manager()
    if settings is None:
        settings = find_settings(distribution)
    cases = [
        case
        for case in discover_cases(distribution, manager)
        if kinds is None or case.kind in kinds
    ]
    results = []
    with _folder(workdir) as folder:
        for index, case in enumerate(cases):
            place = folder / f"{index:02d}-{case.kind}-{case.name}"
            place.mkdir(parents=True, exist_ok=True)
            results.append(run_case(case, settings, place, manager))
    return ConformanceRun(distribution, tuple(results))


class _folder:
    """A given folder, or a temporary one removed on exit."""

    def __init__(self, folder: Path | None) -> None:
        self._given = folder
        self._temporary: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Path:
        if self._given is not None:
            return Path(self._given)
        self._temporary = tempfile.TemporaryDirectory(prefix="treadle-conformance-")
        return Path(self._temporary.name)

    def __exit__(self, *exc_info: object) -> None:
        if self._temporary is not None:
            self._temporary.cleanup()


def format_table(results: Sequence[ConformanceResult], width: int = 100) -> str:
    """The results as a plain-text table: kind, name, outcome, seconds and the summary."""
    rows = [("kind", "name", "result", "seconds", "rules")]
    rows += [
        (
            result.case.kind,
            result.case.name,
            result.outcome,
            f"{result.seconds:.1f}",
            result.summary,
        )
        for result in results
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = []
    for index, row in enumerate(rows):
        head = "  ".join(cell.ljust(widths[column]) for column, cell in enumerate(row[:4]))
        room = max(20, width - len(head) - 2)
        text = row[4] if len(row[4]) <= room else row[4][: room - 3] + "..."
        lines.append(f"{head}  {text}".rstrip())
        if index == 0:
            lines.append("  ".join("-" * size for size in widths) + "  " + "-" * 5)
    passed = sum(result.outcome == "passed" for result in results)
    failed = sum(result.outcome == "failed" for result in results)
    skipped = sum(result.outcome == "skipped" for result in results)
    lines.append(f"{passed} passed, {failed} failed, {skipped} skipped")
    return "\n".join(lines)


def failure_messages(results: Sequence[ConformanceResult]) -> Iterator[str]:
    """``losses:focal: <the whole message>`` for each failed result."""
    for result in results:
        if result.outcome == "failed":
            yield f"{result.case.id}: {result.message}"
