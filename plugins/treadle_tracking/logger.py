"""The ``experiment`` logger: a run, its config, status and metrics in an experiment store.

Built once per run as ``ExperimentLogger(training_config=..., run_dir=...)`` when
``training_config.experiment_location`` is set. Rows are buffered and written in one
transaction at each epoch's end, before each checkpoint, every ``flush_rows`` rows or
``flush_seconds``, and on :meth:`ExperimentLogger.close`; a per-step call only appends tuples.

The logger is bound to its run's lifecycle hooks (its ``@hookimpl`` methods), which tell it
what the metric stream does not: the step a resumed run continues from
(:meth:`~ExperimentLogger.begin`), the run id kept in a checkpoint
(:meth:`~ExperimentLogger.resume_from`), a failure (:meth:`~ExperimentLogger.fail`) and the
results (:meth:`~ExperimentLogger.finish`). It hears its own run only, whatever other runs
share its config.

The record names its owner (this process: pid, host, start) and, from a daemon thread, beats
every :data:`~treadle.owner.HEARTBEAT_SECONDS` (one ``UPDATE``; nothing on the training
path), so a run killed without a word (``kill -9``) shows as ``died`` in ``treadle runs
list``. A run stopped by SIGINT or SIGTERM after saving ends ``interrupted``.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from treadle import hookimpl
from treadle.errors import ConfigError
from treadle.experiments import ExperimentDB, check_config
from treadle.owner import HEARTBEAT_SECONDS, LEASE_SECONDS, current_owner
from treadle.storage import DEFAULT_LOCATION, MetricValues, check_name

if TYPE_CHECKING:
    from treadle.config import TrainingConfig
    from treadle.protocols import TrainerView

__all__ = ["PLUGIN_STATE_KEY", "ExperimentLogger"]

logger = logging.getLogger(__name__)

#: Where checkpoints keep the run's id (``plugin_state["tracking"]``).
PLUGIN_STATE_KEY = "tracking"


def _json_ready(value: Any) -> Any:
    """Results as JSON data: non-finite numbers become None, paths strings, the rest
    dropped when not JSON."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return repr(value)[:200]
    return number if math.isfinite(number) else None


