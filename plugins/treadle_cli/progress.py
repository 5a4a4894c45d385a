"""The progress display of ``treadle train``: a ``hooks=`` object drawing a progress line on a
terminal and writing periodic lines otherwise, on stderr."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TextIO

__all__ = ["TrainProgress"]


class TrainProgress:
    """The spec's duck-typed ``hooks=`` object for one run of ``treadle train``.

    :param stream: where progress goes (stderr).
    :param batches_per_epoch: batches this process trains per epoch.
    :param interactive: redraw one line (a terminal) rather than write a line every 10 s.
    """

    def __init__(
        self, stream: TextIO, epochs: int, batches_per_epoch: int, *, interactive: bool
    ) -> None:
        self.stream = stream
        self.epochs = epochs
        self.batches_per_epoch = batches_per_epoch
        self.interactive = interactive
        self.epoch = 0
        self.epoch_started = time.monotonic()
        self.last_shown = 0.0
        self.interval = 0.1 if interactive else 10.0

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch
        self.epoch_started = time.monotonic()

    def on_batch_end(self, batch_idx: int, loss: float) -> None:
        now = time.monotonic()
        if now - self.last_shown < self.interval:
            return
        self.last_shown = now
        done = batch_idx + 1
        total = self.batches_per_epoch
        rate = done / max(now - self.epoch_started, 1e-9)
        eta = (total - done) / rate if rate and total >= done else 0.0
        text = (
            f"epoch {self.epoch + 1}/{self.epochs} batch {done}/{total} loss {loss:.4f} "
            f"{rate:.1f} batch/s eta {eta:.0f}s"
        )
        if self.interactive:
            width = 20
            filled = int(width * done / total) if total else 0
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {text}\x1b[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        if self.interactive:
            self.stream.write("\r\x1b[K")
        shown = ", ".join(
            f"{name} {value:.4g}"
            for name, value in metrics.items()
            if name in ("train_loss", "val_loss", "val_perplexity", "val_accuracy", "epoch_time")
        )
        self.stream.write(f"epoch {epoch + 1}/{self.epochs}: {shown}\n")
        self.stream.flush()
