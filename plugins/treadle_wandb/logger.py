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

__all__ = ["MODES", "OPTION_KEYS", "RUN_ID_FILE", "WandbLogger"]

RUN_ID_FILE = "wandb-run-id"
OPTION_KEYS = frozenset({"entity", "group", "tags", "notes", "mode"})
_RUN_ID = re.compile(r"^[a-z0-9]{8,64}$")


class WandbLogger:
    """Sends ``log_metrics`` to a W&B run; ``close`` finishes it.

    :param training_config: gives ``wandb_project`` (default ``treadle``), ``run_name``,
        ``notes``, the options above, and is stored as the W&B run's config.
    :param run_dir: the run's folder: W&B's files go under it, and the run id is kept there.
    :raises PluginLoadError: ``wandb`` is not installed.
    :raises ConfigError: an unknown or ill-typed option in ``plugins.options["wandb"]``, or
        W&B cannot start a run (no credentials, refused ones, no network): the message says
        to run ``wandb login`` or to log offline (``WANDB_MODE=offline``).
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
            options = training_config.plugins.options_for("wandb", OPTION_KEYS)
            config = training_config.to_dict()
            project = training_config.wandb_project or project
            name = training_config.run_name
            notes = training_config.notes or None
        _check_options(options)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        run_id = self._run_id()
        try:
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
        except wandb.errors.Error as err:
            # no credentials (UsageError), refused ones, no network: W&B's own error comes
            # from deep inside its login; say what to do, before training starts
            raise ConfigError(_start_failure(err, options.get("mode"))) from err
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
        """Finish the W&B run (uploads what offline mode keeps locally on ``wandb sync``).

        W&B's service writes the run's local files (``run-*.wandb``) completely only when it
        closes the run, which ``run.finish()`` asks for without waiting; ``wandb.teardown()``
        (called at exit) waits for it. Call it before reading those files in the same process.
        """
        if self._closed:
            return
        self._closed = True
        self.run.finish()


#: The W&B modes a run may ask for in ``plugins.options.wandb.mode``.
MODES = ("online", "offline", "disabled")


def _check_options(options: Mapping[str, Any]) -> None:
    """Refuse option values W&B would reject from deep inside ``wandb.init``, naming the
    option (unknown names are refused by ``PluginsConfig.options_for``).

    :raises ConfigError: an option of the wrong type or value.
    """
    for key in ("entity", "group", "notes"):
        if key in options and not isinstance(options[key], str):
            msg = f"plugins.options.wandb.{key} must be a string: {options[key]!r:.60}"
            raise ConfigError(msg)
    tags = options.get("tags", [])
    if not isinstance(tags, list | tuple) or not all(isinstance(tag, str) for tag in tags):
        msg = f"plugins.options.wandb.tags must be a list of strings: {tags!r:.60}"
        raise ConfigError(msg)
    if options.get("mode", "online") not in MODES:
        msg = (
            f"plugins.options.wandb.mode must be one of {', '.join(MODES)}: {options['mode']!r:.60}"
        )
        raise ConfigError(msg)


def _start_failure(err: Exception, mode: object) -> str:
    """What to do when W&B cannot start a run: log in, or log offline."""
    how = (
        "plugins.options.wandb.mode says 'online'"
        if mode == "online"
        else "WANDB_MODE and plugins.options.wandb.mode leave W&B online"
    )
    return (
        f"The 'wandb' logger cannot start a W&B run: {type(err).__name__}: {err} ({how}). "
        f"To log to W&B, log in first with `wandb login` (or set WANDB_API_KEY). To train "
        f"without an account or network, set WANDB_MODE=offline (upload later with `wandb "
        f'sync`), or plugins.options.wandb.mode = "offline" or "disabled"; or leave '
        f"wandb_project unset."
    )


def _new_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(12))


def _number(value: float) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None
