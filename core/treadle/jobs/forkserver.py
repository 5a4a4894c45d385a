"""Starting job children: forked from a warm fork server that already holds torch and the
plugins (milliseconds), or spawned fresh where the platform has no fork server (seconds)."""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.forkserver
import os
import sys
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess

import attrs

from treadle.jobs.child import SYS_PATH_ENV, ChildRequest, child_is_ready, run_job_in_child

__all__ = ["DEFAULT_PRELOAD", "ChildLauncher", "RunningChild"]

#: imported by the fork server at its start; see :mod:`treadle.jobs.warm`
DEFAULT_PRELOAD: tuple[str, ...] = ("treadle.jobs.warm",)


@attrs.frozen
class RunningChild:
    """A started job child.

    :ivar results: where the child's ``("completed", result)`` or ``("failed", traceback)``
        arrives.
    :ivar owner_alive: held open by the worker while it lives; the child stops itself and its
        process group when this closes (the worker was killed).
    """

    process: BaseProcess
    results: Connection
    owner_alive: Connection

    def close(self) -> None:
        self.results.close()
        self.owner_alive.close()


@contextmanager
def _launching() -> Iterator[None]:
    """What a child start (and a fork server start within it) should see of this process.

    * ``__main__`` is hidden: multiprocessing makes each forkserver or spawn child import the
      parent's main script again (the stdlib's ``'__main__'`` preload does not work on CPython
      3.11: it looks for a key ``get_preparation_data`` never writes). A job child needs
      nothing from it, as its target lives in :mod:`treadle.jobs.child`; hidden, a worker run
      from a script (or pytest) neither pays the script's imports per job nor re-runs its
      unguarded top-level code.
    * ``sys.path`` travels in :data:`~treadle.jobs.child.SYS_PATH_ENV`, so that a fork server
      started now finds the plugins this process finds (3.11's ignores the path it is given).
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    os.environ[SYS_PATH_ENV] = json.dumps(sys.path)
    try:
        yield
    finally:
        os.environ.pop(SYS_PATH_ENV, None)
        if main is not None:
            sys.modules["__main__"] = main


class ChildLauncher:
    """Starts job children for one worker process.

    The fork server is one per process (``multiprocessing`` keeps it), started from a clean
    interpreter that never opened the job store: a child forked from the worker itself would
    inherit its SQLite connection, which SQLite forbids across ``fork``.

    :param warm: fork children from a fork server (where the platform offers one); ``False``
        spawns a fresh interpreter per job.
    :param preload: modules the fork server imports once, before it forks any child; the
        default imports every plugin and what the registered job types list in ``preload``
        (torch and the engine for the built-in ones).
    """

    def __init__(self, *, warm: bool = True, preload: Sequence[str] = DEFAULT_PRELOAD) -> None:
        self.is_warm = warm and "forkserver" in multiprocessing.get_all_start_methods()
        self.preload = tuple(preload)
        self._context: ForkServerContext | SpawnContext
        if self.is_warm:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(list(self.preload))
            self._context = context
        else:
            self._context = multiprocessing.get_context("spawn")

    def warm_up(self) -> None:
        """Start the fork server and wait until it has imported the preload modules (seconds
        with torch), so that no claimed job waits for it while its lease runs."""
        if not self.is_warm:
            return
        probe = self._context.Process(target=child_is_ready, name="treadle-fork-server-probe")
        with _launching():
            multiprocessing.forkserver.ensure_running()
            probe.start()
        probe.join()

    def start(self, request: ChildRequest) -> RunningChild:
        """Start a child running ``request``.

        :raises OSError: the child could not be started (no fork server, no memory, ...).
        """
        results, result_sender = self._context.Pipe(duplex=False)
        owner_watch, owner_alive = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=run_job_in_child,
            args=(request, result_sender, owner_watch),
            name=f"treadle-job-{request.job_id}-attempt-{request.attempt}",
        )
        try:
            with _launching():
                process.start()
        except BaseException:
            for connection in (results, result_sender, owner_watch, owner_alive):
                connection.close()
            raise
        result_sender.close()
        owner_watch.close()
        return RunningChild(process, results, owner_alive)
