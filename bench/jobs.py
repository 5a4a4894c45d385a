"""The job queue's speed on SQLite: enqueue, claim-and-complete with 1 and 4 processes (and
double claims: must be 0), and job start latency (claim to the job's code running in its
child process).

    .venv/bin/python bench/jobs.py [--jobs 4000] [--latency-jobs 40] [--cold-jobs 3] [--json]

1. Enqueue: ``SQLiteJobStore.enqueue`` (one transaction each) and ``JobManager.submit_job``
   (the same after validating type and config), in jobs per second.
2. Claim + complete: ``--jobs`` pending jobs; 1 and then 4 processes each loop
   ``claim`` -> ``complete`` until the queue is empty, all starting at one instant. Reports
   jobs per second (target with 4: >= 1,000) and the jobs claimed twice or never (must be 0).
3. Start latency: a real ``treadle worker`` with every plugin and the default fork-server
   preload runs ``--latency-jobs`` ``noop`` jobs; each reports the seconds from its claim to
   its ``run`` (target: median <= 150 ms). Then ``--cold-jobs`` with ``--cold`` (a fresh
   interpreter per job) for comparison. Worker start-up (fork server preloading torch) is
   reported on its own.

The machine may be shared and noisy: rerun before believing small differences.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

_CLAIMER = """
import json, sys, time
from treadle_sqlite.job_store import SQLiteJobStore
store = SQLiteJobStore(sys.argv[1])
worker, start = sys.argv[2], float(sys.argv[3])
while time.time() < start:
    time.sleep(0.0005)
done = []
while (claim := store.claim(worker, lease_seconds=60)) is not None:
    store.complete(claim, {})
    done.append(claim.job_id)
print(json.dumps({"done": done, "finished": time.time()}))
"""


_BARE = """
import json, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("PRAGMA journal_mode = WAL")
db.execute("PRAGMA synchronous = NORMAL")
worker, start = sys.argv[2], float(sys.argv[3])
while time.time() < start:
    time.sleep(0.0005)
done = []
while True:
    db.execute("BEGIN IMMEDIATE")
    row = db.execute(
        "UPDATE bare SET status = 'running', worker = ? WHERE id = (SELECT id FROM bare"
        " WHERE status = 'pending' ORDER BY priority DESC, id LIMIT 1) RETURNING id",
        (worker,),
    ).fetchone()
    db.execute("COMMIT")
    if row is None:
        break
    done.append(row[0])
