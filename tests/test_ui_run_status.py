"""The ui plugin shows the statuses the experiment store reports for runs that did not finish
(issue 13): ``died`` (its owner's process is gone) in the runs table, its filter and its page,
not live; ``interrupted`` as a warning."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from treadle.experiments import ExperimentDB
from treadle.owner import current_owner, local_machine

pytest.importorskip("starlette", reason="the ui plugin needs starlette")
from starlette.testclient import TestClient

from treadle_ui.app import create_app
from treadle_ui.settings import StoreLocations, UiSettings
from treadle_ui.stores import StoreReader

BASE = "http://127.0.0.1:8765"


def test_the_ui_shows_runs_that_died_or_were_interrupted(tmp_path: Path) -> None:
    location = tmp_path / "treadle.db"
    gone = attrs.evolve(current_owner(), token=f"{local_machine()}:0")  # its pid was reused
    with ExperimentDB(location) as db:
        died = db.log_run("killed", {}, owner=gone)
        interrupted = db.log_run("stopped", {}, owner=current_owner())
        db.update_run(interrupted, status="interrupted")
        alive = db.log_run("alive", {}, owner=current_owner())
    locations = StoreLocations.shared(str(location))
    app = create_app(UiSettings(locations=locations), StoreReader(locations))
    try:
        with TestClient(app.app, base_url=BASE) as client:
            page = client.get("/runs", params={"status": "died"}).text
            assert re.findall(r'<tr data-run-id="(\d+)"', page) == [str(died)]
            assert '<span class="status tone-bad">died</span>' in page
            assert '<option value="died">' in page
            assert '<option value="interrupted">' in page
            run_page = client.get(f"/runs/{died}").text
            assert '<span class="status tone-bad" data-run-status>died</span>' in run_page
            assert client.get(f"/api/runs/{died}/series").json()["live"] is False
            everything = client.get("/runs").text
            assert '<span class="status tone-warn">interrupted</span>' in everything
            running = client.get("/runs", params={"status": "running"}).text
            assert re.findall(r'<tr data-run-id="(\d+)"', running) == [str(alive)]
    finally:
        app.reader.close()
