"""The job queue's claim-and-complete rate on PostgreSQL next to SQLite, with 1, 4 and 16
worker processes (and double claims: must be 0).

    .venv/bin/python bench/postgres.py [--jobs 4000] [--processes 1 4 16] [--url URL] [--json]

Each run fills a fresh queue with ``--jobs`` pending jobs (priorities 1-10), then starts the
processes, which import, connect, and on one signal all loop ``claim`` -> ``complete`` until
the queue is empty. Reported: jobs per second from the start to the last process's end, and the jobs
claimed twice or never.

Stores compared:

* SQLite, one file (WAL, ``synchronous=NORMAL``: a commit is not flushed to disk);
* PostgreSQL with ``synchronous_commit=off`` (a commit is not flushed either: the same promise
  as SQLite's, a crash of the machine may lose the last commits, never corrupts);
* PostgreSQL with ``synchronous_commit=on`` (every commit flushed: the durable default).

The PostgreSQL servers are throwaway ones (``initdb`` in a temp folder, fsync on), started
and stopped here as the tests do; ``--url`` benchmarks an existing database instead (a fresh
schema in it, dropped afterwards). Server and workers share this machine's cores, so 16
processes measure contention more than scale; on a real deployment the workers sit on other
machines. The machine may be shared and noisy: rerun before believing small differences.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# each process says "ready" once imported and connected, and starts on the parent's "go"
_CLAIMER = """
import json, sys, time
location, worker = sys.argv[1], sys.argv[2]
if location.startswith("postgresql://"):
    from treadle_postgres.job_store import PostgresJobStore as Store
else:
    from treadle_sqlite.job_store import SQLiteJobStore as Store
store = Store(location)
print("ready", flush=True)
sys.stdin.readline()
done = []
while (claim := store.claim(worker, lease_seconds=60)) is not None:
    store.complete(claim, {})
    done.append(claim.job_id)
print(json.dumps({"done": done, "finished": time.time()}))
"""

SERVER_SETTINGS = {
    "postgresql, synchronous_commit=off": "-c synchronous_commit=off",
    "postgresql, synchronous_commit=on": "-c synchronous_commit=on",
}


def _env() -> dict[str, str]:
    import importlib.metadata

    names = {entry.name for entry in importlib.metadata.entry_points(group="treadle")}
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TREADLE_DISABLE_PLUGINS": ",".join(sorted(names - {"sqlite", "postgres"})),
    }


def _fill(location: str, count: int) -> list[int]:
    if location.startswith("postgresql://"):
        from treadle_postgres.job_store import PostgresJobStore

        store: Any = PostgresJobStore(location)
    else:
        from treadle_sqlite.job_store import SQLiteJobStore

        store = SQLiteJobStore(location)
    try:
        return [
            store.enqueue("noop", {}, priority=1 + index % 10, max_retries=0)
            for index in range(count)
        ]
    finally:
        store.close()


def bench_claims(store: str, location: str, count: int, processes: int) -> dict[str, Any]:
    """``processes`` claim-and-complete loops over ``count`` jobs at ``location``."""
    ids = _fill(location, count)
    script = textwrap.dedent(_CLAIMER)
    claimers = [
        subprocess.Popen(
            [sys.executable, "-c", script, location, f"p{n}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for n in range(processes)
    ]
    for claimer in claimers:  # every process imported and connected
        assert claimer.stdout is not None
        if claimer.stdout.readline() != "ready\n":
            msg = f"claim process failed to start: {claimer.communicate()[1][-2000:]}"
            raise RuntimeError(msg)
    start = time.time()
    for claimer in claimers:
        assert claimer.stdin is not None
        claimer.stdin.write("go\n")
        claimer.stdin.flush()
    claimed: Counter[int] = Counter()
    finished = start
    for claimer in claimers:
        out, err = claimer.communicate(timeout=900)
        if claimer.returncode != 0:
            msg = f"claim process exited {claimer.returncode}: {err[-2000:]}"
            raise RuntimeError(msg)
        report = json.loads(out)
        claimed.update(report["done"])
        finished = max(finished, report["finished"])
    seconds = finished - start
    return {
        "store": store,
        "processes": processes,
        "jobs": count,
        "seconds": seconds,
        "claim_complete_per_s": count / seconds,
        "double_claims": sum(1 for times in claimed.values() if times > 1),
        "never_claimed": len(set(ids) - set(claimed)),
    }


def _schema_url(database_url: str) -> tuple[str, Callable[[], None]]:
    """A fresh schema in an existing database, and how to drop it."""
    import psycopg

    name = f"treadle_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{name}"')  # a generated name: no user text

    def drop() -> None:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{name}" CASCADE')

    separator = "&" if "?" in database_url else "?"
    return f"{database_url}{separator}options=-csearch_path%3D{name}", drop


def run(jobs: int, processes: list[int], url: str | None) -> list[dict[str, Any]]:
    sys.path.insert(0, str(ROOT))
    from tests.postgres_fixtures import skip_reason, start_server, stop_server

    results = []
    with tempfile.TemporaryDirectory(prefix="treadle-bench-pg-") as tmp:
        for count in processes:
            location = str(Path(tmp) / f"claims-{count}.db")
            results.append(bench_claims("sqlite (WAL, synchronous=NORMAL)", location, jobs, count))
    if url is not None:
        for count in processes:
            location, drop = _schema_url(url)
            try:
                results.append(bench_claims("postgresql (--url)", location, jobs, count))
            finally:
                drop()
        return results
    reason = skip_reason()
    if reason is not None:
        print(f"PostgreSQL skipped: {reason}", file=sys.stderr)
        return results
    for store, settings in SERVER_SETTINGS.items():
        server = start_server(settings)
        try:
            for count in processes:
                location = server.create_database()
                results.append(bench_claims(store, location, jobs, count))
        finally:
            stop_server(server)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--url", help="an existing PostgreSQL database to use instead")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    results = run(args.jobs, args.processes, args.url)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for result in results:
        print(
            f"{result['store']}, {result['processes']:>2} process(es): "
            f"{result['claim_complete_per_s']:>7,.0f} jobs/s over {result['jobs']} jobs; "
            f"double claims {result['double_claims']}, never claimed {result['never_claimed']}"
        )


if __name__ == "__main__":
    main()
