"""The ``treadle`` command line: every sub-command, the built-ins included, comes from the
``commands`` registry; clashes are the registry's; the common commands start without torch."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import treadle_jobs.plugin
import treadle_sqlite.plugin
from tests.conftest import FakeDist
from treadle.cli import main
from treadle.experiments import ExperimentDB
from treadle.jobs.manager import JobManager
from treadle.model_registry import ModelRegistry
from treadle.testing import isolated_plugin_manager

ROOT = Path(__file__).resolve().parents[1]
BUILT_IN_COMMANDS = [
    "export",
    "jobs",
    "plugin",
    "plugins",
    "registry",
    "runs",
    "schedule",
    "train",
    "verify-resume",
    "worker",
]

REPORT = """
from treadle import hookimpl


class ReportCommand:
    help = "print the acme report"

    def add_arguments(self, parser):
        parser.add_argument("--title", default="acme")

    def run(self, args):
        print("report:", args.title)
        return 0


@hookimpl
def treadle_register_commands(register):
    register("acme-report", ReportCommand())
"""

REPLACES_RUNS = """
from treadle import hookimpl


class RunsCommand:
    help = "acme's own runs listing"

    def add_arguments(self, parser):
        pass

    def run(self, args):
        print("acme runs")
        return 0


@hookimpl
def treadle_register_commands(register):
    register("runs", RunsCommand(){override})
"""

BROKEN_COMMAND = """
from treadle import hookimpl


@hookimpl
def treadle_register_commands(register):
    register("acme-broken", "acme_missing_module:Command")
"""


def test_the_built_in_commands_are_registered_by_the_cli_plugin() -> None:
    from treadle.plugins import make_plugin_manager

    registry = make_plugin_manager().registry("commands")
    from_cli = [entry.name for entry in registry.entries() if entry.provenance.plugin == "cli"]
    assert from_cli == BUILT_IN_COMMANDS


def test_a_third_party_command_runs_beside_the_built_ins(
    fake_plugin_dist: FakeDist, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_plugin_dist("acme-treadle", "1.0.0", {"acme": "acme_report"}, {"acme_report": REPORT})
    assert main(["acme-report", "--title", "weekly"]) == 0
    assert capsys.readouterr().out == "report: weekly\n"


def test_a_command_name_two_plugins_register_is_the_registrys_conflict_error(
    fake_plugin_dist: FakeDist, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_plugin_dist(
        "acme-treadle",
        "1.0.0",
        {"acme": "acme_runs"},
        {"acme_runs": REPLACES_RUNS.format(override="")},
    )
    assert main(["plugins"]) == 2
    err = capsys.readouterr().err
    assert "Command 'runs' is registered 2 times: acme: acme-treadle 1.0.0 and cli: treadle" in err
    assert "override=True" in err


def test_a_plugin_replaces_a_built_in_command_with_override(
    fake_plugin_dist: FakeDist, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_plugin_dist(
        "acme-treadle",
        "1.0.0",
        {"acme": "acme_runs"},
        {"acme_runs": REPLACES_RUNS.format(override=", override=True")},
    )
    assert main(["runs"]) == 0
    assert capsys.readouterr().out == "acme runs\n"


def test_a_command_that_fails_to_load_is_listed_and_reports_its_error_when_run(
    fake_plugin_dist: FakeDist, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_plugin_dist(
        "acme-treadle", "1.0.0", {"acme": "acme_broken"}, {"acme_broken": BROKEN_COMMAND}
    )
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "acme-broken" in capsys.readouterr().out
    assert main(["acme-broken", "--anything"]) == 2
    err = capsys.readouterr().err
    assert "Command 'acme-broken' from acme: acme-treadle 1.0.0" in err
    assert "'acme_missing_module:Command'" in err
    assert "ModuleNotFoundError" in err
    assert main(["plugins", "--json"]) == 0, "the other commands still run"


def test_without_the_cli_plugin_the_command_line_says_where_commands_come_from(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TREADLE_DISABLE_PLUGINS", "cli,ui")
    assert main(["train"]) == 2
    err = capsys.readouterr().err
    assert "no sub-commands are registered (disabled plugins: cli, ui)" in err


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_nothing_imports_a_command_module() -> None:
    sources = [
        *(ROOT / "core").rglob("*.py"),
        *(ROOT / "plugins").rglob("*.py"),
        *(ROOT / "examples").rglob("*.py"),
    ]
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            name
            for name in _imported_modules(path)
            if name.startswith(("treadle_cli.commands", "treadle.commands"))
        )
        for path in sources
    }
    assert {path: names for path, names in offenders.items() if names} == {}


# -- fast start: the everyday commands never import torch -------------------------------------

PROBE = """
import json, sys
from treadle.cli import main
try:
    status = main(sys.argv[2:])
except SystemExit as exit:
    status = exit.code
with open(sys.argv[1], "w") as report:
    json.dump({"status": status, "torch": "torch" in sys.modules}, report)
"""


@pytest.fixture
def filled_store(tmp_path: Path) -> str:
    """A store with a run, a registered model and a job: the listings have rows to show."""
    path = str(tmp_path / "treadle.db")
    manager = isolated_plugin_manager(
        ("sqlite", treadle_sqlite.plugin), ("jobs", treadle_jobs.plugin)
    )
    with ExperimentDB(path, plugin_manager=manager) as db:
        run = db.log_run("base", {"learning_rate": 0.1})
        db.log_metrics(run, {"val_loss": 0.5}, epoch=0, step=10)
    with ModelRegistry(path, plugin_manager=manager) as registry:
        registry.register_model("gpt", "1.0.0", "a.pt", "language_modeling", {"val_loss": 0.4})
    with JobManager(path, plugin_manager=manager) as jobs:
        jobs.submit_job("noop", {})
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["--help"],
        ["plugins"],
        ["runs", "list", "--location", "{store}"],
        ["registry", "list", "--location", "{store}"],
        ["jobs", "--location", "{store}", "list"],
    ],
    ids=lambda command: " ".join(part for part in command if part[0] != "{"),
)
def test_everyday_commands_start_without_importing_torch(
    command: list[str], filled_store: str, tmp_path: Path
) -> None:
    command = [part.format(store=filled_store) for part in command]
    report = tmp_path / "report.json"
    env = {key: value for key, value in os.environ.items() if not key.startswith("TREADLE_")}
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, str(report), *command],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    found = json.loads(report.read_text(encoding="utf-8"))
    assert found["status"] == 0, completed.stderr
    assert found["torch"] is False
    if command[0] != "--help":
        assert len(completed.stdout.splitlines()) >= 3, "a header, a rule and a row"


def test_plugins_check_loads_every_reference_and_shows_a_broken_one(
    fake_plugin_dist: FakeDist, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_plugin_dist(
        "acme-treadle", "1.0.0", {"acme": "acme_broken"}, {"acme_broken": BROKEN_COMMAND}
    )
    assert main(["plugins", "--json"]) == 0, "listing imports no reference"
    listed = {record["name"]: record for record in json.loads(capsys.readouterr().out)}
    assert listed["acme"]["status"] == "loaded"
    assert main(["plugins", "--check", "--json"]) == 1
    checked = {record["name"]: record for record in json.loads(capsys.readouterr().out)}
    assert checked["acme"]["status"] == "broken"
    assert "'acme_missing_module:Command'" in checked["acme"]["error"]
    assert checked["losses"]["status"] == "loaded", "the built-ins' references load"
