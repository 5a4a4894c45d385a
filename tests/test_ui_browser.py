"""``treadle ui`` in a real headless Chromium (Debian's ``chromium``, driven by Playwright):
each page shows what a person needs, a curve has as many points as were logged, and a live
curve gains points while a training run logs in the background.

Screenshots of every page are saved under ``$TREADLE_UI_SCREENSHOTS`` when set, else in the
test's temporary folder. ``.ci/run`` installs Chromium where it is missing.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason='treadle ui needs the "ui" extra')
pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright")

from playwright import sync_api

from tests.test_ui_support import (
    HTML_NAME,
    SlowBatches,
    UiStore,
    build_ui_store,
    serve_in_thread,
    small_config,
    train,
)
from treadle.experiments import ExperimentDB
from treadle_ui.app import UiApp, create_app
from treadle_ui.settings import StoreLocations, UiSettings
from treadle_ui.stores import StoreReader

pytestmark = pytest.mark.slow

#: the flags that work on these machines (shared/ENVIRONMENT.md): no sandbox as root, no
#: GPU, and no background connections, which the closed network refuses
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LIVE_EPOCHS = 4
LIVE_BATCHES_PER_EPOCH = 8


def chromium_path() -> str:
    for candidate in (os.environ.get("TREADLE_UI_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip(
            "no Chromium: install Debian's chromium (apt-get install -y chromium, as .ci/run "
            "does) or set TREADLE_UI_CHROMIUM to a Chromium binary"
        )
    return found


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("TREADLE_UI_SCREENSHOTS")
    folder = Path(wanted) if wanted else tmp_path_factory.mktemp("ui-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def ui_store(tmp_path_factory: pytest.TempPathFactory) -> UiStore:
    return build_ui_store(tmp_path_factory.mktemp("ui-browser-store"))


@pytest.fixture(scope="module")
def served(ui_store: UiStore) -> Iterator[str]:
    locations = StoreLocations.shared(str(ui_store.location))
    ui: UiApp = create_app(
        UiSettings(locations=locations, poll_seconds=0.25, allow_actions=True),
        StoreReader(locations),
    )
    with serve_in_thread(ui.app) as address:
        yield address
    ui.reader.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page that fails the test on a script error, a console error (a CSP violation
    among them) or a dialog (an injected ``alert``)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    opened.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    opened.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
    yield opened
    context.close()
    assert problems == []


def shoot(page: Any, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_each_page_shows_what_a_person_needs(
    page: Any, served: str, ui_store: UiStore, screenshots: Path
) -> None:
    page.goto(f"{served}/runs")
    for name in ("blobs-baseline", "blobs-retrain", "blobs-broken", HTML_NAME):
        assert page.get_by_role("link", name=name, exact=True).is_visible(), name
    assert page.get_by_text("RuntimeError: power cut at step 5").is_visible()
    shoot(page, screenshots, "runs")

    page.goto(f"{served}/runs/{ui_store.baseline_run}")
    batch = page.locator('.chart[data-chart="loss"] li[data-series="train/batch_loss"]')
    batch.wait_for()
    assert batch.get_attribute("data-points") == str(ui_store.logged_steps)
    assert f"{ui_store.logged_steps} points" in batch.inner_text()
    assert page.locator('.chart[data-chart="loss"] canvas').count() == 1
    val = page.locator('.chart[data-chart="loss"] li[data-series="val_loss"]')
    assert val.get_attribute("data-points") == "2"
    assert page.locator("[data-live-status]").inner_text().startswith("44 rows")
    assert page.get_by_text("epoch_001.pt").is_visible()
    shoot(page, screenshots, "run")

    page.get_by_label("per epoch").check()
    page.locator('.chart[data-chart="loss"] li[data-series="train/batch_loss"]').filter(
        has_text="epoch means"
    ).wait_for()
    shoot(page, screenshots, "run-per-epoch")

    page.goto(f"{served}/runs/{ui_store.html_run}")
    assert page.locator("h1 .run-name").inner_text() == HTML_NAME
    assert page.get_by_text("critical").first.is_visible()
    shoot(page, screenshots, "run-html-name")

    page.goto(f"{served}/runs")
    for run_id in (ui_store.baseline_run, ui_store.retrain_run):
        page.get_by_label(f"compare run {run_id}").check()
    page.get_by_role("button", name="Overlay the selected runs").click()
    overlaid = page.locator('.chart[data-chart="metric:val_loss"] li[data-series]')
    overlaid.first.wait_for()
    assert overlaid.count() == 2
    shoot(page, screenshots, "compare")

    page.goto(f"{served}/models")
    edge = page.locator(
        f'svg.lineage path.edge[data-parent="{ui_store.parent_model}"]'
        f'[data-child="{ui_store.child_model}"]'
    )
    assert edge.count() == 1
    box = edge.bounding_box()
    assert box is not None
    assert box["width"] > 20
    assert page.get_by_text(f"trained by run #{ui_store.retrain_run}").is_visible()
    shoot(page, screenshots, "models")

    page.goto(f"{served}/models/{ui_store.parent_model}")
    assert page.get_by_text("64 samples, 2 features").is_visible()
    shoot(page, screenshots, "model")

    page.goto(f"{served}/jobs")
    error = "RuntimeError: CUDA out of memory while loading <weights> & friends"
    assert page.get_by_role("link", name=error).is_visible()
    assert page.get_by_text("nightly-retrain").is_visible()
    assert page.get_by_text("val_loss degraded by 50.0%").is_visible()
    shoot(page, screenshots, "jobs")

    page.get_by_role("link", name=error).click()
    assert page.locator("pre.error-block").first.is_visible()
    shoot(page, screenshots, "job")


def test_a_live_curve_gains_points_while_a_run_trains(
    page: Any, served: str, ui_store: UiStore, screenshots: Path, tmp_path: Path
) -> None:
    config = small_config(
        tmp_path / "live",
        experiment_location=str(ui_store.location),
        run_name="live-run",
        log_every_n_steps=1,
        epochs=LIVE_EPOCHS,
    )
    failures: list[BaseException] = []

    def training() -> None:
        try:
            train(config, SlowBatches(0.12))
        except BaseException as error:  # reported by the test below
            failures.append(error)

    worker = threading.Thread(target=training, daemon=True)
    worker.start()
    with ExperimentDB(ui_store.location) as db:
        deadline = time.monotonic() + 60
        while not db.find_runs(name="live-run"):
            assert time.monotonic() < deadline, "the live run never appeared in the store"
            time.sleep(0.05)
        (run,) = db.find_runs(name="live-run")
    page.goto(f"{served}/runs/{run.run_id}")
    assert page.locator("[data-run-status]").inner_text() == "running"
    points = page.locator('.chart[data-chart="loss"] li[data-series="train/batch_loss"]')
    points.wait_for(timeout=30_000)
    first = int(points.get_attribute("data-points"))
    assert 0 < first < LIVE_EPOCHS * LIVE_BATCHES_PER_EPOCH
    shoot(page, screenshots, "run-live")
    page.wait_for_function(
        "([selector, count]) => +document.querySelector(selector).dataset.points > count",
        arg=['.chart[data-chart="loss"] li[data-series="train/batch_loss"]', first],
        timeout=30_000,
    )
    # without a reload: the status turns completed and the curve holds every step
    page.wait_for_function(
        "() => document.querySelector('[data-run-status]').textContent === 'completed'",
        timeout=30_000,
    )
    worker.join(timeout=30)
    assert failures == []
    page.wait_for_function(
        "([selector, count]) => +document.querySelector(selector).dataset.points === count",
        arg=[
            '.chart[data-chart="loss"] li[data-series="train/batch_loss"]',
            LIVE_EPOCHS * LIVE_BATCHES_PER_EPOCH,
        ],
        timeout=10_000,
    )
    assert "Live" not in page.locator("[data-live-status]").inner_text()
    # the server-rendered parts followed: epochs, best loss, checkpoints, alerts
    page.wait_for_function(
        "(epochs) => document.querySelector('[data-fact=epochs]').textContent === epochs",
        arg=str(LIVE_EPOCHS),
        timeout=10_000,
    )
    with ExperimentDB(ui_store.location) as db:
        best = min(row.value for row in db.metric_rows([run.run_id], names=["val_loss"]))
    assert page.locator("[data-fact=best_val_loss]").inner_text() == f"{best:.4g}"
    assert page.locator("tr[data-checkpoint]").count() >= 1
    assert page.get_by_text("No alerts").is_visible()
    shoot(page, screenshots, "run-live-finished")
