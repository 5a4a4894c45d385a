"""A plugin the signal tests load into ``treadle train`` child processes
(``TREADLE_PLUGINS=tests.signal_probe:probe``): at optimizer step ``SIGNAL_PROBE_STEP`` it
writes ``reached`` into ``SIGNAL_PROBE_DIR`` and waits there (up to 60 s) until the run has
been asked to stop, so that a signal the test sends from outside arrives at a known step; it
then writes ``stopping`` and, with ``SIGNAL_PROBE_HOLD=1``, keeps waiting (for a second
signal).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from treadle import hookimpl


class SignalProbe:
    def __init__(self) -> None:
        folder = os.environ.get("SIGNAL_PROBE_DIR")
        self.folder = Path(folder) if folder else None
        self.step = int(os.environ.get("SIGNAL_PROBE_STEP", "0"))
        self.hold = os.environ.get("SIGNAL_PROBE_HOLD") == "1"
        self.done = False

    @hookimpl
    def treadle_on_batch_end(self, trainer: Any, control: Any) -> None:
        if self.folder is None or self.done or trainer.global_step < self.step:
            return
        self.done = True
        (self.folder / "reached").write_text(str(trainer.global_step), encoding="utf-8")
        deadline = time.monotonic() + 60
        while not control.should_stop and time.monotonic() < deadline:
            time.sleep(0.005)
        (self.folder / "stopping").write_text(str(time.time()), encoding="utf-8")
        while self.hold and time.monotonic() < deadline:
            time.sleep(0.005)


probe = SignalProbe()
