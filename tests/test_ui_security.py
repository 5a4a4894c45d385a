"""``treadle ui`` security: read-only unless started with --allow-actions; actions need the
page's per-session token and the same origin; beyond loopback only with an access token;
Host names checked against DNS rebinding; everything user-named shown as text."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

pytest.importorskip("starlette", reason='treadle ui needs the "ui" extra')
from starlette.testclient import TestClient

from tests.test_ui_support import HTML_NAME, text_of
from treadle.errors import ConfigError
from treadle.experiments import ExperimentDB
from treadle.jobs.manager import JobManager
from treadle.jobs.scheduler import TrainingScheduler
from treadle.model_registry import ModelRegistry
from treadle_ui.app import UiApp, create_app
from treadle_ui.command import UiCommand, settings_from_arguments
from treadle_ui.security import CONTENT_SECURITY_POLICY
from treadle_ui.settings import (
    StoreLocations,
    UiSettings,
    check_bind,
    display_location,
    is_loopback,
)
from treadle_ui.stores import StoreReader

BASE = "http://127.0.0.1:8765"
TOKEN = "s3cret-token-of-24-chars"


@attrs.frozen
class Store:
    location: Path
    html_run: int
    old: int
    new: int
    pending_job: int
    schedule_id: int


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A store with HTML in names, a model of two versions, a pending job and a schedule;
    its folder's name is HTML too."""
    folder = tmp_path / "<img src=x onerror=alert(1)>"
    folder.mkdir()
    location = folder / "treadle.db"
    with ExperimentDB(location) as db:
        html_run = db.log_run(HTML_NAME, {"note": "<b>config</b>"}, notes="<i>notes</i>")
        db.log_metrics(html_run, {"<em>metric</em>": 1.0}, epoch=0, step=1)
        db.update_run(html_run, status="failed", error="<script>error()</script>")
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"not a real checkpoint")
    with ModelRegistry(location) as registry:
        old = registry.register_model(
            HTML_NAME, "1.0.0", checkpoint, "classification", {"<u>m</u>": 1.0},
            model_size_mb=1.0, memory_req_gb=1.0, tags=("production",),
        )  # fmt: skip
        new = registry.register_model(
            HTML_NAME, "2.0.0", checkpoint, "classification", model_size_mb=1.0,
            memory_req_gb=1.0, parent_model_id=old,
        )  # fmt: skip
    with JobManager(location) as queue:
        pending_job = queue.submit_job("noop", {"<script>": "x"})
    with TrainingScheduler(location) as scheduler:
        schedule_id = scheduler.create_schedule(
            "<script>nightly</script>", "noop", {}, "0 2 * * *", timezone="UTC"
        )
    return Store(location, html_run, old, new, pending_job, schedule_id)


def make_app(location: Path, **settings: Any) -> UiApp:
    locations = StoreLocations.shared(str(location))
    return create_app(UiSettings(locations=locations, **settings), StoreReader(locations))


@pytest.fixture
def read_only(store: Store) -> Iterator[TestClient]:
    app = make_app(store.location)
    with TestClient(app.app, base_url=BASE) as client:
        yield client
    app.reader.close()


@pytest.fixture
def acting(store: Store) -> Iterator[TestClient]:
    app = make_app(store.location, allow_actions=True)
    with TestClient(app.app, base_url=BASE) as client:
        yield client
    app.reader.close()


def form_token(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page)
    assert match, "no CSRF token in the page"
    return match.group(1)


def tag_holder(location: Path, tag: str) -> int:
    with ModelRegistry(location) as registry:
        return registry.get_model(tag=tag).model_id


def job_status(location: Path, job_id: int) -> str:
    with JobManager(location) as queue:
        return queue.get_job(job_id).status


def job_count(location: Path) -> int:
    with JobManager(location) as queue:
        return len(queue.list_jobs(limit=None))


# -- actions ----------------------------------------------------------------------------------


