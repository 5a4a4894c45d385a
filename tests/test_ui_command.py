"""``treadle ui`` as a command: registered by its plugin through the commands hook, light to
discover, refusing a store that is not there, and serving until Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import treadle_ui.plugin
from treadle.experiments import ExperimentDB
from treadle.plugins import make_plugin_manager
from treadle.protocols import Command
from treadle.testing import check_hookimpls, isolated_plugin_manager
from treadle_ui.command import UiCommand

ROOT = Path(__file__).resolve().parents[1]
UI_LIBRARIES = ["starlette", "uvicorn", "jinja2", "anyio", "httpx"]


def test_the_ui_plugin_registers_the_ui_command() -> None:
    assert check_hookimpls(treadle_ui.plugin) == []
    manager = isolated_plugin_manager(("ui", treadle_ui.plugin))
    entry = manager.registry("commands").entry("ui")
    assert entry.provenance.plugin == "ui"
    command = entry.obj() if isinstance(entry.obj, type) else entry.obj
    assert isinstance(command, Command)


def test_the_ui_plugin_is_discovered_through_its_entry_point() -> None:
    manager = make_plugin_manager()
    info = {plugin.name: plugin for plugin in manager.plugin_infos()}["ui"]
    assert info.distribution == "treadle"
    assert info.status != "broken"
    assert manager.registry("commands").entry("ui").obj is UiCommand


def test_discovery_and_treadle_help_import_no_web_library() -> None:
    probe = (
        "import json, sys\n"
        "from treadle.plugins import make_plugin_manager\n"
        "manager = make_plugin_manager()\n"
        "manager.registry('commands').names()\n"
        "from treadle.cli import main\n"
        "try:\n"
        "    main(['ui', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps(sorted(m for m in {UI_LIBRARIES!r} if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_a_missing_store_is_refused_without_creating_one(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "treadle", "ui", "--location", "typo.db"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "No experiment store at typo.db" in result.stderr
    assert not (tmp_path / "typo.db").exists()


@pytest.mark.slow
def test_treadle_ui_serves_the_store_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn", reason='treadle ui needs the "ui" extra')
    location = tmp_path / "treadle.db"
    with ExperimentDB(location) as db:
        db.log_run("served-by-the-cli")
    process = subprocess.Popen(
        [sys.executable, "-m", "treadle", "ui", "--location", str(location), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(f"treadle ui: store {location} at http://127.0.0.1:"), line
        assert "(read-only; Ctrl-C stops)" in line
        address = line.split(" at ")[1].split(" ")[0]
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(address + "runs", timeout=5) as response:
                    page = response.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert "served-by-the-cli" in page
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert process.stdout.read() == "treadle ui: stopped\n"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
