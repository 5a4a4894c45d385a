"""``treadle ui`` at scale: page times over 10,000 runs and 1,000,000 metric rows (SQLite), and
how long a logged metric takes to appear on a live curve.

    .venv/bin/python bench/ui.py [--db PATH] [--runs 10000] [--rows 1000000] [--repeats 15]
                                 [--poll-seconds 1.0] [--latency-samples 10]

1. Fill: ``--runs`` runs through the store protocol (the TrainingConfig of each as its config),
   all but one with ``--rows`` / ``--runs`` rows (10 epochs of train_loss, val_loss,
   learning_rate, gradient_norm, epoch_duration, plus train/batch_loss steps); the last run
   holds a long curve (100,000 steps of train/batch_loss) to show the downsampling. An
   existing ``--db`` filled with the same numbers is reused (filling takes minutes).
2. Pages: the server runs as ``treadle ui`` runs it (uvicorn, on loopback) and each page is
   fetched ``--repeats`` times over HTTP after one warm-up: median, min and max in ms. The
   runs table at page 1 and at page 100 (the protocol has no offset: page p reads the newest
   p x 50 runs), a name search (its first call builds the name index: timed separately), a run
   page and its curves' JSON, the long run's curves (downsampled to 2,000 points per curve).
3. Live latency: a running run's page open in headless Chromium (Debian's, through
   Playwright) polls every ``--poll-seconds``; rows are written through the store as the
   experiment logger writes them, and the time until the curve shows the new point is taken
   ``--latency-samples`` times. That is the UI's part: the experiment logger itself writes at
   each epoch's end and at most every 30 s (``flush_seconds``). Without Chromium, a poller
   that does what the page does (same endpoint, same interval) stands in, and says so.

Run it alone: ``uptime`` before and after is printed, and a loaded machine's figures mean little.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from treadle.config import TrainingConfig
from treadle.experiments import ExperimentDB
from treadle.storage import MetricValues

LONG_STEPS = 100_000
EPOCHS = 10
EPOCH_METRICS = ("train_loss", "val_loss", "learning_rate", "gradient_norm", "epoch_duration")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def _run_rows(run_index: int, rows: int, now: float) -> list[MetricValues]:
    """About ``rows`` rows: 10 epochs of the epoch metrics, the rest train/batch_loss steps."""
    steps_per_epoch = max(1, (rows - EPOCHS * len(EPOCH_METRICS)) // EPOCHS)
    values: list[MetricValues] = []
    for epoch in range(EPOCHS):
        for offset in range(steps_per_epoch):
            step = epoch * steps_per_epoch + offset + 1
            values.append(("train/batch_loss", 2.0 / (1 + step * 0.01), epoch, step, now))
        step = (epoch + 1) * steps_per_epoch
        loss = 1.0 / (epoch + 1) + run_index * 1e-6
        values.extend(
            [
                ("train_loss", loss, epoch, step, now),
                ("val_loss", loss * 1.1, epoch, step, now),
                ("learning_rate", 1e-3, epoch, step, now),
                ("gradient_norm", 0.5, epoch, step, now),
                ("epoch_duration", 12.5, epoch, step, now),
            ]
        )
    return values[:rows] if len(values) > rows else values


def fill(path: Path, runs: int, rows: int) -> int:
    """Fill ``path`` (or reuse it when it holds these numbers); returns the long run's id."""
    marker = path.with_suffix(".filled.json")
    wanted = {"runs": runs, "rows": rows, "long_steps": LONG_STEPS}
    if path.exists() and marker.exists() and json.loads(marker.read_text())["wanted"] == wanted:
        print(f"reusing {path} ({runs:,} runs, {rows:,} rows)")
        return int(json.loads(marker.read_text())["long_run"])
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    config = TrainingConfig().to_dict()
    started = time.perf_counter()
    per_run = (rows - LONG_STEPS) // (runs - 1)
    written = 0
    now = time.time()
    with ExperimentDB(path) as db:
        store = db.store
        for index in range(runs - 1):
            run_id = store.create_run(
                run_name=f"sweep-{index % 400:03d}-lr{index % 7}",
                config={**config, "learning_rate": 1e-3 * (1 + index % 7)},
                notes="",
                run_dir=None,
                status="completed" if index % 50 else "failed",
            )
            values = _run_rows(index, per_run, now)
            written += store.add_metrics(run_id, None, values)
            if index % 1000 == 999:
                print(
                    f"  {index + 1:,} runs, {written:,} rows, {time.perf_counter() - started:.0f} s"
                )
        long_run = store.create_run(
            run_name="long-run", config=config, notes="", run_dir=None, status="completed"
        )
        long_values: list[MetricValues] = [
            ("train/batch_loss", 2.0 / (1 + step * 1e-3), step // 10_000, step, now)
            for step in range(1, rows - written + 1)
        ]
        written += store.add_metrics(long_run, None, long_values)
    marker.write_text(json.dumps({"wanted": wanted, "long_run": long_run}))
    print(
        f"filled {path}: {runs:,} runs, {written:,} rows in {time.perf_counter() - started:.0f} s"
    )
    return long_run


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:
        body: bytes = response.read()
        if response.status != 200:
            msg = f"{url}: HTTP {response.status}"
            raise RuntimeError(msg)
    return body


def timed(function: Callable[[], Any], repeats: int) -> tuple[float, float, float]:
    """Median, min and max seconds of ``repeats`` calls, after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), min(times), max(times)


def report(label: str, figures: tuple[float, float, float]) -> None:
    median, low, high = (value * 1000 for value in figures)
    print(f"  {label:<46}{median:9.1f} ms   (min {low:.1f}, max {high:.1f})")


def bench_pages(address: str, long_run: int, repeats: int) -> None:
    small = long_run - 1  # the fill's last ordinary run (later runs: earlier latency probes)
    print(f"pages over HTTP, {repeats} requests each after one warm-up:")
    started = time.perf_counter()
    fetch(f"{address}/runs?name=sweep-007")
    print(
        f"  {'runs: first name search (builds the name index)':<46}"
        f"{(time.perf_counter() - started) * 1000:9.1f} ms   (once)"
    )
    for label, path in (
        ("runs: page 1", "/runs"),
        ("runs: page 100 (the newest 5,000 read)", "/runs?page=100"),
        ("runs: status failed, page 1", "/runs?status=failed"),
        ("runs: name search (indexed)", "/runs?name=sweep-007"),
        (f"run page (#{small}, {ARGS.rows // ARGS.runs} rows)", f"/runs/{small}"),
        (f"run curves JSON (#{small})", f"/api/runs/{small}/series"),
        (f"run page (#{long_run}, long run)", f"/runs/{long_run}"),
        (f"run curves JSON (#{long_run}, cached after 1st)", f"/api/runs/{long_run}/series"),
        (
            "compare 5 runs: curves JSON",
            f"/api/compare/series?run={small}&run={small - 1}"
            f"&run={small - 2}&run={small - 3}&run={small - 4}",
        ),
        ("models page", "/models"),
        ("jobs page", "/jobs"),
    ):
        report(label, timed(lambda path=path: fetch(address + path), repeats))


def bench_uncached_curves(db_path: Path, long_run: int, repeats: int) -> None:
    """Curves without the finished-run cache: what each poll of a live run costs (read every
    row of the run through the protocol, downsample), in process."""
    from treadle_ui.runs_view import SeriesCache, run_payload

    print("curves without the cache (each poll of a live run), in process:")
    with ExperimentDB(db_path) as db:
        small = db.get_run(long_run - 1)
        long = db.get_run(long_run)
        for label, run in (
            (f"a run of {ARGS.rows // ARGS.runs} rows", small),
            (f"the long run ({LONG_STEPS:,} rows)", long),
        ):

            def build(run: Any = run) -> None:
                run_payload(db, run, axis="step", max_points=2000, cache=SeriesCache(size=0))

            report(label, timed(build, repeats))


def chromium() -> str | None:
    found = os.environ.get("TREADLE_UI_CHROMIUM") or shutil.which("chromium")
    return found if found and Path(found).exists() else None


def bench_latency(address: str, db_path: Path, samples: int, poll_seconds: float) -> None:
    with ExperimentDB(db_path) as db:
        run_id = db.log_run("latency-probe")
        db.log_metrics(run_id, {"train/batch_loss": 1.0}, epoch=0, step=1)
        store = db.store
        executable = chromium()
        delays: list[float] = []
        if executable is not None:
            from playwright.sync_api import sync_playwright

            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=executable,
                    args=[
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-quic",
                        "--no-first-run",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                    ],
                )
                page = browser.new_page()
                page.goto(f"{address}/runs/{run_id}")
                selector = '.chart[data-chart="loss"] li[data-series="train/batch_loss"]'
                page.wait_for_selector(selector)
                for sample in range(samples):
                    time.sleep(
                        poll_seconds * (0.37 + 0.5 * (sample % 3))
                    )  # land anywhere in a poll
                    count = int(page.get_attribute(selector, "data-points") or 0)
                    store.add_metrics(
                        run_id, None, [("train/batch_loss", 0.5, 0, sample + 2, time.time())]
                    )
                    written = time.perf_counter()
                    page.wait_for_function(
                        "([s, n]) => +document.querySelector(s).dataset.points > n",
                        arg=[selector, count],
                        timeout=30_000,
                        polling="raf",
                    )
                    delays.append(time.perf_counter() - written)
                browser.close()
            how = "headless Chromium, the page's own polling"
        else:
            for sample in range(samples):
                time.sleep(poll_seconds * (0.37 + 0.5 * (sample % 3)))
                store.add_metrics(
                    run_id, None, [("train/batch_loss", 0.5, 0, sample + 2, time.time())]
                )
                written = time.perf_counter()
                # the page polls on a fixed interval: wait for the next tick, then fetch
                next_tick = poll_seconds - ((written - PAGE_START) % poll_seconds)
                time.sleep(next_tick)
                payload = json.loads(fetch(f"{address}/api/runs/{run_id}/series"))
                assert payload["rows"] >= sample + 2
                delays.append(time.perf_counter() - written)
            how = "no Chromium: a poller on the page's interval"
        db.update_run(run_id, status="completed")
    median = statistics.median(delays)
    print(
        f"logged row -> point on the live curve ({how}, polling every {poll_seconds:g} s, "
        f"{samples} samples):\n  median {median * 1000:.0f} ms (min {min(delays) * 1000:.0f}, "
        f"max {max(delays) * 1000:.0f}); the experiment logger adds its own flush interval "
        f"(each epoch's end, at most 30 s) before a row is in the store"
    )


PAGE_START = time.perf_counter()
ARGS = argparse.Namespace()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="the store to fill or reuse (default: a temp dir)")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    parser.add_argument("--latency-samples", type=int, default=10)
    parser.parse_args(namespace=ARGS)
    if ARGS.rows <= LONG_STEPS or ARGS.runs < 10:
        parser.error(f"--rows must exceed {LONG_STEPS:,} and --runs be at least 10")
    temporary = None
    if ARGS.db is None:
        temporary = tempfile.TemporaryDirectory(prefix="treadle-bench-ui-")
        ARGS.db = Path(temporary.name) / "treadle.db"
    print(f"before: {load()}")
    long_run = fill(ARGS.db, ARGS.runs, ARGS.rows)

    import uvicorn

    from treadle_ui.app import create_app
    from treadle_ui.server import address_of, bind
    from treadle_ui.settings import StoreLocations, UiSettings
    from treadle_ui.stores import StoreReader

    locations = StoreLocations.shared(str(ARGS.db))
    ui = create_app(
        UiSettings(locations=locations, poll_seconds=ARGS.poll_seconds), StoreReader(locations)
    )
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(ui.app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    address = address_of(sock).rstrip("/")
    try:
        bench_pages(address, long_run, ARGS.repeats)
        bench_uncached_curves(ARGS.db, long_run, max(3, ARGS.repeats // 3))
        bench_latency(address, ARGS.db, ARGS.latency_samples, ARGS.poll_seconds)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        ui.reader.close()
        if temporary is not None:
            temporary.cleanup()
    print(f"after: {load()}")
    print(f"python {sys.version.split()[0]}, SQLite store at {ARGS.db}")


if __name__ == "__main__":
    main()
