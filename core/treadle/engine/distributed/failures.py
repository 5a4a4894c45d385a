"""A failing rank's error reaching every rank: the first failure is written to the process
group's store; a rank whose collective broke because of it reads that report and raises an
error naming the rank that failed first, with its traceback."""

from __future__ import annotations

import contextlib
import datetime
import itertools
import logging
import traceback
from typing import Any

import torch.distributed as dist

from treadle.engine.distributed.errors import DistributedError
from treadle.errors import TreadleError

__all__ = ["FailureReporter", "abort_group"]

logger = logging.getLogger(__name__)

_FAILURE_KEY = "treadle/failure/{run}"
#: how long a rank whose collective broke waits for the rank that caused it to say why
_PEER_REPORT_WAIT = datetime.timedelta(seconds=1)
#: numbers each Trainer.train call: every rank calls it equally often, so the keys agree
_run_numbers = itertools.count()


class FailureReporter:
    """Reports one rank's failure through the group's key-value store.

    :param rank: this rank.
    :param store: the group's store; ``None`` to look up the default group's.
    """

    def __init__(self, rank: int, store: Any) -> None:
        self.rank = rank
        self._store = store
        self._failure_key = _FAILURE_KEY.format(run=next(_run_numbers))

    def _failure_store(self) -> Any:
        if self._store is None:
            # no public accessor for a group the caller started (file:// and the like)
            with contextlib.suppress(Exception):
                self._store = dist.distributed_c10d._get_default_store()
        return self._store

    def report(self, error: BaseException) -> DistributedError | None:
        """Write ``error`` as this run's first failure, unless another rank's is there.

        :returns: an error naming the rank that failed first when that was another rank;
            ``None`` when this rank was first (or the store is gone).
        """
        store = self._failure_store()
        if store is None:
            return None
        own = f"{self.rank}\n{type(error).__name__}: {error}\n" + "".join(
            traceback.format_exception(error)
        )
        try:
            if isinstance(error, RuntimeError) and not isinstance(error, TreadleError):
                # a broken collective: the rank that broke it reports in a moment
                with contextlib.suppress(Exception):
                    store.wait([self._failure_key], _PEER_REPORT_WAIT)
            first = store.compare_set(self._failure_key, "", own)
        except Exception as store_error:  # the store's host may be gone with its rank
            logger.debug("could not reach the store to report a failure: %s", store_error)
            return None
        text = first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first)
        if text == own:
            logger.error("rank %d failed: %s: %s", self.rank, type(error).__name__, error)
            return None
        rank_text, _, rest = text.partition("\n")
        summary, _, remote_traceback = rest.partition("\n")
        msg = (
            f"rank {rank_text} failed: {summary} (this is rank {self.rank}; its own error was "
            f"{type(error).__name__}: {str(error)[:200]})"
        )
        peer_error = DistributedError(msg)
        peer_error.failed_rank = int(rank_text)  # type: ignore[attr-defined]
        peer_error.add_note(f"traceback of rank {rank_text}:\n{remote_traceback}")
        return peer_error


def abort_group() -> None:
    """Tear the default process group down without waiting on the work a failed rank left."""
    try:
        abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
        if dist.get_backend() == "nccl" and abort is not None:
            # destroy would wait for the NCCL work a failed rank left behind
            abort()
        else:
            dist.destroy_process_group()
    except Exception as err:
        logger.debug("could not tear the process group down: %s", err)
