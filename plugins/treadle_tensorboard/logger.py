"""The ``tensorboard`` logger: a run's scalars, hyperparameters and config as TensorBoard events.

One event directory per run, ``run_dir/tensorboard`` (option ``log_dir``, relative to
``run_dir`` unless absolute); point TensorBoard at the runs' parent folder to compare them:
``tensorboard --logdir checkpoints/``. Every figure the run logs becomes a scalar at its
optimizer step: ``train/batch_loss`` and ``train/learning_rate`` every ``log_every_n_steps``,
and each epoch's row (``train_loss``, ``val_loss``, ``val_<metric>``, ``learning_rate``,
``gradient_norm``, ``drift_js_divergence`` when drift is measured, ...). A fresh run also writes
its hyperparameters (the HParams dashboard) and its config as text.

A resumed run appends to the same directory: the new event file opens with TensorBoard's
restart marker (``SessionLog.START``, what ``SummaryWriter(purge_step=...)`` writes) at the step
after the checkpoint, so TensorBoard drops what the interrupted attempt logged after its
checkpoint and every step appears once. The logger writes everything it was given before a
checkpoint is written, so nothing before the checkpoint is lost.

The step never waits on the event file: ``log_metrics`` appends a tuple, and a writer thread
of the logger's own builds and writes the events (see :mod:`treadle.background`).

Options (``plugins.options["tensorboard"]``): ``log_dir``, ``hparams`` (default ``true``),
``flush_seconds`` (how stale the dashboard may get; default 2). ``tensorboard`` is imported
when the logger is built, at the start of the run, never at ``import treadle``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from treadle import hookimpl
from treadle.background import BackgroundWriter
from treadle.errors import ConfigError, PluginLoadError
from treadle_tensorboard.events import EventFile

if TYPE_CHECKING:
    from treadle.config import TrainingConfig
    from treadle.protocols import TrainerView

__all__ = ["DEFAULT_DIR", "OPTION_KEYS", "TensorBoardLogger", "flat_hparams"]

logger = logging.getLogger(__name__)

DEFAULT_DIR = "tensorboard"
OPTION_KEYS = frozenset({"log_dir", "hparams", "flush_seconds"})

#: One ``log_metrics`` call: (step, wall time, metrics).
Row = tuple[int, float, dict[str, float]]


def _check_installed() -> None:
    try:
        import tensorboard.compat.proto.event_pb2  # noqa: F401
    except ImportError as err:
        msg = (
            "The 'tensorboard' logger needs tensorboard: "
            f'pip install "treadle[tensorboard]" ({err})'
        )
        raise PluginLoadError(msg) from err


class TensorBoardLogger:
    """Writes a run's metrics as TensorBoard event files; ``close`` writes what is left.

    :param training_config: gives the options above; its fields are the hyperparameters and
        the config text.
    :param run_dir: the run's folder; the event directory is ``run_dir/tensorboard``.
    :raises PluginLoadError: tensorboard is not installed (with the pip command).
    :raises ConfigError: an unknown or invalid option, or neither ``run_dir`` nor an absolute
        ``log_dir``.
    """

    def __init__(
        self, training_config: TrainingConfig | None = None, run_dir: Path | None = None
    ) -> None:
        _check_installed()
        options: dict[str, Any] = {}
        if training_config is not None:
            options = training_config.plugins.options_for("tensorboard", OPTION_KEYS)
        log_dir = Path(str(options.get("log_dir", DEFAULT_DIR)))
        if not log_dir.is_absolute():
            if run_dir is None:
                msg = "The 'tensorboard' logger needs run_dir, or an absolute log_dir option."
                raise ConfigError(msg)
            log_dir = Path(run_dir) / log_dir
        flush_seconds = options.get("flush_seconds", 2.0)
        if isinstance(flush_seconds, bool) or not isinstance(flush_seconds, int | float):
            msg = f"plugins.options.tensorboard.flush_seconds must be a number: {flush_seconds!r}"
            raise ConfigError(msg)
        if not flush_seconds > 0:
            msg = f"plugins.options.tensorboard.flush_seconds must be > 0: {flush_seconds}"
            raise ConfigError(msg)
        self.log_dir = log_dir
        self.training_config = training_config
        self.write_hparams = bool(options.get("hparams", True))
        self._events: EventFile | None = None
        self._opening = threading.Lock()
        self._rows: BackgroundWriter[Row] = BackgroundWriter(
            self._write_rows, name="tensorboard", max_delay_seconds=float(flush_seconds)
        )
        self._closed = False

    # -- its run's lifecycle hooks (bound to that run only) ------------------------------

    @hookimpl
    def treadle_on_training_start(self, trainer: TrainerView) -> None:
        self.begin(global_step=trainer.global_step)

    @hookimpl
    def treadle_on_save_checkpoint(self) -> None:
        # what the run logged up to the checkpoint is on disk before the checkpoint is: a
        # resume drops the steps after it, and must find those before it
        self.flush(durable=True)

    # -- the event file --------------------------------------------------------------------

    def begin(self, *, global_step: int) -> None:
        """Open the event file. ``global_step > 0``: the run resumed after that step, and
        TensorBoard is told to drop later steps of the interrupted attempt. A fresh run also
        writes its hyperparameters and config."""
        resumed = global_step > 0
        if not self._open(purge_step=global_step + 1 if resumed else None):
            return
        config = self.training_config
        if config is None:
            return
        from torch.utils.tensorboard import summary

        text = json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)
        # four-space indent: TensorBoard's text dashboard renders Markdown, this as code
        block = "\n".join("    " + line for line in text.splitlines())
        text_summary = summary.text("config", block)  # type: ignore[no-untyped-call]
        self._add_summary(text_summary, global_step)
        if self.write_hparams and not resumed:
            metrics = {config.monitor_metric: math.nan, "train_loss": math.nan}
            for part in summary.hparams(  # type: ignore[no-untyped-call]
                flat_hparams(config.to_dict()), metrics
            ):
                self._add_summary(part, 0)

    def _open(self, purge_step: int | None) -> bool:
        """Open the run's new event file; ``False`` when it is open already."""
        with self._opening:
            if self._events is not None:
                return False
            self._events = EventFile(self.log_dir, purge_step=purge_step)
        if purge_step is not None:
            logger.info(
                "tensorboard: %s continues at step %d (later steps of the interrupted attempt "
                "are dropped)",
                self.log_dir,
                purge_step,
            )
        return True

    def _add_summary(self, summary: Any, step: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        assert self._events is not None
        self._events.write(Event(wall_time=time.time(), step=step, summary=summary))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer ``metrics`` at optimizer ``step`` (written on the logger's thread)."""
        if self._closed:
            msg = f"The 'tensorboard' logger for {self.log_dir} is closed; it takes no metrics."
            raise ValueError(msg)
        self._rows.append((step, time.time(), dict(metrics)))

    def _write_rows(self, rows: list[Row]) -> None:
        """On the writer thread: one event per ``log_metrics`` call, then a file flush."""
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._open(purge_step=None)  # used without a Trainer, no run start was heard
        assert self._events is not None
        value = Summary.Value
        self._events.write_many(
            [
                Event(
                    wall_time=wall_time,
                    step=step,
                    summary=Summary(
                        value=[
                            value(tag=name, simple_value=float(number))
                            for name, number in metrics.items()
                        ]
                    ),
                )
                for step, wall_time, metrics in rows
            ]
        )
        self._events.flush()

    def flush(self, *, durable: bool = False) -> None:
        """Write every event so far to the event file (``durable``: and ``fsync`` it)."""
        self._rows.flush()
        if self._events is not None:
            self._events.flush(durable=durable)

    def close(self) -> None:
        """Write what is buffered and close the event file; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self._rows.close()
        finally:
            if self._events is not None:
                self._events.close()


def flat_hparams(
    config: Mapping[str, Any], prefix: str = ""
) -> dict[str, bool | int | float | str]:
    """A config as the flat scalars the HParams dashboard takes: nested keys joined with
    ``.`` (``plugins.options.hf.model``), lists as JSON text, ``None`` left out."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if value is None:
            continue
        if isinstance(value, Mapping):
            flat.update(flat_hparams(value, prefix=f"{name}."))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str)
    return flat
