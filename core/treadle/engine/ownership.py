"""What makes one :meth:`Trainer.train <treadle.engine.trainer.Trainer.train>` call an owned
run: its folder, claimed for it alone (:mod:`treadle.engine.checkpoints.run_folder`), and the
handlers that turn SIGINT and SIGTERM into a checkpoint and a clean stop.

Signals: while ``train()`` runs (in the main thread, unless
``TrainingConfig.handle_signals`` is off), the first SIGINT (Ctrl-C) or SIGTERM asks the run
to save at the next optimizer-step boundary and stop; the run then reports
``status == "interrupted"`` and resumes exactly with ``resume="auto"``. A second SIGINT aborts
at once (``KeyboardInterrupt``), saving nothing more. The handlers that were installed before
are put back when ``train()`` returns or raises. A signal the process ignored when ``train()``
began (``nohup``, a background job of a non-interactive shell) stays ignored.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from treadle.engine.checkpoints.lock import LOCK_NAME
from treadle.engine.checkpoints.run_folder import (
    RUN_FILE,
    RunFolder,
    claim_existing_run_folder,
    claim_run_folder,
    folder_series,
    holds_run,
)

if TYPE_CHECKING:
    from types import FrameType

    from treadle.config import TrainingConfig
    from treadle.control import TrainerControl
    from treadle.engine.distributed import DistributedContext

__all__ = [
    "INTERRUPTING_SIGNALS",
    "OwnedFolder",
    "StopOnSignals",
    "claim_for_training",
    "results_record",
]

logger = logging.getLogger(__name__)

#: The stop reasons the signal handlers give: a run stopped by one is ``interrupted``.
INTERRUPTING_SIGNALS = ("SIGINT", "SIGTERM")
#: What ``run.json`` keeps of a finished run's results.
_RECORDED_RESULTS = (
    "best_epoch",
    "best_val_loss",
    "total_time",
    "final_metrics",
    "history",
    "stop_reason",
    "global_step",
    "best_checkpoint",
)


@attrs.define
class OwnedFolder:
    """The run folder of one ``train()`` call, on every rank.

    :ivar path: the folder.
    :ivar run_id: the run's id.
    :ivar complete_results: a resumed run that had finished: its recorded results (nothing
        is to be trained).
    :ivar folder: the claim (rank 0, or a process without ranks); ``None`` on other ranks.
    """

    path: Path
    run_id: str
    complete_results: dict[str, Any] | None = None
    folder: RunFolder | None = None

    def finish(
        self, status: str, results: Mapping[str, Any] | None = None, *, early_stopped: bool
    ) -> None:
        """Record how the run ended in ``run.json`` (with ``early_stopped``: a run early
        stopping ended is finished whatever epochs remain) and release the folder."""
        if self.folder is None:
            return
        try:
            if self.folder.is_held:
                record = None
                if results is not None:
                    record = {**results_record(results), "early_stopped": early_stopped}
                self.folder.finish(status, record)
        finally:
            self.folder.release()

    def abandon(self) -> None:
        """Undo the claim of a new run that failed before it started: when nothing but its
        ``run.json`` and lock file is in the folder, ``run.json`` goes (the lock file stays:
        deleting a lock file races), so the next new run takes the folder instead of
        ``-2``; otherwise the run is recorded as failed. Then the folder is released."""
        folder = self.folder
        if folder is None:
            return
        try:
            leftovers = set(os.listdir(folder.path)) - {RUN_FILE, LOCK_NAME}
            if folder.is_new and folder.is_held and not leftovers:
                (folder.path / RUN_FILE).unlink(missing_ok=True)
            elif folder.is_held:
                folder.finish("failed")
        finally:
            folder.release()

    def release(self) -> None:
        if self.folder is not None:
            self.folder.release()


def results_record(results: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``train()``'s results that ``run.json`` keeps, as JSON data."""
    return {key: _json_ready(results[key]) for key in _RECORDED_RESULTS if key in results}


def _json_ready(value: Any) -> Any:
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None


def _claim(config: TrainingConfig) -> RunFolder:
    base = Path(config.checkpoint_dir)
    target = config.resume
    if target == "auto":
        return claim_run_folder(base, resume=True, run_name=config.run_name, epochs=config.epochs)
    if target:
        # a checkpoint of a run in this run's folder series continues that run; one from
        # anywhere else starts a new run from its state
        parent = Path(os.path.abspath(target)).parent
        if parent in set(folder_series(base)) and holds_run(parent):
            return claim_existing_run_folder(parent, run_name=config.run_name, epochs=config.epochs)
    return claim_run_folder(base, resume=False, run_name=config.run_name)


def claim_for_training(
    config: TrainingConfig, distributed: DistributedContext | None
) -> OwnedFolder:
    """Claim the run's folder: rank 0 claims, every rank learns the folder and run id.

    :raises RunFolderBusyError: resuming a run whose process is alive.
    """
    claimed: RunFolder | None = None
    shared: tuple[str, str, dict[str, Any] | None] | None = None
    failure: BaseException | None = None
    if distributed is None or distributed.is_main:
        try:
            claimed = _claim(config)
        except BaseException as error:
            if distributed is None:
                raise
            failure = error
        else:
            complete = None
            if claimed.is_complete:
                complete = dict(claimed.info.results or {})
            shared = (str(claimed.path), claimed.run_id, complete)
    if distributed is not None:
        shared = distributed.broadcast(shared)
        if failure is not None:
            raise failure
        if shared is None:
            msg = "rank 0 could not claim the run folder; see its error"
            raise RuntimeError(msg)
    assert shared is not None
    path, run_id, complete = shared
    if claimed is not None and complete is None:
        claimed.start_heartbeat()
    return OwnedFolder(Path(path), run_id, complete, claimed)


class StopOnSignals:
    """SIGINT and SIGTERM for the length of one ``train()`` call: the first asks ``control``
    to save at the next optimizer-step boundary and stop; a second SIGINT raises
    ``KeyboardInterrupt`` at once. Installed only from the main thread.

    :ivar received: the first signal's name (``SIGINT``), once one came.
    """

    def __init__(self, control: TrainerControl) -> None:
        self.control = control
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Put the handlers in place, remembering the ones they replace."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN:
                continue  # ignored on purpose (nohup, a background job): stays ignored
            self._previous[signum] = previous
            signal.signal(signum, self._handle)

    def restore(self) -> None:
        """Put the previous handlers back; calling it again does nothing."""
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            # None: a handler installed from C, which Python cannot put back
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            if signum == signal.SIGINT:
                self.restore()  # a third Ctrl-C during the unwinding is Python's own again
                msg = "aborted at once by a second Ctrl-C: nothing more was saved"
                raise KeyboardInterrupt(msg)
            logger.warning("%s: already stopping after %s", name, self.received)
            return
        self.received = name
        hint = "; press Ctrl-C again to abort at once" if signum == signal.SIGINT else ""
        logger.warning(
            "%s: saving a checkpoint at the next optimizer step, then stopping%s", name, hint
        )
        self.control.should_save = True
        self.control.request_stop(name)
