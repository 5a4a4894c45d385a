"""Shared by the job tests: a plugin of tiny job types, installed like a third party's, and
real worker processes (``python -m treadle worker``) that find it. No tests here.

Workers run with every plugin but ``sqlite`` and the test plugin disabled
(``TREADLE_DISABLE_PLUGINS``), so neither they nor their fork servers import torch: a worker
starts in well under a second instead of several.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

from tests.conftest import FakeDist
from treadle.jobs.manager import JobManager
from treadle.plugins import make_plugin_manager

ROOT = Path(__file__).resolve().parents[1]

#: Job types for the tests, each a few lines; they take their files from the job config.
JOB_TYPES_SOURCE = """
import os, signal, subprocess, time
from pathlib import Path
from treadle import hookimpl


def _mark(context, name):
    folder = Path(context.config["marks"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}-{context.job_id}-{context.attempt}").write_text(context.worker_id)


class Touch:
    def run(self, context):
        fd = os.open(context.config["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{context.job_id} {context.attempt} {context.worker_id}\\n".encode())
        os.close(fd)
        return {"job": context.job_id, "latency": time.time() - context.claimed_at}


class Sleep:
    def run(self, context):
        _mark(context, "started")
        time.sleep(context.config["seconds"])
        _mark(context, "done")
        (context.output_dir / "out.txt").write_text("done")
        return {"attempt": context.attempt, "worker": context.worker_id}


class Fail:
    def run(self, context):
        _mark(context, "started")
        print("about to fail")
        raise RuntimeError(f"boom on attempt {context.attempt}")


class Die:
    def run(self, context):
        os.kill(os.getpid(), signal.SIGKILL)


class Hang:
    def run(self, context):
        sleeper = subprocess.Popen(["sleep", "120"])
        Path(context.config["pid_file"]).write_text(f"{os.getpid()} {sleeper.pid}")
        time.sleep(120)


class BadResult:
    def run(self, context):
        return {"value": float("nan")}


class Picky:
    def validate_config(self, config):
        if "needed" not in config:
            raise ValueError("a picky job needs 'needed'")

    def run(self, context):
        return {}


@hookimpl
def treadle_register_job_types(register):
    for name, job_type in [("touch", Touch), ("sleep", Sleep), ("fail", Fail), ("die", Die),
                           ("hang", Hang), ("bad_result", BadResult), ("picky", Picky)]:
        register(name, job_type)
"""

#: plugins the test workers keep; every other installed one is disabled
KEPT_PLUGINS = ("cli", "sqlite", "jobtests")


def disabled_plugins() -> str:
    """Every installed treadle plugin but :data:`KEPT_PLUGINS`, comma-separated."""
    names = {entry.name for entry in importlib.metadata.entry_points(group="treadle")}
    return ",".join(sorted(names - set(KEPT_PLUGINS)))


@attrs.frozen
class JobsEnv:
    """A job store in ``tmp``, the test job types installed, and a way to start workers."""

    tmp: Path
    site: Path
    location: str

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(self.site), str(ROOT)]),
            "TREADLE_DISABLE_PLUGINS": disabled_plugins(),
        }

    def manager(self) -> JobManager:
        return JobManager(self.location, plugin_manager=make_plugin_manager())

    def start_worker(self, worker_id: str, *extra: str) -> subprocess.Popen[str]:
        """``treadle worker`` with a 1 s lease and quick retries; ``extra`` adds flags."""
        command = [
            *(sys.executable, "-m", "treadle", "-q", "worker", "--json"),
            *("--location", self.location, "--worker-id", worker_id),
            *("--lease-seconds", "1", "--heartbeat-seconds", "0.2", "--poll-seconds", "0.05"),
            *("--retry-backoff", "0.1", "--retry-backoff-cap", "0.3", "--kill-grace", "1"),
            *("--output-root", str(self.tmp / "runs")),
            *extra,
        ]
        return subprocess.Popen(
            command,
            env=self.env(),
            cwd=self.tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def config(self, **values: object) -> dict[str, object]:
        return {"marks": str(self.tmp / "marks"), **values}

    def wait_for(self, predicate: Callable[[], bool], seconds: float = 20.0) -> None:
        deadline = time.monotonic() + seconds
        while not predicate():
            if time.monotonic() > deadline:
                msg = f"timed out after {seconds} s waiting for {predicate}"
                raise AssertionError(msg)
            time.sleep(0.02)

    def marks(self, prefix: str) -> list[str]:
        folder = self.tmp / "marks"
        return sorted(p.name for p in folder.glob(f"{prefix}-*")) if folder.exists() else []


def make_jobs_env(
    tmp_path: Path, fake_plugin_dist: FakeDist, monkeypatch: pytest.MonkeyPatch
) -> JobsEnv:
    """Install the test job types (``jobtests``), enter ``tmp_path``, and keep this process's
    plugin managers as light as the workers' (only ``sqlite`` and ``jobtests``)."""
    site = fake_plugin_dist(
        "treadle-jobtests",
        "1.0",
        {"jobtests": "treadle_jobtests"},
        {"treadle_jobtests": JOB_TYPES_SOURCE},
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TREADLE_DISABLE_PLUGINS", disabled_plugins())
    return JobsEnv(tmp_path, site, str(tmp_path / "jobs.db"))


def finish(worker: subprocess.Popen[str], seconds: float = 30.0) -> str:
    """Wait for a worker to exit 0; returns its stdout."""
    try:
        out, err = worker.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        worker.kill()
        out, err = worker.communicate()
        msg = f"worker still running after {seconds} s: {err[-3000:]}"
        raise AssertionError(msg) from None
    assert worker.returncode == 0, f"worker exited {worker.returncode}: {err[-3000:]}"
    return out
