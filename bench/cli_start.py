"""How fast the command line starts: wall time of the everyday commands next to
``python -c "import torch"``, measured in one run, rounds interleaved.

    .venv/bin/python bench/cli_start.py [--rounds 11] [--json]

Each round runs, in fresh processes and in this order: ``python -c "import torch"``,
``treadle --help``, ``treadle plugins``, ``treadle runs list``, ``treadle registry list`` and
``treadle jobs list`` (the last three against a store in a temporary folder holding a run, a
registered model and a job, so each lists a row). One untimed round first warms the file
cache and writes the bytecode caches (``PYTHONDONTWRITEBYTECODE`` is not passed on: an
installed package has them). Reported per command: the median, min and max wall time over
the rounds, the median as a ratio of ``import torch``'s, whether the command imported torch
(checked once, separately), and whether the median meets the target of 0.25 s. The load
average before and after is printed with the figures: on a busy machine they mean little,
so run this alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_SECONDS = 0.25
TORCH = "import torch"

#: ``{store}`` is replaced by the store's path
COMMANDS: dict[str, list[str]] = {
    "treadle --help": ["--help"],
    "treadle plugins": ["plugins"],
    "treadle runs list": ["runs", "list", "--location", "{store}"],
    "treadle registry list": ["registry", "list", "--location", "{store}"],
    "treadle jobs list": ["jobs", "--location", "{store}", "list"],
}

_FILL_STORE = """
import sys
from treadle.experiments import ExperimentDB
from treadle.jobs.manager import JobManager
from treadle.model_registry import ModelRegistry
path = sys.argv[1]
with ExperimentDB(path) as db:
    run = db.log_run("bench", {"learning_rate": 0.1})
    db.log_metrics(run, {"val_loss": 0.5}, epoch=0, step=10)
with ModelRegistry(path) as registry:
    registry.register_model("gpt", "1.0.0", "a.pt", "language_modeling", {"val_loss": 0.4})
with JobManager(path) as jobs:
    jobs.submit_job("noop", {})
"""

_IMPORTS_TORCH = """
import sys
from treadle.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stderr.write("TORCH_IMPORTED=%s\\n" % ("torch" in sys.modules))
"""


def _environment() -> dict[str, str]:
    # the user's plugin settings would change what is measured; and an installed package has
    # its bytecode cached (pip compiles at install), so let the warm-up round write the caches
    # rather than compile every module on every start
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TREADLE_") and key != "PYTHONDONTWRITEBYTECODE"
    }


def _argv(name: str, store: str) -> list[str]:
    if name == TORCH:
        return [sys.executable, "-c", "import torch"]
    arguments = [part.format(store=store) for part in COMMANDS[name]]
    return [sys.executable, "-m", "treadle", *arguments]


def _time(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    completed = subprocess.run(argv, capture_output=True, env=env, check=False)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        msg = f"{' '.join(argv)} failed ({completed.returncode}): {completed.stderr.decode()}"
        raise SystemExit(msg)
    return elapsed


def _imports_torch(name: str, store: str, env: dict[str, str]) -> bool:
    arguments = [part.format(store=store) for part in COMMANDS[name]]
    completed = subprocess.run(
        [sys.executable, "-c", _IMPORTS_TORCH, *arguments],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    return "TORCH_IMPORTED=True" in completed.stderr


def measure(rounds: int) -> dict[str, Any]:
    """Time every command ``rounds`` times, interleaved, after one warm-up round."""
    env = _environment()
    with tempfile.TemporaryDirectory(prefix="treadle-cli-start-") as folder:
        store = str(Path(folder) / "treadle.db")
        subprocess.run(
            [sys.executable, "-c", _FILL_STORE, store], env=env, check=True, capture_output=True
        )
        names = [TORCH, *COMMANDS]
        load_before = os.getloadavg()
        for name in names:  # warm the file cache; not timed
            _time(_argv(name, store), env)
        timings: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(rounds):
            for name in names:
                timings[name].append(_time(_argv(name, store), env))
        load_after = os.getloadavg()
        torch_imported = {name: _imports_torch(name, store, env) for name in COMMANDS}
    baseline = statistics.median(timings[TORCH])
    results = {}
    for name in names:
        median = statistics.median(timings[name])
        results[name] = {
            "median_s": median,
            "min_s": min(timings[name]),
            "max_s": max(timings[name]),
            "ratio_to_import_torch": median / baseline,
            "imports_torch": True if name == TORCH else torch_imported[name],
            "meets_target": None if name == TORCH else median <= TARGET_SECONDS,
        }
    return {
        "rounds": rounds,
        "target_s": TARGET_SECONDS,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "python": sys.version.split()[0],
        "results": results,
    }


def _report(measured: dict[str, Any]) -> str:
    lines = [
        f"{measured['rounds']} rounds; target {measured['target_s']:.2f} s wall; load average "
        f"before {measured['load_average_before'][0]:.2f}, "
        f"after {measured['load_average_after'][0]:.2f}",
        "",
        f"{'command':<24} {'median s':>9} {'min s':>7} {'max s':>7} {'x torch':>8}  "
        f"{'torch?':<6} target",
    ]
    for name, row in measured["results"].items():
        target = "-" if row["meets_target"] is None else ("ok" if row["meets_target"] else "MISS")
        lines.append(
            f"{name:<24} {row['median_s']:>9.3f} {row['min_s']:>7.3f} {row['max_s']:>7.3f} "
            f"{row['ratio_to_import_torch']:>8.2f}  {'yes' if row['imports_torch'] else 'no':<6} "
            f"{target}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11, help="timed rounds (default: 11)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    measured = measure(args.rounds)
    print(json.dumps(measured, indent=2) if args.json else _report(measured))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
