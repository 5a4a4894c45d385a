"""A child process that sends a run's metrics to MLflow, so MLflow's own work never holds the
training process's GIL.

MLflow's SQL store spends 140-250 us of Python per metric value (ORM rows and the run's
latest-metric table, measured with MLflow 3.18 and SQLite); in a thread of the training
process that competes with the step for the interpreter lock (+28% wall time on a 1.7 ms step
logging every step, measured). Here it runs beside the training process instead, as W&B's
service process does.

The protocol is JSON lines over the child's stdin and stdout: the parent sends one batch,
``[[step, timestamp_ms, {"name": value, ...}], ...]``, and waits for ``{"ok": true}`` or
``{"error": "..."}``. The child starts as ``python -c "from treadle_mlflow.sender import
main; main()" TRACKING_URI RUN_ID`` (never re-running the parent's ``__main__``, as
``multiprocessing``'s spawn would) and ends when its stdin closes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
from typing import IO, Any

__all__ = ["MetricSender", "main"]

#: MLflow's limit of metrics per ``log_batch`` (mlflow.utils.validation).
METRICS_PER_BATCH = 1000

#: One ``log_metrics`` call: (step, wall time in ms, metrics).
Row = tuple[int, int, dict[str, float]]


#: The child's program: ``-c``, not ``-m``: the package is imported before ``-m`` would run
#: the module, which then runs twice (runpy warns).
_CHILD = "from treadle_mlflow.sender import main; main()"


class MetricSender:
    """The parent's side: starts the child, sends it batches, waits for each to be stored.

    :param tracking_uri: the tracking store the child opens.
    :param run_id: the MLflow run the metrics belong to.
    """

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, tracking_uri, run_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )

    def send(self, rows: list[Row]) -> None:
        """Store ``rows`` in MLflow; returns once the child has.

        :raises RuntimeError: the child reported an error, or died.
        """
        process = self._process
        assert process.stdin is not None
        assert process.stdout is not None
        batch = [[step, timestamp, _plain(metrics)] for step, timestamp, metrics in rows]
        try:
            process.stdin.write(json.dumps(batch) + "\n")
            process.stdin.flush()
            reply = process.stdout.readline()
        except (BrokenPipeError, OSError) as err:
            msg = f"the MLflow sender process ended (exit status {process.poll()})"
            raise RuntimeError(msg) from err
        if not reply:
            msg = f"the MLflow sender process ended (exit status {process.wait()})"
            raise RuntimeError(msg)
        answer = json.loads(reply)
        if "error" in answer:
            raise RuntimeError(str(answer["error"]))

    def close(self, timeout: float = 30.0) -> None:
        """Close the child's stdin and wait for it to end."""
        if self._process.stdin is not None and not self._process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):  # the child is gone: nothing to tell
                self._process.stdin.close()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()


def _plain(metrics: dict[str, float]) -> dict[str, float | str]:
    """JSON has no NaN or infinities: those travel as text."""
    return {
        name: float(value) if math.isfinite(float(value)) else str(float(value))
        for name, value in metrics.items()
    }


def serve(tracking_uri: str, run_id: str, requests: IO[str], replies: IO[str]) -> None:
    """The child's side: each line of ``requests`` is a batch, stored with ``log_batch``
    calls of at most 1000 metrics, then answered on ``replies``."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=tracking_uri)
    for line in requests:
        try:
            metrics = [
                Metric(name, float(value), int(timestamp), int(step))
                for step, timestamp, values in json.loads(line)
                for name, value in values.items()
            ]
            for start in range(0, len(metrics), METRICS_PER_BATCH):
                client.log_batch(run_id, metrics=metrics[start : start + METRICS_PER_BATCH])
            answer: dict[str, Any] = {"ok": True}
        except Exception as error:  # reported to the parent, which raises it in the run
            answer = {"error": f"{type(error).__name__}: {error}"}
        replies.write(json.dumps(answer) + "\n")
        replies.flush()


def main() -> None:
    tracking_uri, run_id = sys.argv[1:3]
    # replies get the real stdout; anything else written there (a library's print, C code)
    # goes to stderr instead of into the protocol
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(tracking_uri, run_id, sys.stdin, replies)


if __name__ == "__main__":
    main()