print(json.dumps({"done": done, "finished": time.time()}))
"""


def _env(*, light: bool) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TREADLE_DISABLE_PLUGINS", None)
    if light:
        import importlib.metadata

        names = {entry.name for entry in importlib.metadata.entry_points(group="treadle")}
        env["TREADLE_DISABLE_PLUGINS"] = ",".join(sorted(names - {"sqlite", "jobs"}))
    return env


def bench_enqueue(folder: Path, count: int) -> dict[str, float]:
    from treadle.jobs.manager import JobManager
    from treadle_sqlite.job_store import SQLiteJobStore

    store = SQLiteJobStore(folder / "enqueue.db")
    started = time.perf_counter()
    for index in range(count):
        store.enqueue("noop", {"index": index}, priority=5, max_retries=3)
    store_rate = count / (time.perf_counter() - started)
    store.close()
    manager = JobManager(folder / "submit.db")
    manager.submit_job("noop", {})  # discovery and the registry fill, once
    started = time.perf_counter()
    for index in range(count):
        manager.submit_job("noop", {"index": index})
    manager_rate = count / (time.perf_counter() - started)
    manager.close()
    return {"store_enqueue_per_s": store_rate, "submit_job_per_s": manager_rate}


def _bare_table(location: Path, count: int) -> list[int]:
    import sqlite3

    db = sqlite3.connect(location, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE bare (id INTEGER PRIMARY KEY, status TEXT, priority INT, worker TEXT)")
    db.execute("CREATE INDEX bare_claim ON bare (priority DESC, id) WHERE status = 'pending'")
    db.executemany(
        "INSERT INTO bare (status, priority) VALUES ('pending', ?)",
        [(1 + index % 10,) for index in range(count)],
    )
    db.close()
    return list(range(1, count + 1))


def bench_claims(folder: Path, count: int, processes: int, *, bare: bool = False) -> dict[str, Any]:
    """``bare``: the baseline, a plain ``BEGIN IMMEDIATE`` claim loop on a one-table queue
    (no lease, no attempts, no complete): what this disk allows."""
    from treadle_sqlite.job_store import SQLiteJobStore

    location = folder / f"claims-{processes}{'-bare' if bare else ''}.db"
    if bare:
        ids = _bare_table(location, count)
    else:
        store = SQLiteJobStore(location)
        ids = [
            store.enqueue("noop", {}, priority=1 + index % 10, max_retries=0)
            for index in range(count)
        ]
        store.close()
    script = textwrap.dedent(_BARE if bare else _CLAIMER)
    start = time.time() + 1.0 + 0.2 * processes  # every process imported and waiting
    claimers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(location), f"p{n}", str(start)],
            stdout=subprocess.PIPE,
            text=True,
            env=_env(light=True),
        )
        for n in range(processes)
    ]
    claimed: Counter[int] = Counter()
    finished = start
    for claimer in claimers:
        out, _ = claimer.communicate(timeout=600)
        if claimer.returncode != 0:
            msg = f"claim process exited {claimer.returncode}"
            raise RuntimeError(msg)
        report = json.loads(out)
        claimed.update(report["done"])
        finished = max(finished, report["finished"])
    seconds = finished - start
    return {
        "loop": "bare BEGIN IMMEDIATE claim" if bare else "claim + complete",
        "processes": processes,
        "jobs": count,
        "seconds": seconds,
        "claim_complete_per_s": count / seconds,
        "double_claims": sum(1 for times in claimed.values() if times > 1),
        "never_claimed": len(set(ids) - set(claimed)),
    }


def bench_latency(folder: Path, count: int, *, cold: bool) -> dict[str, Any]:
    from treadle.jobs.manager import JobManager

    location = folder / f"latency-{'cold' if cold else 'warm'}.db"
    manager = JobManager(location)
    ids = [manager.submit_job("noop", {}) for _ in range(count)]
    command = [
        *(sys.executable, "-m", "treadle", "-q", "worker", "--json"),
        *("--location", str(location), "--worker-id", "bench", "--max-jobs", str(count)),
        *("--output-root", str(folder / "runs"), "--poll-seconds", "0.01"),
    ]
    if cold:
        command.append("--cold")
    started = time.perf_counter()
    worker = subprocess.run(command, capture_output=True, text=True, env=_env(light=False))
    total = time.perf_counter() - started
    if worker.returncode != 0:
        raise RuntimeError(worker.stderr[-3000:])
    jobs = [manager.get_job(job_id) for job_id in ids]
    latencies = sorted((job.result or {})["start_latency_seconds"] for job in jobs)
    from datetime import datetime

    first_claim = min(datetime.fromisoformat(job.attempts[0].started_at) for job in jobs)
    last_end = max(datetime.fromisoformat(job.completed_at or "") for job in jobs)
    busy = (last_end - first_claim).total_seconds()
    manager.close()
    return {
        "mode": "cold (spawn per job)" if cold else "warm (fork server)",
        "jobs": count,
        "median_ms": 1000 * statistics.median(latencies),
        "p90_ms": 1000 * latencies[int(0.9 * (len(latencies) - 1))],
        "max_ms": 1000 * latencies[-1],
        "worker_wall_s": total,
        "startup_s": total - busy,
        "jobs_per_s_after_startup": count / busy if busy > 0 else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--latency-jobs", type=int, default=40)
    parser.add_argument("--cold-jobs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="treadle-bench-jobs-") as tmp:
        folder = Path(tmp)
        os.environ.update(_env(light=True))  # this process needs only sqlite and jobs
        results["enqueue"] = bench_enqueue(folder, min(args.jobs, 2000))
        results["claims"] = [bench_claims(folder, args.jobs, n) for n in (1, 4)]
        results["claims"].append(bench_claims(folder, args.jobs, 4, bare=True))
        os.environ.pop("TREADLE_DISABLE_PLUGINS", None)
        results["latency"] = []
        if args.latency_jobs:
            results["latency"].append(bench_latency(folder, args.latency_jobs, cold=False))
        if args.cold_jobs:
            results["latency"].append(bench_latency(folder, args.cold_jobs, cold=True))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    enqueue = results["enqueue"]
    print(
        f"enqueue: {enqueue['store_enqueue_per_s']:,.0f}/s (store), "
        f"{enqueue['submit_job_per_s']:,.0f}/s (submit_job)"
    )
    for claims in results["claims"]:
        print(
            f"{claims['loop']}, {claims['processes']} process(es): "
            f"{claims['claim_complete_per_s']:,.0f}/s over {claims['jobs']} jobs; "
            f"double claims {claims['double_claims']}, never claimed {claims['never_claimed']}"
        )
    for latency in results["latency"]:
        print(
            f"start latency, {latency['mode']}: median {latency['median_ms']:.1f} ms, "
            f"p90 {latency['p90_ms']:.1f} ms, max {latency['max_ms']:.1f} ms over "
            f"{latency['jobs']} jobs; worker start-up {latency['startup_s']:.1f} s, then "
            f"{latency['jobs_per_s_after_startup']:.1f} jobs/s"
        )


if __name__ == "__main__":
    main()