def test_actions_are_refused_and_not_offered_without_allow_actions(
    read_only: TestClient, store: Store
) -> None:
    assert "Promote" not in read_only.get(f"/models/{store.new}").text
    assert "Cancel job" not in read_only.get(f"/jobs/{store.pending_job}").text
    assert "Run now" not in read_only.get("/jobs").text
    for path, data in (
        (f"/models/{store.new}/promote", {"tag": "production"}),
        (f"/jobs/{store.pending_job}/cancel", {}),
        (f"/schedules/{store.schedule_id}/trigger", {}),
    ):
        response = read_only.post(path, data=data, follow_redirects=False)
        assert response.status_code == 403, path
        assert "--allow-actions" in response.text
    assert tag_holder(store.location, "production") == store.old
    assert job_status(store.location, store.pending_job) == "pending"
    assert job_count(store.location) == 1


def test_an_action_without_the_session_token_is_refused(acting: TestClient, store: Store) -> None:
    path = f"/models/{store.new}/promote"
    # no session cookie at all (a forged form on another site, in a browser with no visit)
    fresh = TestClient(acting.app, base_url=BASE)
    refused = fresh.post(path, data={"tag": "production"}, follow_redirects=False)
    assert refused.status_code == 403
    token = form_token(acting.get(f"/models/{store.new}").text)
    # a session, but no token, or another session's token
    assert acting.post(path, data={"tag": "production"}).status_code == 403
    assert acting.post(path, data={"tag": "production", "csrf_token": "0" * 64}).status_code == 403
    other = TestClient(acting.app, base_url=BASE)
    other_token = form_token(other.get(f"/models/{store.new}").text)
    assert other_token != token
    wrong = acting.post(path, data={"tag": "production", "csrf_token": other_token})
    assert wrong.status_code == 403
    assert tag_holder(store.location, "production") == store.old


def test_an_action_from_another_origin_is_refused_even_with_the_token(
    acting: TestClient, store: Store
) -> None:
    path = f"/models/{store.new}/promote"
    token = form_token(acting.get(f"/models/{store.new}").text)
    data = {"tag": "production", "csrf_token": token}
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:9999"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        response = acting.post(path, data=data, headers=headers, follow_redirects=False)
        assert response.status_code == 403, headers
    assert tag_holder(store.location, "production") == store.old


def test_actions_work_from_the_page_with_its_token(acting: TestClient, store: Store) -> None:
    page = acting.get(f"/models/{store.new}").text
    token = form_token(page)
    promoted = acting.post(
        f"/models/{store.new}/promote",
        data={"tag": "production", "csrf_token": token},
        headers={"Origin": BASE, "Sec-Fetch-Site": "same-origin"},
    )
    assert promoted.status_code == 200
    assert "2.0.0 now holds 'production'." in text_of(promoted.text)
    assert tag_holder(store.location, "production") == store.new
    cancelled = acting.post(f"/jobs/{store.pending_job}/cancel", data={"csrf_token": token})
    assert cancelled.status_code == 200
    assert f"Job {store.pending_job} is cancelled." in text_of(cancelled.text)
    assert job_status(store.location, store.pending_job) == "cancelled"
    again = acting.post(f"/jobs/{store.pending_job}/cancel", data={"csrf_token": token})
    assert "Not cancelled: Job" in text_of(again.text)
    assert "already cancelled" in text_of(again.text)
    triggered = acting.post(f"/schedules/{store.schedule_id}/trigger", data={"csrf_token": token})
    assert triggered.status_code == 200
    assert "triggered: job" in text_of(triggered.text)
    assert job_count(store.location) == 2


def test_session_cookies_are_httponly_samesite_strict_and_named_with_the_port(
    acting: TestClient, store: Store
) -> None:
    response = acting.get("/runs")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("treadle_ui_session_8765=")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie


# -- binding and access -----------------------------------------------------------------------


def test_a_bind_beyond_loopback_needs_an_access_token() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"):
        assert is_loopback(host), host
        check_bind(host, None)
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.invalid"):
        assert not is_loopback(host), host
        with pytest.raises(ConfigError, match="without an access token"):
            check_bind(host, None)
        check_bind(host, TOKEN)
    with pytest.raises(ConfigError, match="at least 16"):
        check_bind("0.0.0.0", "short")


