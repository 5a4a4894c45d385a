"""Benchmark what owning a run costs: claiming and releasing its folder (``mkdir``, the lock,
``run.json``), the lock file's heartbeat, the experiment record's heartbeat, and the time from
Ctrl-C to exit of the main job.

Nothing of run ownership is on the per-step path: a claim is made once per run, and the two
heartbeats run on daemon threads every ``HEARTBEAT_SECONDS`` (30 s). So the cost per step is
``claim / steps per run + (beats per second x beat cost) / steps per second``; this prints
each part and that sum for the main job's measured step rate.

- claim, finish, release: ``claim_run_folder`` of a new folder, ``RunFolder.finish`` (the
  end of the run in ``run.json``) and ``RunFolder.release`` (median over ``--rounds``): what a
  run pays once. Two atomic writes of ``run.json``, so two file and two folder ``fsync``
  calls: on a busy disk those are the time. The system calls are counted with ``strace -f``
  when it is installed (counts do not depend on the machine's load; times do).
- lock heartbeat: one ``FolderLock.heartbeat`` (a ``utime``).
- experiment heartbeat: one ``ExperimentDB.heartbeat`` on SQLite (one ``UPDATE``).
- Ctrl-C to exit (``--sigint``): ``treadle train`` (the quick_prototype preset unless
  ``--set`` says otherwise) started, SIGINT sent after its first logged step; the time until
  its summary is printed (the rest of the optimizer step, the checkpoint, the run's teardown)
  and until the process is gone (the interpreter tearing torch down on top: compare the
  ``import torch._dynamo`` line).

    .venv/bin/python bench/run_ownership.py [--rounds 200] [--sigint 3]

Run it alone on the machine and compare the load average it prints before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from treadle.engine.checkpoints.lock import FolderLock
from treadle.engine.checkpoints.run_folder import claim_run_folder
from treadle.experiments import ExperimentDB
from treadle.owner import HEARTBEAT_SECONDS, current_owner
from treadle.run_setup import resolve_config


def _median_us(action: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def claim_cost(folder: Path, rounds: int) -> float:
    counter = iter(range(1 << 30))

    def claim() -> None:
        run = claim_run_folder(folder / f"run{next(counter)}", resume=False)
        run.finish("completed", {})
        run.release()

    claim()  # imports and first-use costs out of the way
    return _median_us(claim, rounds)


def claim_syscalls(folder: Path) -> dict[str, int] | None:
    """System calls of one claim, finish and release, by name, from ``strace`` (``None``
    without strace): the script makes one to warm up, then counts a second one."""
    if shutil.which("strace") is None:
        return None
    script = textwrap.dedent(
        f"""
        import os, sys
        from treadle.engine.checkpoints.run_folder import claim_run_folder
        def once(path):
            run = claim_run_folder(path, resume=False)
            run.finish("completed", {{}})
            run.release()
        once({str(folder / "warm")!r})
        os.write(2, b"MARK")
        once({str(folder / "counted")!r})
        os.write(2, b"MARK")
        """
    )
    trace = folder / "trace.txt"
    subprocess.run(
        ["strace", "-f", "-o", str(trace), sys.executable, "-c", script],
        capture_output=True,
        check=True,
    )
    lines = trace.read_text().splitlines()
    marks = [index for index, line in enumerate(lines) if 'write(2, "MARK"' in line]
    counts: dict[str, int] = {}
    for line in lines[marks[0] + 1 : marks[1]]:
        call = line.split(maxsplit=1)[-1].split("(", 1)[0]
        if call.isidentifier():
            counts[call] = counts.get(call, 0) + 1
    return counts


def heartbeat_costs(folder: Path, rounds: int) -> tuple[float, float]:
    target = folder / "beat"
    target.mkdir()
    lock = FolderLock.acquire(target, current_owner())
    assert lock is not None
    lock.write_owner()
    try:
        lock_us = _median_us(lock.heartbeat, rounds)
    finally:
        lock.release()
    with ExperimentDB(folder / "runs.db") as db:
        run_id = db.log_run("bench", {}, owner=current_owner())
        db_us = _median_us(lambda: db.heartbeat(run_id, 1), rounds)
    return lock_us, db_us


def step_rate(folder: Path, overrides: Sequence[str]) -> tuple[float, int]:
    """Optimizer steps per second of the main job and its steps per epoch, from the results
    of one epoch."""
    done = subprocess.run(
        [sys.executable, "-m", "treadle", "-q", "train", "--epochs", "1", "--no-register",
         "--json", "--set", f'checkpoint_dir="{folder / "rate"}"',
         "--set", "experiment_location=null", *overrides],
        capture_output=True, text=True, check=True, cwd=folder,
    )  # fmt: skip
    results = json.loads(done.stdout)
    steps = int(results["global_step"])
    return steps / float(results["history"][-1]["epoch_time"]), steps


def sigint_to_exit(folder: Path, overrides: Sequence[str], runs: int) -> list[tuple[float, float]]:
    """Seconds from SIGINT (after the first logged step) to the summary on stdout (the step
    finished, the checkpoint written, the run torn down) and to the process's exit (the
    interpreter's own teardown of torch on top)."""
    seconds = []
    for index in range(runs):
        run_dir = folder / f"sigint{index}"
        process = subprocess.Popen(
            [sys.executable, "-m", "treadle", "-q", "train", "--no-register",
             "--run-dir", str(run_dir), "--set", "log_every_n_steps=1",
             "--set", 'loggers=["jsonl"]', "--set", "experiment_location=null", *overrides],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=folder, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        metrics = run_dir / "metrics.jsonl"
        while not (metrics.exists() and metrics.stat().st_size > 0):
            if process.poll() is not None:
                msg = f"the run ended ({process.returncode}) before its first step"
                raise RuntimeError(msg)
            time.sleep(0.002)
        sent = time.perf_counter()
        process.send_signal(signal.SIGINT)
        assert process.stdout is not None
        process.stdout.readline()
        summary = time.perf_counter() - sent
        process.stdout.read()
        code = process.wait()
        seconds.append((summary, time.perf_counter() - sent))
        if code != 130:
            msg = f"expected exit 130 after Ctrl-C, got {code}"
            raise RuntimeError(msg)
    return seconds


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--sigint", type=int, default=3, help="Ctrl-C runs (0: none)")
    parser.add_argument("--set", action="append", default=[], help="treadle train --set")
    args = parser.parse_args(argv)
    overrides = [item for value in args.set for item in ("--set", value)]
    print(f"load before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="treadle-bench-runs-") as scratch:
        folder = Path(scratch)
        claim_us = claim_cost(folder / "claims", args.rounds)
        lock_us, db_us = heartbeat_costs(folder, args.rounds)
        print(f"claim, finish, release of a run folder: {claim_us:.0f} us (median, {args.rounds})")
        calls = claim_syscalls(folder)
        if calls is not None:
            top = ", ".join(f"{n} {name}" for name, n in sorted(calls.items(), key=lambda i: -i[1]))
            print(f"  their system calls: {sum(calls.values())} ({top})")
        print(f"lock heartbeat: {lock_us:.1f} us; experiment heartbeat (SQLite): {db_us:.0f} us")
        per_second = (lock_us + db_us) / HEARTBEAT_SECONDS
        print(f"heartbeats: {per_second:.2f} us of work per second of training")
        rate, steps_per_epoch = step_rate(folder, overrides)
        epochs = resolve_config(overrides=args.set).config.epochs
        steps_per_run = steps_per_epoch * epochs
        amortised = claim_us / steps_per_run + per_second / rate
        print(
            f"main job: {rate:.1f} optimizer steps/s, {steps_per_run} steps per run ({epochs} "
            f"epochs); per step, amortised: {amortised:.2f} us (budget 1000 us)"
        )
        if args.sigint:
            timings = sigint_to_exit(folder, overrides, args.sigint)
            for label, values in (
                ("Ctrl-C to the summary (saved, torn down)", [t[0] for t in timings]),
                ("Ctrl-C to exit", [t[1] for t in timings]),
            ):
                print(
                    f"{label}, main job: median {statistics.median(values):.2f} s "
                    f"(min {min(values):.2f}, max {max(values):.2f}, {len(values)} runs)"
                )
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import torch._dynamo"], check=True)
            whole = time.perf_counter() - started
            print(f"  for scale: python -c 'import torch._dynamo', start to exit: {whole:.2f} s")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
