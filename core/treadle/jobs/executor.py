"""JobExecutor: a worker that claims jobs and runs each in a child process under a lease.

A worker claims a job (the store sets running, worker, attempt + 1 and a lease deadline in one
statement), starts a child forked from its warm fork server, and renews the lease while the
child runs. A timeout, a cancel or a lost lease stops the child's whole process group. A failed
attempt goes back to the queue after an exponential backoff, capped, until ``max_retries`` are
spent. SIGTERM (or Ctrl-C) makes the worker stop claiming, give the running job a grace period,
hand it back to the queue if it is still running, and return; a second signal hands it back at
once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

import attrs

from treadle.errors import ConfigError, TreadleError
from treadle.jobs.child import ChildRequest
from treadle.jobs.forkserver import DEFAULT_PRELOAD, ChildLauncher, RunningChild
from treadle.jobs.manager import job_timeout_seconds

if TYPE_CHECKING:
    from treadle.jobs.manager import JobManager
    from treadle.jobs.records import Claim

__all__ = ["AttemptResult", "JobExecutor", "WorkerReport"]

logger = logging.getLogger(__name__)

#: How one attempt ended, as the worker saw it: ``retrying`` failed with retries left;
#: ``lost`` means another worker owns the job now, so nothing was recorded.
AttemptResult = Literal["completed", "failed", "retrying", "cancelled", "handed_back", "lost"]

#: the longest a worker waits between two looks at its child (stop requests, heartbeats)
_TICK_SECONDS = 0.25
#: claims failing in a row (a store that stays unreachable) before the worker gives up
_MAX_CLAIM_FAILURES = 10


@attrs.define
class WorkerReport:
    """What one ``run_worker`` call did: attempts by how they ended, and why it returned."""

    completed: int = 0
    failed: int = 0
    retrying: int = 0
    cancelled: int = 0
    handed_back: int = 0
    lost: int = 0
    stop_reason: str = ""

    @property
    def attempts(self) -> int:
        return (
            self.completed
            + self.failed
            + self.retrying
            + self.cancelled
            + self.handed_back
            + self.lost
        )

    def count(self, result: AttemptResult) -> None:
        setattr(self, result, getattr(self, result) + 1)

    def to_dict(self) -> dict[str, int | str]:
        """Counts and stop reason, JSON-ready."""
        return attrs.asdict(self)


def _check_seconds(name: str, value: float, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        msg = f"{name} must be a finite number of seconds: {value!r}"
        raise ConfigError(msg)
    if value < 0 or (positive and value == 0):
        msg = f"{name} must be {'> 0' if positive else '>= 0'}: {value}"
        raise ConfigError(msg)
    return float(value)


class JobExecutor:
    """A worker of the queue in ``manager``'s store.

    :param manager: the queue.
    :param worker_id: this worker's name, unique among running workers (it is recorded on
        every attempt).
    :param lease_seconds: how long a claim holds without a heartbeat; after that any worker
        may reclaim the job.
    :param heartbeat_seconds: how often the lease is renewed (default: a quarter of the lease).
    :param poll_seconds: how long to wait between claims when the queue is empty.
    :param retry_backoff_seconds: the wait before the first retry; it doubles per failure.
    :param retry_backoff_cap_seconds: the longest wait before a retry.
    :param shutdown_grace_seconds: after SIGTERM, how long the running job may still take
        before it is stopped and handed back.
    :param kill_grace_seconds: between SIGTERM and SIGKILL when a job is stopped.
    :param output_root: where attempt folders ``job-<id>-attempt-<n>`` are made.
    :param warm: fork children from a warm fork server; ``False`` spawns a fresh
        interpreter per job (seconds per job with torch).
    :param preload: modules the fork server imports once (default: every plugin and what the
        job types list in their ``preload``).
    :raises ConfigError: a bad worker id or time setting, named.
    """

    def __init__(
        self,
        manager: JobManager,
        worker_id: str,
        *,
        lease_seconds: float = 60.0,
        heartbeat_seconds: float | None = None,
        poll_seconds: float = 1.0,
        retry_backoff_seconds: float = 30.0,
        retry_backoff_cap_seconds: float = 3600.0,
        shutdown_grace_seconds: float = 30.0,
        kill_grace_seconds: float = 10.0,
        output_root: str | Path = "runs",
        warm: bool = True,
        preload: Sequence[str] = DEFAULT_PRELOAD,
    ) -> None:
        if not isinstance(worker_id, str) or not worker_id.strip():
            msg = f"worker_id must be a non-empty string: {worker_id!r}"
            raise ConfigError(msg)
        self.manager = manager
        self.worker_id = worker_id
        self.lease_seconds = _check_seconds("lease_seconds", lease_seconds, positive=True)
        self.heartbeat_seconds = (
            lease_seconds / 4
            if heartbeat_seconds is None
            else _check_seconds("heartbeat_seconds", heartbeat_seconds, positive=True)
        )
        if self.heartbeat_seconds >= self.lease_seconds:
            msg = (
                f"heartbeat_seconds ({self.heartbeat_seconds:g}) must be shorter than "
                f"lease_seconds ({self.lease_seconds:g}), or every lease lapses"
            )
            raise ConfigError(msg)
        self.poll_seconds = _check_seconds("poll_seconds", poll_seconds)
        self.retry_backoff_seconds = _check_seconds("retry_backoff_seconds", retry_backoff_seconds)
        self.retry_backoff_cap_seconds = _check_seconds(
            "retry_backoff_cap_seconds", retry_backoff_cap_seconds
        )
        self.shutdown_grace_seconds = _check_seconds(
            "shutdown_grace_seconds", shutdown_grace_seconds
        )
        self.kill_grace_seconds = _check_seconds("kill_grace_seconds", kill_grace_seconds)
        self.output_root = Path(output_root).resolve()
        self.launcher = ChildLauncher(warm=warm, preload=preload)
        self._stop_requested_at: float | None = None
        self._stop_reason = ""
        self._claim_failures = 0

    # -- control -------------------------------------------------------------------------

    def stop(self, reason: str = "stop requested") -> None:
        """Stop claiming; the running job gets ``shutdown_grace_seconds`` to finish, then is
        handed back. A second call hands it back at once. Safe in a signal handler.

        :param reason: what the report's ``stop_reason`` says.
        """
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()
            self._stop_reason = reason
        else:
            self._stop_requested_at = -math.inf

    @property
    def is_stopping(self) -> bool:
        return self._stop_requested_at is not None

    def retry_delay(self, failures_before: int) -> float:
        """Seconds before the retry that follows the failure of an attempt that had
        ``failures_before`` failed attempts before it: doubling from the base, capped."""
        exponent = min(failures_before, 62)
        return float(min(self.retry_backoff_seconds * 2**exponent, self.retry_backoff_cap_seconds))

    # -- the loop ------------------------------------------------------------------------

    def run_worker(
        self,
        max_jobs: int | None = None,
        timeout_minutes: float = 60.0,
        *,
        idle_exit_seconds: float | None = None,
    ) -> WorkerReport:
        """Claim and run jobs until ``max_jobs`` attempts ran, SIGTERM or SIGINT (or
        :meth:`stop`) arrives, or the queue stayed empty for ``idle_exit_seconds``.

        :param max_jobs: attempts to run before returning; ``None`` runs until stopped.
        :param timeout_minutes: the time limit of each job, unless its config sets a lower
            ``timeout_minutes``.
        :param idle_exit_seconds: return once nothing could be claimed for this long
            (``None``: wait for work for ever).
        :returns: how the attempts ended and why the worker returned.
        :raises ConfigError: a bad argument, named.
        """
        if max_jobs is not None and (
            isinstance(max_jobs, bool) or not isinstance(max_jobs, int) or max_jobs < 0
        ):
            msg = f"max_jobs must be an integer >= 0, or None for no limit: {max_jobs!r}"
            raise ConfigError(msg)
        timeout_seconds = 60.0 * _check_seconds("timeout_minutes", timeout_minutes, positive=True)
        if idle_exit_seconds is not None:
            _check_seconds("idle_exit_seconds", idle_exit_seconds)
        report = WorkerReport()
        restore = self._install_signal_handlers()
        try:
            self.launcher.warm_up()
            logger.info("worker %s started (pid %d)", self.worker_id, os.getpid())
            idle_since = time.monotonic()
            while True:
                if self.is_stopping:
                    report.stop_reason = self._stop_reason
                    break
                if max_jobs is not None and report.attempts >= max_jobs:
                    report.stop_reason = f"max_jobs ({max_jobs}) reached"
                    break
                claim = self._claim()
                if claim is None:
                    idle = time.monotonic() - idle_since
                    if idle_exit_seconds is not None and idle >= idle_exit_seconds:
                        report.stop_reason = f"idle for {idle_exit_seconds:g} s"
                        break
                    self._sleep(self.poll_seconds)
                    continue
                report.count(self.run_claim(claim, timeout_seconds))
                idle_since = time.monotonic()
        finally:
            restore()
        logger.info("worker %s stopped: %s", self.worker_id, report.stop_reason)
        return report

    def _claim(self) -> Claim | None:
        """The next job, or ``None``; a store error (busy, briefly unreachable) is logged and
        retried at the next poll, and raised once it has failed this many times in a row."""
        try:
            claim = self.manager.store.claim(self.worker_id, lease_seconds=self.lease_seconds)
        except Exception as err:  # the backend's own error types: sqlite3, psycopg, OSError
            self._claim_failures += 1
            if self._claim_failures >= _MAX_CLAIM_FAILURES:
                err.add_note(
                    f"worker {self.worker_id}: {self._claim_failures} claims failed in a row"
                )
                raise
            logger.warning(
                "worker %s could not claim (%s: %s); retrying",
                self.worker_id,
                type(err).__name__,
                err,
            )
            return None
        self._claim_failures = 0
        return claim

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            logger.info("worker %s got %s: no more claims", self.worker_id, name)
            self.stop(name)

        for number in previous:
            signal.signal(number, on_signal)

        def restore() -> None:
            for number, handler in previous.items():
                signal.signal(number, handler)

        return restore

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.is_stopping and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))

    # -- one attempt ---------------------------------------------------------------------

    def run_claim(self, claim: Claim, default_timeout_seconds: float) -> AttemptResult:
        """Run one claimed attempt to its end and record how it ended (conditioned on the
        claim, so nothing is written once another worker owns the job).

        :param default_timeout_seconds: the attempt's time limit unless the job's config sets
            a lower ``timeout_minutes``.
        """
        timeout = default_timeout_seconds
        try:
            own_timeout = claim.timeout_seconds or job_timeout_seconds(claim.config)
        except ConfigError as err:
            return self._record_failure(claim, str(err), "failed")
        if own_timeout is not None:
            timeout = min(timeout, own_timeout)
        output_dir = self.output_root / f"job-{claim.job_id}-attempt-{claim.attempt}"
        logger.info(
            "job %d (%s) attempt %d started by %s",
            claim.job_id,
            claim.job_type,
            claim.attempt,
            self.worker_id,
        )
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            child = self.launcher.start(
                ChildRequest(
                    job_id=claim.job_id,
                    job_type=claim.job_type,
                    attempt=claim.attempt,
                    worker_id=self.worker_id,
                    config=dict(claim.config),
                    output_dir=str(output_dir),
                    store_location=self.manager.location,
                    claimed_at=time.time(),
                    job_uid=claim.job_uid,
                )
            )
        except OSError as err:
            error = f"its child process could not be started in {output_dir}: {err}"
            return self._record_failure(claim, error, "died")
        try:
            return self._watch(claim, child, timeout)
        finally:
            # whatever the job started and left behind in its process group goes too
            self._kill_group(child, signal.SIGKILL)
            child.process.join(self.kill_grace_seconds)
            child.close()

    def _heartbeat(self, claim: Claim) -> str:
        try:
            return self.manager.store.heartbeat(claim, lease_seconds=self.lease_seconds)
        except (TreadleError, OSError) as err:
            # a busy or briefly unreachable store: the lease may lapse, then another worker
            # takes the job over and this one learns it at the next heartbeat
            logger.warning("job %d: lease not renewed (%s); retrying", claim.job_id, err)
            return "ok"

    def _watch(self, claim: Claim, child: RunningChild, timeout: float) -> AttemptResult:
        store = self.manager.store
        started = time.monotonic()
        deadline = started + timeout
        next_heartbeat = started + self.heartbeat_seconds
        while True:
            now = time.monotonic()
            wake_at = min(deadline, next_heartbeat, now + _TICK_SECONDS)
            stop_at = self._stop_requested_at
            if stop_at is not None:
                wake_at = min(wake_at, stop_at + self.shutdown_grace_seconds)
            ready = wait([child.results, child.process.sentinel], max(0.0, wake_at - now))
            if ready:
                break
            now = time.monotonic()
            if now >= next_heartbeat:
                next_heartbeat = now + self.heartbeat_seconds
                reply = self._heartbeat(claim)
                if reply == "lost":
                    logger.warning(
                        "job %d attempt %d: lease lost to another worker; stopping it, "
                        "recording nothing",
                        claim.job_id,
                        claim.attempt,
                    )
                    self._stop_child(child)
                    return "lost"
                if reply == "cancel":
                    self._stop_child(child)
                    reason = f"cancelled while running on worker {self.worker_id}"
                    if not store.mark_cancelled(claim, reason):
                        return "lost"
                    logger.info("job %d cancelled while running", claim.job_id)
                    return "cancelled"
            if now >= deadline:
                self._stop_child(child)
                error = (
                    f"timed out after {timeout:g} s; its process group was stopped "
                    f"(SIGTERM, then SIGKILL after {self.kill_grace_seconds:g} s)"
                )
                return self._record_failure(claim, error, "timed_out")
            stop_at = self._stop_requested_at
            if stop_at is not None and now >= stop_at + self.shutdown_grace_seconds:
                self._stop_child(child)
                reason = (
                    f"worker {self.worker_id} shut down ({self._stop_reason}) and the job did "
                    f"not finish within {self.shutdown_grace_seconds:g} s"
                )
                if not store.release(claim, reason):
                    return "lost"
                logger.info("job %d handed back to the queue", claim.job_id)
                return "handed_back"
        message = self._receive(child)
        if message is None:
            child.process.join(self.kill_grace_seconds)
            error = f"its child process died without a result ({_describe_exit(child)})"
            return self._record_failure(claim, error, "died")
        kind, payload = message
        if kind != "completed":
            return self._record_failure(claim, str(payload), "failed")
        try:
            recorded = store.complete(claim, payload)
        except TreadleError as err:
            return self._record_failure(claim, f"its result cannot be stored: {err}", "failed")
        if not recorded:
            logger.warning(
                "job %d attempt %d: result discarded, lease lost", claim.job_id, claim.attempt
            )
            return "lost"
        logger.info("job %d completed", claim.job_id)
        return "completed"

    @staticmethod
    def _receive(child: RunningChild) -> tuple[str, Any] | None:
        """The child's message; ``None`` when it exited without one. A child that exited
        right after sending leaves the message readable, so a dead child is read first."""
        try:
            if child.results.poll(0):
                kind, payload = child.results.recv()
                return str(kind), payload
        except (EOFError, OSError):
            return None
        return None

    def _record_failure(
        self, claim: Claim, error: str, outcome: Literal["failed", "died", "timed_out"]
    ) -> AttemptResult:
        delay = self.retry_delay(claim.failures)
        status = self.manager.store.fail(claim, error, outcome=outcome, retry_delay=delay)
        last_line = (error.strip().splitlines() or [outcome])[-1]
        if status is None:
            logger.warning(
                "job %d attempt %d: failure not recorded, lease lost", claim.job_id, claim.attempt
            )
            return "lost"
        if status == "pending":
            logger.warning(
                "job %d attempt %d %s; retry in %.3g s: %s",
                claim.job_id,
                claim.attempt,
                outcome,
                delay,
                last_line,
            )
            return "retrying"
        logger.error("job %d failed after %d attempts: %s", claim.job_id, claim.attempt, last_line)
        return "failed"

    def _stop_child(self, child: RunningChild) -> None:
        """SIGTERM to the child's process group, SIGKILL after the grace period."""
        self._kill_group(child, signal.SIGTERM)
        child.process.join(self.kill_grace_seconds)
        self._kill_group(child, signal.SIGKILL)
        child.process.join(self.kill_grace_seconds)

    @staticmethod
    def _kill_group(child: RunningChild, signal_number: int) -> None:
        pid = child.process.pid
        if pid is None:
            return
        try:
            os.killpg(pid, signal_number)  # the child leads its own group (setsid)
        except ProcessLookupError:
            # no such group: gone, or the child has not reached setsid() yet
            if child.process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal_number)
        except PermissionError:
            logger.warning("cannot signal process group %d", pid)


def _describe_exit(child: RunningChild) -> str:
    code = child.process.exitcode
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exit code {code}"