def test_the_command_refuses_a_public_bind_before_opening_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TREADLE_UI_TOKEN", raising=False)
    parser = argparse.ArgumentParser()
    UiCommand().add_arguments(parser)
    args = parser.parse_args(["--location", str(tmp_path / "none.db"), "--host", "0.0.0.0"])
    with pytest.raises(ConfigError, match=r"will not listen on '0\.0\.0\.0'"):
        settings_from_arguments(args)
    monkeypatch.setenv("TREADLE_UI_TOKEN", TOKEN)
    assert settings_from_arguments(args).access_token == TOKEN
    for wrong in (["--port", "70000"], ["--page-size", "0"], ["--poll-seconds", "0"]):
        with pytest.raises(ConfigError, match="must be"):
            settings_from_arguments(parser.parse_args(wrong))
    result = subprocess.run(
        [sys.executable, "-m", "treadle", "ui", "--host", "0.0.0.0", "--location", "x.db"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert "will not listen on '0.0.0.0' without an access token" in result.stderr
    assert not (tmp_path / "x.db").exists()


def test_with_an_access_token_every_request_needs_it(store: Store) -> None:
    app = make_app(store.location, host="0.0.0.0", access_token=TOKEN)
    client = TestClient(app.app, base_url="http://192.168.1.20:8765")
    for path in ("/runs", "/api/runs/1/series", "/static/ui.css", "/models"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 401, path
        assert HTML_NAME not in response.text
    assert client.get("/runs", params={"token": "wrong-token-wrong-token"}).status_code == 401
    signed_in = client.get(
        "/runs", params={"token": TOKEN, "status": "failed"}, follow_redirects=False
    )
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/runs?status=failed"  # the token leaves the URL
    cookie = signed_in.headers["set-cookie"]
    assert TOKEN not in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert client.get("/runs").status_code == 200  # the cookie now admits
    bearer = TestClient(app.app, base_url="http://192.168.1.20:8765")
    assert bearer.get("/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert bearer.get("/runs", headers={"Authorization": "Bearer nope"}).status_code == 401
    app.reader.close()


def test_a_request_naming_another_host_is_refused_on_loopback(
    read_only: TestClient, store: Store
) -> None:
    rebound = read_only.get("/runs", headers={"Host": "evil.example:8765"})
    assert rebound.status_code == 421
    assert HTML_NAME not in rebound.text
    for host in ("127.0.0.1:8765", "localhost:8765", "LOCALHOST", "[::1]:8765"):
        assert read_only.get("/runs", headers={"Host": host}).status_code == 200, host


def test_every_response_carries_the_security_headers(read_only: TestClient) -> None:
    for path in ("/runs", "/api/runs/1/series", "/static/ui.css", "/nowhere"):
        headers = read_only.get(path).headers
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY


# -- escaping ---------------------------------------------------------------------------------


def test_html_in_names_paths_errors_and_configs_is_shown_as_text(
    read_only: TestClient, store: Store
) -> None:
    pages = [
        "/runs",
        f"/runs/{store.html_run}",
        f"/compare?run={store.html_run}",
        "/models",
        f"/models/{store.old}",
        f"/models/{store.new}",
        "/jobs",
        f"/jobs/{store.pending_job}",
    ]
    for path in pages:
        page = read_only.get(path).text
        for raw in ("<script>", "<b>", "<i>", "<img", "<em>", "<u>"):
            assert raw not in page.replace('<script src="/static/', ""), (path, raw)
    runs = read_only.get("/runs").text
    assert "&lt;script&gt;alert(&#34;run&#34;)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in runs
    assert "&lt;img src=x onerror=alert(1)&gt;" in runs  # the store's folder, in the header
    payload = read_only.get(f"/api/runs/{store.html_run}/series").json()
    assert payload["charts"][0]["series"][0]["label"] == "<em>metric</em>"  # JSON, set as text


def test_passwords_in_store_urls_are_never_shown() -> None:
    assert (
        display_location("postgresql://ml:hunter2@db.internal:5432/treadle")
        == "postgresql://ml:***@db.internal:5432/treadle"
    )
    assert (
        display_location("postgresql://db/treadle?user=ml&password=hunter2&sslmode=require")
        == "postgresql://db/treadle?user=ml&password=***&sslmode=require"
    )
    assert display_location("/data/treadle.db") == "/data/treadle.db"
