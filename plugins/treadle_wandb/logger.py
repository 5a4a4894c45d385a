"""The ``wandb`` logger: a run's metrics to Weights & Biases.

The Trainer adds it when ``TrainingConfig.wandb_project`` is set (or name it in ``loggers``).
One treadle run is one W&B run: its id is kept in ``run_dir/wandb-run-id``, so a resumed
treadle run continues the same W&B run (``resume="allow"``) instead of starting a new one.
Options come from ``TrainingConfig.plugins.options["wandb"]``: ``entity``, ``group``,
``tags``, ``notes``, ``mode`` (``online``, ``offline``, ``disabled``; default: W&B's own,
which honours ``WANDB_MODE``). ``wandb`` is imported when the logger is built, never at
``import treadle``.
"""

from __future__ import annotations

import math
import re
import secrets
import string
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from treadle.errors import ConfigError, PluginLoadError

if TYPE_CHECKING:
    from treadle.config import TrainingConfig

__all__ = ["OPTION_KEYS", "RUN_ID_FILE", "WandbLogger"]

RUN_ID_FILE = "wandb-run-id"
OPTION_KEYS = frozenset({"entity", "group", "tags", "notes", "mode"})
_RUN_ID = re.compile(r"^[a-z0-9]{8,64}$")


class WandbLogger:
    """Sends ``log_metrics`` to a W&B run; ``close`` finishes it.

    :param training_config: gives ``wandb_project`` (default ``treadle``), ``run_name``,
        ``notes``, the options above, and is stored as the W&B run's config.
    :param run_dir: the run's folder: W&B's files go under it, and the run id is kept there.
    :raises PluginLoadError: ``wandb`` is not installed.
    :raises ConfigError: an unknown option in ``plugins.options["wandb"]``.
    """

    def __init__(
        self, training_config: TrainingConfig | None = None, run_dir: Path | None = None
    ) -> None:
        try:
            import wandb
        except ImportError as err:
            msg = "The 'wandb' logger needs Weights & Biases: pip install \"treadle[wandb]\""
            raise PluginLoadError(msg) from err
        options: dict[str, Any] = {}
        config: dict[str, Any] = {}
        project = "treadle"
        name = None
        notes = None
        if training_config is not None:
            options = dict(training_config.plugins.options.get("wandb", {}))
            config = training_config.to_dict()
            project = training_config.wandb_project or project
            name = training_config.run_name
            notes = training_config.notes or None
        unknown = sorted(set(options) - OPTION_KEYS)
        if unknown:
            msg = (
                f"plugins.options.wandb: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(OPTION_KEYS))}"
            )
            raise ConfigError(msg)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        run_id = self._run_id()
        self.run: Any = wandb.init(
            project=project,
            name=name,
            notes=options.pop("notes", notes),
            config=config,
            dir=str(self.run_dir) if self.run_dir is not None else None,
            id=run_id,
            resume="allow",
            reinit="create_new",
            **options,
        )
        self._last_step = -1
        self._closed = False

    def _run_id(self) -> str:
        """The W&B run id of this treadle run: read back on resume, created otherwise."""
        if self.run_dir is None:
            return _new_run_id()
        path = self.run_dir / RUN_ID_FILE
        if path.exists():
            text = path.read_text(encoding="utf-8").strip()
            if _RUN_ID.match(text):
                return text
        run_id = _new_run_id()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id + "\n", encoding="utf-8")
        return run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log at ``step``; W&B drops steps lower than one it saw, so a resumed run's replayed
        steps are merged into the last one it kept."""
        if self._closed:
            msg = "The 'wandb' logger is closed; it takes no more metrics."
            raise ValueError(msg)
        values = {str(key): _number(value) for key, value in metrics.items()}
        step = max(int(step), self._last_step)
        self._last_step = step
        self.run.log(values, step=step)

    def close(self) -> None:
        """Finish the W&B run (uploads what offline mode keeps locally on ``wandb sync``)."""
        if self._closed:
            return
        self._closed = True
        self.run.finish()


def _new_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(12))


def _number(value: float) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None
