"""The ``jsonl`` logger: one JSON object per ``log_metrics`` call in ``run_dir/metrics.jsonl``.

Each line is ``{"step": 120, "time": 1714560000.123, "train/batch_loss": 0.42, ...}``: metric
names are plain keys (``/`` included), values numbers, ``null`` for NaN and infinities (strict
JSON has neither). Lines are buffered and written every ``flush_every`` calls and on
:meth:`JsonlLogger.close`; the file is opened for appending, so a resumed run continues it, after
dropping the lines the failed run wrote past the checkpoint it resumes from (those steps are
replayed): each step is in the file once.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from treadle import hookimpl
from treadle.errors import ConfigError

if TYPE_CHECKING:
    from treadle.config import TrainingConfig
    from treadle.protocols import TrainerView

__all__ = ["FILE_NAME", "RESERVED_KEYS", "JsonlLogger"]

FILE_NAME = "metrics.jsonl"
RESERVED_KEYS = frozenset({"step", "time"})


def _json_number(value: float) -> float | int | None:
    number = float(value)
    if not math.isfinite(number):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return number


class JsonlLogger:
    """Appends metrics to ``run_dir / "metrics.jsonl"``.

    :param training_config: unused; accepted as every logger is built the same way.
    :param run_dir: the run's folder (created when missing).
    :param flush_every: buffered lines written together.
    :raises ConfigError: no ``run_dir``.
    """

    def __init__(
        self,
        training_config: TrainingConfig | None = None,
        run_dir: Path | None = None,
        flush_every: int = 50,
    ) -> None:
        if run_dir is None:
            msg = "The 'jsonl' logger needs run_dir, the folder that will hold metrics.jsonl."
            raise ConfigError(msg)
        if flush_every < 1:
            msg = f"The 'jsonl' logger's flush_every must be >= 1: {flush_every}"
            raise ConfigError(msg)
        self.training_config = training_config
        self.path = Path(run_dir) / FILE_NAME
        self.flush_every = flush_every
        self._buffer: list[str] = []
        self._file: TextIO | None = None
        self._closed = False

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if self._closed:
            msg = f"The 'jsonl' logger for {self.path} is closed; it takes no more metrics."
            raise ValueError(msg)
        clashes = RESERVED_KEYS.intersection(metrics)
        if clashes:
            msg = (
                f"Metric names {', '.join(sorted(clashes))} are reserved in {FILE_NAME} "
                f"(each line has 'step' and 'time'); rename the metric."
            )
            raise ValueError(msg)
        record: dict[str, float | int | None] = {"step": int(step), "time": round(time.time(), 3)}
        record.update({str(name): _json_number(value) for name, value in metrics.items()})
        self._buffer.append(json.dumps(record, allow_nan=False))
        if len(self._buffer) >= self.flush_every:
            self.flush()

    @hookimpl
    def treadle_on_load_checkpoint(self, trainer: TrainerView) -> None:
        """The run resumes at ``trainer.global_step`` and replays the steps after it: drop
        the lines a failed run wrote past that step, so each step is in the file once."""
        if self._file is None and self.path.is_file():
            _drop_steps_after(self.path, trainer.global_step)

    def flush(self) -> None:
        """Write the buffered lines and flush the file."""
        if not self._buffer:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write("\n".join(self._buffer) + "\n")
        self._file.flush()
        self._buffer.clear()

    def close(self) -> None:
        """Write what is buffered and close the file; calling it again does nothing."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            if self._file is not None:
                self._file.close()
                self._file = None


def _drop_steps_after(path: Path, step: int) -> None:
    """Rewrite ``path`` without the records of steps after ``step`` (atomically: a temporary
    file renamed over it). Lines that do not parse are kept."""
    kept = []
    dropped = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        recorded = record.get("step") if isinstance(record, dict) else None
        if isinstance(recorded, int) and recorded > step:
            dropped += 1
            continue
        kept.append(line)
    if not dropped:
        return
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
    os.replace(temporary, path)
