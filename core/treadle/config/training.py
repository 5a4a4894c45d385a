"""TrainingConfig: every setting of a run, frozen, validated as a whole, saved as JSON."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from treadle.config.convert import read_config_file, structure, unstructure, write_json
from treadle.config.reading import shown
from treadle.errors import ConfigError

__all__ = ["PRECISIONS", "STRATEGIES", "PluginsConfig", "TrainingConfig"]

Check = Callable[[str, Any], str | None]

PRECISIONS = ("auto", "32-true", "16-mixed", "bf16-mixed")
STRATEGIES = ("auto", "ddp", "fsdp")
SCHEDULERS = ("linear", "cosine", "constant")
OPTIMIZERS = ("adamw", "sgd")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
CRITICAL_ACTIONS = ("warn", "skip", "stop")


def _finite(name: str, value: Any) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name!r} must be a finite number: {value}"
    return None


def _positive(name: str, value: Any) -> str | None:
    return _finite(name, value) or (None if value > 0 else f"{name!r} must be > 0: {value}")


def _at_least(minimum: int | float) -> Check:
    def check(name: str, value: Any) -> str | None:
        if value is None:
            return None
        return _finite(name, value) or (
            None if value >= minimum else f"{name!r} must be >= {minimum}: {value}"
        )

    return check


def _fraction(low_open: bool = False, high_open: bool = True) -> Check:
    def check(name: str, value: Any) -> str | None:
        too_low = value <= 0 if low_open else value < 0
        too_high = value >= 1 if high_open else value > 1
        if _finite(name, value) or too_low or too_high:
            interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
            return f"{name!r} must lie in {interval}: {value}"
        return None

    return check


def _one_of(choices: tuple[str, ...]) -> Check:
    def check(name: str, value: Any) -> str | None:
        if value is None or value in choices:
            return None
        return f"{name!r} must be one of {', '.join(map(repr, choices))}: {shown(value)}"

    return check


#: letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit: a run's name is
#: the name of its folder under ``checkpoint_dir``, so no separators, ``..``, NUL or spaces
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_RUN_NAME_LENGTH = 100


def _run_name(name: str, value: Any) -> str | None:
    if value is None or (len(value) <= MAX_RUN_NAME_LENGTH and _RUN_NAME.fullmatch(value)):
        return None
    shown = repr(value) if len(value) <= 60 else f"{value[:40]!r}... ({len(value)} characters)"
    return (
        f"{name!r} must be 1 to {MAX_RUN_NAME_LENGTH} letters, digits, '.', '_' or '-', starting "
        f"with a letter or digit (it names the run's folder under checkpoint_dir): {shown}"
    )


def _optional_positive(name: str, value: Any) -> str | None:
    return None if value is None else _positive(name, value)


def _names(name: str, value: Any) -> str | None:
    bad = [item for item in value if not item or item != item.strip()]
    return f"{name!r} holds empty or padded names: {shown(bad)}" if bad else None


def _field(default: Any, check: Check | None = None, *, factory: bool = False) -> Any:
    metadata = {"check": check} if check else {}
    if factory:
        return attrs.field(factory=default, metadata=metadata)
    return attrs.field(default=default, metadata=metadata)


@attrs.frozen(kw_only=True)
class PluginsConfig:
    """Which plugins a run uses.

    :ivar disable: plugin names not to load (as ``TREADLE_DISABLE_PLUGINS``).
    :ivar require: requirements such as ``"treadle-focal>=0.2"`` that must be installed, or
        the run fails before training.
    :ivar options: per-plugin options, ``{"wandb": {"entity": "acme"}}``.
    """

    disable: tuple[str, ...] = _field((), _names)
    require: tuple[str, ...] = _field((), _names)
    options: dict[str, dict[str, Any]] = _field(dict, factory=True)

    def options_for(self, plugin: str, known: Collection[str]) -> dict[str, Any]:
        """A copy of ``options[plugin]`` (empty when unset), every key among ``known``.

        :raises ConfigError: an unknown key; the message lists the known ones.
        """
        options = dict(self.options.get(plugin, {}))
        unknown = sorted(set(options) - set(known))
        if unknown:
            msg = (
                f"plugins.options.{plugin}: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
            raise ConfigError(msg)
        return options


def _plugins_config(value: Any) -> Any:
    """``plugins`` given as a mapping (``{"disable": ["wandb"]}``), as a config file writes
    it, becomes a :class:`PluginsConfig`; anything else is left for validation to name."""
    if isinstance(value, Mapping):
        return structure(value, PluginsConfig, source="'plugins'")
    return value


@attrs.frozen(kw_only=True)
class TrainingConfig:
    """Complete, validated configuration of a training run.

    Construction checks every field and every combination and raises one
    :class:`~treadle.errors.ConfigError` (a ``ValueError``) listing each problem found. Build
    variants with :class:`TrainingConfigBuilder` or ``attrs.evolve(config, epochs=3)``.
    """

    # Reproducibility
    random_seed: int = _field(42, _at_least(0))
    deterministic: bool = False

    # Hyperparameters
    learning_rate: float = _field(5e-5, _positive)
    batch_size: int = _field(4, _at_least(1))
    epochs: int = _field(10, _at_least(1))
    warmup_ratio: float = _field(0.1, _fraction())
    weight_decay: float = _field(0.01, _at_least(0.0))
    max_grad_norm: float | None = _field(1.0, _optional_positive)
    validation_split: float = _field(0.1, _fraction(low_open=True))

    # Optimizer and schedule
    optimizer: str = _field("adamw", _one_of(OPTIMIZERS))
    scheduler: str = _field("linear", _one_of(SCHEDULERS))
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_epsilon: float = _field(1e-8, _positive)

    # Features
    use_amp: bool = False
    gradient_accumulation_steps: int = _field(1, _at_least(1))
    early_stopping_patience: int | None = _field(5, _at_least(1))
    early_stopping_min_delta: float = _field(0.0, _at_least(0.0))
    monitor_metric: str = "val_loss"
    monitor_mode: str = _field("min", _one_of(("min", "max")))

    # Gradient health
    gradient_check_interval: int = _field(10, _at_least(1))
    gradient_norm_warning: float = _field(10.0, _positive)
    gradient_norm_critical: float = _field(100.0, _positive)
    gradient_critical_action: str = _field("warn", _one_of(CRITICAL_ACTIONS))

    # Hardware
    device: str = "auto"
    precision: str = _field("auto", _one_of(PRECISIONS))
    compile_mode: str | None = _field(None, _one_of(COMPILE_MODES))
    devices: int = _field(1, _at_least(1))
    strategy: str = _field("auto", _one_of(STRATEGIES))
    num_workers: int = _field(0, _at_least(0))

    # Checkpointing
    checkpoint_dir: str = "./checkpoints"
    save_every_n_epochs: int = _field(1, _at_least(1))
    save_every_n_steps: int | None = _field(None, _at_least(1))
    save_every_minutes: float | None = _field(None, _optional_positive)
    keep_best_k: int = _field(3, _at_least(0))
    keep_last_n: int = _field(5, _at_least(0))
    async_checkpointing: bool = False
    resume: str | None = None
    #: SIGINT and SIGTERM during ``Trainer.train`` save at the next optimizer step and stop;
    #: ``False`` leaves the process's signal handlers alone (an application handling them)
    handle_signals: bool = True

    # Experiment tracking
    wandb_project: str | None = None
    run_name: str | None = _field(None, _run_name)
    notes: str = ""
    loggers: tuple[str, ...] = _field(("console", "jsonl"), _names)
    log_every_n_steps: int = _field(10, _at_least(1))
    #: a progress bar on stderr when it is a terminal, a plain line every 10 s through logging
    #: when it is not; ``False`` shows neither (Lightning's ``enable_progress_bar``)
    progress_bar: bool = True
    experiment_location: str | None = "treadle.db"
    registry_location: str = "treadle.db"
    export_formats: tuple[str, ...] = _field((), _names)

    # Model
    model_type: str = "tiny_gpt"
    model_name: str = "treadle-gpt"
    vocab_size: int = _field(50257, _at_least(2))
    max_seq_len: int = _field(128, _at_least(1))
    d_model: int = _field(768, _at_least(1))
    num_layers: int = _field(12, _at_least(1))
    num_heads: int = _field(12, _at_least(1))
    d_ff: int = _field(3072, _at_least(1))
    dropout: float = _field(0.1, _fraction())

    # Data
    task: str = "language_modeling"
    dataset: str = "pydoc_topics"
    #: use only the first N training / validation samples (smoke tests, quick checks)
    max_train_samples: int | None = _field(None, _at_least(1))
    max_val_samples: int | None = _field(None, _at_least(1))

    plugins: PluginsConfig = attrs.field(factory=PluginsConfig, converter=_plugins_config)

    def __attrs_post_init__(self) -> None:
        self.validate()

    def problems(self) -> list[str]:
        """Every problem with this configuration, one sentence each (empty when valid).

        Model sizes (``d_model``, ``num_heads``, ...) are checked here only one by one; whether
        they fit together is for the factory of ``model_type`` to say, which builds the model.
        """
        return [sentence for _, sentence in self._problems()]

    def _problems(self) -> list[tuple[tuple[str, ...], str]]:
        found: list[tuple[tuple[str, ...], str]] = [
            ((name,), sentence) for name, sentence in _field_problems(self)
        ]
        if isinstance(self.plugins, PluginsConfig):
            found += [
                (("plugins",), sentence)
                for _, sentence in _field_problems(self.plugins, prefix="plugins.")
            ]
        if not found:
            found += self._cross_field_problems()
        return found

    def _cross_field_problems(self) -> list[tuple[tuple[str, ...], str]]:
        found: list[tuple[tuple[str, ...], str]] = []
        if self.gradient_norm_critical < self.gradient_norm_warning:
            found.append(
                (
                    ("gradient_norm_critical", "gradient_norm_warning"),
                    f"'gradient_norm_critical' ({self.gradient_norm_critical}) must be >= "
                    f"'gradient_norm_warning' ({self.gradient_norm_warning})",
                )
            )
        if self.keep_best_k == 0 and self.keep_last_n == 0:
            found.append(
                (
                    ("keep_best_k", "keep_last_n"),
                    "'keep_best_k' and 'keep_last_n' are both 0, so every checkpoint would be "
                    "deleted; keep at least one",
                )
            )
        if self.strategy in ("ddp", "fsdp") and self.devices < 2:
            found.append(
                (
                    ("strategy", "devices"),
                    f"'strategy' {self.strategy!r} needs 'devices' >= 2: {self.devices}",
                )
            )
        if not (0 < self.adam_betas[0] < 1 and 0 < self.adam_betas[1] < 1):
            found.append(
                (("adam_betas",), f"'adam_betas' must both lie in (0, 1): {self.adam_betas}")
            )
        return found

    def validate(self) -> None:
        """Check every field and combination.

        :raises ConfigError: a ``ValueError`` whose message lists every problem found;
            :attr:`~treadle.errors.ConfigError.problem_fields` names each problem's fields.
        """
        found = self._problems()
        if found:
            sentences = [sentence for _, sentence in found]
            msg = f"invalid TrainingConfig ({len(found)} problems):\n  " + "\n  ".join(sentences)
            if len(found) == 1:
                msg = f"invalid TrainingConfig: {sentences[0]}"
            error = ConfigError(msg)
            error.problems = sentences
            error.problem_fields = [fields for fields, _ in found]
            raise error

    @property
    def effective_batch_size(self) -> int:
        """Samples per optimizer step: batch size x accumulation steps x devices."""
        return self.batch_size * self.gradient_accumulation_steps * self.devices

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; ``TrainingConfig.from_dict(config.to_dict()) == config``."""
        data: dict[str, Any] = unstructure(self)
        return data

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        source: str | None = None,
        sources: Mapping[str, str] | None = None,
    ) -> TrainingConfig:
        """Build from plain data.

        :param source: where the data came from (a file name), for messages.
        :param sources: where each field's value came from (``{"epochs": "file c.json"}``),
            named in the message beside each problem.
        :raises ConfigError: unknown keys (with the closest valid name), wrong types (with the
            field's path) and invalid values, all listed at once.
        """
        return structure(data, cls, source=source, sources=sources)

    def save(self, path: str | Path | None = None) -> Path:
        """Write the config as JSON and return the path.

        :param path: where to write; default ``training_config_<UTC timestamp>.json`` in the
            current folder.
        """
        if path is None:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            path = f"training_config_{stamp}.json"
        target = Path(path)
        write_json(self.to_dict(), target)
        return target

    @classmethod
    def load(cls, path: str | Path) -> TrainingConfig:
        """Read a config saved with :meth:`save` (JSON) or written by hand (JSON or TOML).

        :raises ConfigError: naming the file and every problem in it.
        """
        return cls.from_dict(read_config_file(path), source=str(path))

    def config_hash(self) -> str:
        """SHA-256 of the canonical JSON of this config (stable across runs and machines)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _type_problem(name: str, value: Any, expected: Any) -> str | None:
    """A sentence when ``value`` is not of the annotated type (scalars, optionals, tuples)."""
    options = typing.get_args(expected) if isinstance(expected, types.UnionType) else (expected,)
    for option in options:
        origin = typing.get_origin(option) or option
        if option is type(None):
            if value is None:
                return None
        elif origin is tuple and isinstance(value, tuple):
            item_types = typing.get_args(option)
            item_type = item_types[0] if item_types else object
            if all(_type_problem(name, item, item_type) is None for item in value):
                return None
        elif origin is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return None
        elif origin is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return None
        elif isinstance(origin, type) and isinstance(value, origin):
            return None
    wanted = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    return f"{name!r} must be {wanted}, got {type(value).__name__}: {shown(value)}"


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _field_problems(instance: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``(field name, sentence)`` for each field of ``instance`` of the wrong type or value."""
    found = []
    hints = _type_hints(type(instance))  # type: ignore[arg-type]  # classes hash
    for field in attrs.fields(type(instance)):
        name = prefix + field.name
        value = getattr(instance, field.name)
        problem = _type_problem(name, value, hints[field.name])
        check = field.metadata.get("check")
        if problem is None and check is not None:
            problem = check(name, value)
        if problem:
            found.append((field.name, problem))
    return found