class ExperimentLogger:
    """Sends a run's metrics to the experiment store at ``experiment_location``.

    :param training_config: the run's config: stored with the run; gives
        ``experiment_location``, ``run_name`` and ``notes``.
    :param run_dir: the run's folder: the run's default name, and how a resumed run whose
        checkpoint holds no run id finds its record.
    :param location: the store (default: ``training_config.experiment_location``, else
        ``treadle.db``).
    :param run_name: overrides ``training_config.run_name``.
    :param flush_rows: buffered rows that trigger a write.
    :param flush_seconds: age of the oldest buffered row that triggers a write.
    :ivar is_recording: ``False`` in a process whose ``RANK`` (set by torchrun) is not 0: such
        a logger takes metrics and writes nothing, so a distributed run is recorded once.
    :raises StorageError: the location cannot be opened (at construction, before training).
    """

    def __init__(
        self,
        training_config: TrainingConfig | None = None,
        run_dir: Path | None = None,
        *,
        location: str | Path | None = None,
        run_name: str | None = None,
        flush_rows: int = 5000,
        flush_seconds: float = 30.0,
    ) -> None:
        if flush_rows < 1 or flush_seconds <= 0:
            msg = (
                f"The 'experiment' logger needs flush_rows >= 1 and flush_seconds > 0: "
                f"{flush_rows}, {flush_seconds}"
            )
            raise ConfigError(msg)
        configured = None if training_config is None else training_config.experiment_location
        self.location = str(location or configured or DEFAULT_LOCATION)
        self.training_config = training_config
        self.run_dir = None if run_dir is None else Path(run_dir).resolve()
        self.run_name = run_name or self._default_name()
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.run_id: int | None = None
        self.attempt: int | None = None
        self.status: str | None = None
        # under torchrun every process builds its loggers: only rank 0 records the run
        self.is_recording = os.environ.get("RANK", "0") in ("", "0")
        self._db: ExperimentDB | None = ExperimentDB(self.location) if self.is_recording else None
        self._buffer: list[MetricValues] = []
        self._oldest: float | None = None
        self._epoch: int | None = None
        self._resume_run_id: int | None = None
        self._resume_step: int | None = None
        self._resume_epoch: int | None = None
        self._checked_names: set[str] = set()
        self._closed = False
        self._stop_beating = threading.Event()
        self._heart: threading.Thread | None = None

    def _default_name(self) -> str:
        if self.training_config is not None and self.training_config.run_name:
            return self.training_config.run_name
        if self.run_dir is not None and self.run_dir.name:
            return self.run_dir.name
        return "run"

    # -- its run's lifecycle hooks (bound to that run only) ------------------------------

    @hookimpl
    def treadle_on_load_checkpoint(self, plugin_state: Mapping[str, Any]) -> None:
        if self.is_recording:
            self.resume_from(plugin_state)

    @hookimpl
    def treadle_on_training_start(self, trainer: TrainerView) -> None:
        if self.is_recording:
            self.begin(global_step=trainer.global_step)

    @hookimpl
    def treadle_on_save_checkpoint(self, plugin_state: MutableMapping[str, Any]) -> None:
        if self.is_recording:
            plugin_state[PLUGIN_STATE_KEY] = self.checkpoint_state()

    @hookimpl
    def treadle_on_exception(self, exception: BaseException) -> None:
        if self.is_recording:
            self.fail(exception)

    @hookimpl
    def treadle_on_training_end(self, results: Mapping[str, Any]) -> None:
        if self.is_recording:
            self.finish(results)

    # -- the metric stream ---------------------------------------------------------------

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer ``metrics`` at optimizer ``step``. A row with an ``epoch`` entry (the
        MetricsEngine's epoch row) is that epoch's; it is written at once, and later rows
        count as the next epoch's."""
        if self._closed:
            msg = f"The 'experiment' logger of run {self.run_id} is closed; it takes no metrics."
            raise ValueError(msg)
        if not self.is_recording:
            return
        now = time.time()
        if self._oldest is None:
            self._oldest = now
        epoch_value = metrics.get("epoch")
        append = self._buffer.append
        if epoch_value is not None:
            epoch = int(epoch_value)
            for name, value in metrics.items():
                if name != "epoch":
                    number = float(value)
                    append((name, None if number != number else number, epoch, step, now))
            self._epoch = epoch + 1
            self.flush()
            return
        epoch_now = self._epoch
        for name, value in metrics.items():
            number = float(value)
            append((name, None if number != number else number, epoch_now, step, now))
        if len(self._buffer) >= self.flush_rows or now - self._oldest >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows in one transaction (starting the run's record if needed)."""
        if not self._buffer:
            return
        db = self._store()
        for name, *_ in self._buffer:
            if name not in self._checked_names:
                check_name(name, "metric name")
                self._checked_names.add(name)
        run_id = self._ensure_run()
        db.store.add_metrics(run_id, self.attempt, self._buffer)
        self._buffer = []
        self._oldest = None

    def _store(self) -> ExperimentDB:
        if self._db is None:
            self._db = ExperimentDB(self.location)
        return self._db

    # -- the run's record ----------------------------------------------------------------

    def resume_from(self, plugin_state: Mapping[str, Any]) -> None:
        """Continue the run a checkpoint names (``plugin_state["tracking"]``) when it lives
        in this logger's store; otherwise this run gets a record of its own."""
        state = plugin_state.get(PLUGIN_STATE_KEY)
        if not isinstance(state, Mapping) or self.run_id is not None:
            return
        run_id, location = state.get("run_id"), state.get("location")
        if isinstance(run_id, int) and location == self._location_key():
            self._resume_run_id = run_id
            epoch = state.get("epoch")
            self._resume_epoch = epoch if isinstance(epoch, int) else None
        else:
            logger.info(
                "checkpoint names run %s of %s, not of %s; recording a new run",
                run_id,
                location,
                self._location_key(),
            )

    def begin(self, *, global_step: int) -> None:
        """The run starts (``global_step > 0``: resumed at that step). A resumed run
        continues its record as a new attempt; rows its earlier attempts logged after
        ``global_step`` become superseded. Per-step rows count from epoch 0, or from the
        epoch the checkpoint was in (unknown, ``None``, when it holds no tracking state)."""
        self._epoch = 0 if global_step == 0 else self._resume_epoch
        if self.run_id is not None:
            return
        if global_step > 0:
            self._resume_step = global_step
            if self._resume_run_id is None:
                self._resume_run_id = self._previous_run()
        self._ensure_run()

    def _previous_run(self) -> int | None:
        if self.run_dir is None:
            return None
        runs = self._store().find_runs(run_dir=str(self.run_dir), limit=1)
        return runs[0].run_id if runs else None

    def _ensure_run(self) -> int:
        if self.run_id is not None:
            return self.run_id
        db = self._store()
        if self._resume_run_id is not None:
            try:
                self.attempt = db.resume_run(
                    self._resume_run_id,
                    self._resume_step,
                    owner=current_owner(),
                    lease_seconds=LEASE_SECONDS,
                )
                self.run_id = self._resume_run_id
                self._start_heartbeat()
                logger.info(
                    "run %d resumed at step %s as attempt %d",
                    self.run_id,
                    self._resume_step,
                    self.attempt,
                )
                return self.run_id
            except KeyError:
                logger.warning(
                    "run %d is not in %s any more; recording a new run",
                    self._resume_run_id,
                    self.location,
                )
        config: dict[str, Any] = {}
        notes = ""
        if self.training_config is not None:
            config = check_config(self.training_config)
            notes = self.training_config.notes
        self.run_id = db.log_run(
            self.run_name,
            config,
            notes,
            run_dir=None if self.run_dir is None else str(self.run_dir),
            owner=current_owner(),
            lease_seconds=LEASE_SECONDS,
        )
        self.attempt = 1
        self._start_heartbeat()
        return self.run_id

    def _start_heartbeat(self) -> None:
        """Beat for the run every :data:`~treadle.owner.HEARTBEAT_SECONDS` until it ends."""
        if self._heart is not None or self.run_id is None or self.attempt is None:
            return
        run_id, attempt, stop = self.run_id, self.attempt, self._stop_beating
        db = self._store()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_SECONDS):
                try:
                    if not db.heartbeat(run_id, attempt, LEASE_SECONDS):
                        return  # the run ended, or another attempt took it over
                except Exception as err:  # a missed beat must not stop training
                    logger.warning("heartbeat of run %d failed: %s", run_id, err)

        self._heart = threading.Thread(
            target=beat, name=f"treadle-experiment-heartbeat-{run_id}", daemon=True
        )
        self._heart.start()

    def _stop_heartbeat(self) -> None:
        self._stop_beating.set()
        heart, self._heart = self._heart, None
        if heart is not None and heart is not threading.current_thread():
            heart.join()

    def _location_key(self) -> str:
        path = Path(self.location)
        return str(path.resolve()) if "://" not in self.location else self.location

    def checkpoint_state(self) -> dict[str, Any]:
        """Flush, and return what a checkpoint keeps to continue this run's record: the run
        id, the store, and the epoch that per-step rows after the checkpoint belong to."""
        self.flush()
        return {
            "run_id": self._ensure_run(),
            "location": self._location_key(),
            "epoch": self._epoch,
        }

    def fail(self, error: BaseException) -> None:
        """Record the run as failed with ``error`` (what is buffered is written first); a
        ``KeyboardInterrupt`` (a second Ctrl-C) leaves it ``interrupted``: its last checkpoint
        resumes it."""
        self._stop_heartbeat()
        try:
            self.flush()
        except Exception as flush_error:  # the run's own error matters more
            error.add_note(f"the experiment logger could not write its last rows: {flush_error}")
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        try:
            self._store().update_run(
                self._ensure_run(), status=status, error=f"{type(error).__name__}: {error}"[:4000]
            )
            self.status = status
        finally:
            self._release_if_closed()

    def finish(self, results: Mapping[str, Any]) -> None:
        """Store the run's results (best checkpoint, best epoch and value, stop reason) in
        its summary; the run is ``completed``, or ``interrupted`` when a signal stopped it
        (``results["status"]``)."""
        self._stop_heartbeat()
        status = "interrupted" if results.get("status") == "interrupted" else "completed"
        summary = {
            key: _json_ready(results[key])
            for key in (
                "best_checkpoint",
                "best_epoch",
                "best_val_loss",
                "stop_reason",
                "total_time",
                "global_step",
                "final_metrics",
                "run_dir",
                "run_id",
            )
            if key in results
        }
        if "run_id" in summary:  # the run folder's id, beside the store's own
            summary["run_folder_id"] = summary.pop("run_id")
        try:
            self._store().update_run(self._ensure_run(), status=status, summary=summary)
            self.status = status
        finally:
            self._release_if_closed()

    def _release_if_closed(self) -> None:
        # the Trainer closes its loggers before treadle_on_training_end: a late write opens
        # the store again and closes it after
        if self._closed and self._db is not None:
            self._db.close()
            self._db = None

    def close(self) -> None:
        """Write what is buffered and settle the status: ``failed`` when called while an
        exception is being handled, else ``completed``. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        if not self.is_recording:
            return
        self._stop_heartbeat()
        try:
            self.flush()
            if self.status is None and self.run_id is not None:
                handling = sys.exception()
                if handling is not None:
                    self.fail(handling)
                else:
                    self.status = "completed"
                    self._store().update_run(self.run_id, status="completed")
        finally:
            if self._db is not None:
                self._db.close()
                self._db = None
