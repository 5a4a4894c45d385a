"""The first code a job's child process runs: its own process group, a watch on its worker,
its output to the attempt's log file, then the job type's ``run``."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from treadle.jobs.context import JobContext

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["LOG_NAME", "SYS_PATH_ENV", "ChildRequest", "child_is_ready", "run_job_in_child"]

#: the file in an attempt's folder that receives the job's stdout, stderr and log records
LOG_NAME = "job.log"

#: carries the worker's ``sys.path`` (JSON) to its fork server, which adopts it before it
#: preloads: CPython 3.11's fork server ignores the ``sys_path`` it is given
SYS_PATH_ENV = "TREADLE_JOBS_SYS_PATH"


@attrs.frozen(kw_only=True)
class ChildRequest:
    """What the worker sends its child: the claimed attempt and where to write."""

    job_id: int
    job_type: str
    attempt: int
    worker_id: str
    config: dict[str, Any]
    output_dir: str
    store_location: str
    claimed_at: float
    job_uid: str = ""


def child_is_ready() -> None:
    """A child that does nothing: started once by a worker to know its fork server is up."""


def _stop_when_owner_dies(owner_watch: Connection) -> None:
    # The worker never writes here: EOF means it died (even by SIGKILL). The job and all it
    # started must stop then, or it would run unowned while another worker retries it.
    try:
        owner_watch.poll(None)
    finally:
        os.killpg(0, signal.SIGKILL)


def _log_to(path: Path) -> None:
    """Point stdout, stderr (the file descriptors, so subprocesses follow) and the root
    logger at ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(descriptor)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def _run(request: ChildRequest, output_dir: Path) -> dict[str, Any]:
    from treadle.plugins import get_plugin_manager

    plugin_manager = get_plugin_manager()
    job_type = plugin_manager.registry("job_types").create(request.job_type)
    context = JobContext(
        job_id=request.job_id,
        job_type=request.job_type,
        attempt=request.attempt,
        worker_id=request.worker_id,
        config=request.config,
        output_dir=output_dir,
        store_location=request.store_location,
        claimed_at=request.claimed_at,
        plugin_manager=plugin_manager,
        job_uid=request.job_uid,
    )
    return dict(job_type.run(context))


def _fail(result_sender: Connection, text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
    result_sender.send(("failed", text))


def run_job_in_child(
    request: ChildRequest, result_sender: Connection, owner_watch: Connection
) -> None:
    """Run one attempt and send ``("completed", result)`` or ``("failed", traceback)``.

    The child leads a new session, so its worker stops it and everything it started with one
    ``killpg``. Its output goes to ``job.log`` in the attempt's folder.
    """
    os.setsid()
    threading.Thread(
        target=_stop_when_owner_dies, args=(owner_watch,), name="treadle-owner-watch", daemon=True
    ).start()
    output_dir = Path(request.output_dir)
    try:
        _log_to(output_dir / LOG_NAME)
        result = _run(request, output_dir)
    except BaseException:  # SystemExit too: the job failed, not the child
        _fail(result_sender, traceback.format_exc())
        return
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as err:
        text = (
            f"job type {request.job_type!r} returned a result that is not JSON data (numbers, "
            f"strings, lists, dicts; no NaN): {err}"
        )
        _fail(result_sender, text)
        return
    result_sender.send(("completed", result))
