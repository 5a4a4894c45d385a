"""Run assembly: a training config resolved from a preset, a file and overrides, and the task,
model and data it names, ready for a :class:`~treadle.engine.trainer.Trainer`.

``treadle train``, the ``training`` / ``retraining`` job types and library code all build a
run through here, so a job in the queue runs exactly the command line's main job::

    from treadle.plugins import get_plugin_manager
    from treadle.run_setup import build_run_setup, resolve_config

    resolved = resolve_config("quick_prototype", overrides={"epochs": 1})
    setup = build_run_setup(resolved.config, get_plugin_manager())
    results = setup.make_trainer(get_plugin_manager()).train(setup.train_data, setup.val_data)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from treadle.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from treadle.config import TrainingConfig
    from treadle.engine.trainer import Trainer
    from treadle.plugins import PluginManager
    from treadle.task import TaskSpec

__all__ = [
    "DEFAULT_PRESET",
    "ResolvedConfig",
    "RunSetup",
    "build_run_setup",
    "next_run_dir",
    "parse_override",
    "run_folder_base",
    "resolve_config",
]

DEFAULT_PRESET = "quick_prototype"


@attrs.frozen
class ResolvedConfig:
    """A config and, for each field, where its value came from: ``default``, ``preset NAME``,
    ``file PATH``, or the label of the overrides or named field that set it."""

    config: TrainingConfig
    sources: Mapping[str, str]


def parse_override(text: str, label: str = "override") -> tuple[str, Any]:
    """``"KEY=VALUE"`` as ``(key, value)``: VALUE is read as JSON (``3``, ``0.1``, ``true``,
    ``"text"``, ``[1, 2]`` as a tuple) or, failing that, kept as plain text.

    :param label: what error messages call the text (``flag --set``).
    :raises ConfigError: no ``=`` or no key, or a NaN or infinite number.
    """
    key, separator, raw = text.partition("=")
    key = key.strip()
    if not separator or not key:
        msg = f"{label} {text!r}: expected KEY=VALUE, e.g. learning_rate=3e-4"
        raise ConfigError(msg)
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):  # nested past the parser's depth: text
        value = raw
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, float) and not math.isfinite(value):
        msg = f"{label} {key}: NaN and infinities are refused"
        raise ConfigError(msg)
    return key, value


def _field_label(name: str) -> str:
    return f"field {name}"


def resolve_config(
    preset: str | None = None,
    config_file: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
    fields: Mapping[str, Any] | None = None,
    *,
    override_label: str = "override",
    field_label: Callable[[str], str] = _field_label,
    origin: str | None = None,
) -> ResolvedConfig:
    """Layer a config: the defaults, then the preset, then the file, then the overrides, then
    the named fields; later layers win.

    :param preset: a preset of :data:`treadle.config.PRESETS`; ``None`` is
        :data:`DEFAULT_PRESET`.
    :param config_file: a JSON or TOML file of TrainingConfig fields.
    :param overrides: field values, as a mapping or as ``"KEY=VALUE"`` texts
        (:func:`parse_override`).
    :param fields: field values applied last; ``None`` values are left out (so optional
        command-line flags can be passed as they are).
    :param override_label: how :attr:`ResolvedConfig.sources` names the overrides
        (``treadle train`` says ``flag --set``).
    :param field_label: how it names a field set through ``fields``, given the field's name.
    :param origin: what error messages call the config (``treadle train``).
    :raises ConfigError: unknown preset or field, or invalid values; every problem listed.
    """
    from treadle.config import PRESETS, TrainingConfig
    from treadle.config.convert import read_config_file

    preset = preset or DEFAULT_PRESET
    if preset not in PRESETS:
        msg = f"Unknown preset {preset!r}. Presets: {', '.join(PRESETS)}."
        raise ConfigError(msg)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def layer(data: Mapping[str, Any], source: str) -> None:
        for key, value in data.items():
            values[key] = value
            sources[key] = source

    layer(PRESETS[preset], f"preset {preset}")
    if config_file is not None:
        layer(read_config_file(Path(config_file)), f"file {config_file}")
    if isinstance(overrides, Mapping):
        layer(overrides, override_label)
    else:
        parsed = dict(parse_override(text, override_label) for text in overrides)
        layer(parsed, override_label)
    for key, value in (fields or {}).items():
        if value is not None:
            layer({key: value}, field_label(key))
    base = TrainingConfig().to_dict()
    _nest_plugin_options(values, sources, base)
    config = TrainingConfig.from_dict({**base, **values}, source=origin, sources=sources)
    all_sources = {name: sources.get(name, "default") for name in base}
    return ResolvedConfig(config, all_sources)


def _nest_plugin_options(
    values: dict[str, Any], sources: dict[str, str], base: Mapping[str, Any]
) -> None:
    """Move dotted keys into plugin options: ``hf.model=gpt2`` (or the long form
    ``plugins.options.hf.model=gpt2``) sets ``plugins.options["hf"]["model"]``, on top of the
    options the other layers gave."""
    dotted = [key for key in values if "." in key]
    if not dotted:
        return
    plugins = dict(values.get("plugins", base["plugins"]))
    options = {name: dict(table) for name, table in dict(plugins.get("options", {})).items()}
    for key in dotted:
        path = key.removeprefix("plugins.options.")
        name, _, option = path.partition(".")
        if not name or not option:
            msg = f"{sources[key]} {key}: expected PLUGIN.OPTION=VALUE, e.g. hf.model=gpt2"
            raise ConfigError(msg)
        options.setdefault(name, {})[option] = values.pop(key)
        sources["plugins"] = sources.pop(key)
    plugins["options"] = options
    values["plugins"] = plugins


@attrs.frozen
class RunSetup:
    """What a training run is made of besides the Trainer: the config, its task, the model
    (from the model registry) and the training and validation data (from the data module).

    :ivar model_config: the model's architecture fields (``model_type``, ``d_model``, ...),
        the spec's ``config`` argument of the Trainer.
    """

    config: TrainingConfig
    task_spec: TaskSpec
    model: torch.nn.Module
    model_config: Any
    train_data: Any
    val_data: Any

    def make_trainer(
        self, plugin_manager: PluginManager, *, hooks: object = None, profile_hooks: bool = False
    ) -> Trainer:
        """A Trainer for this run, on the config's device, with ``plugin_manager``'s plugins.

        :param hooks: the spec's duck-typed ``hooks=`` object, bound to this run only.
        :param profile_hooks: time each hook implementation (``results["hook_profile"]``).
        """
        from treadle.engine.trainer import Trainer

        return Trainer(
            model=self.model,
            config=self.model_config,
            training_config=self.config,
            task_spec=self.task_spec,
            hooks=hooks,
            device=self.config.device,
            plugin_manager=plugin_manager,
            profile_hooks=profile_hooks,
        )


def build_run_setup(config: TrainingConfig, plugin_manager: PluginManager) -> RunSetup:
    """The task, model (from the model registry) and data (from the data module) for
    ``config``: ``config.dataset`` split by ``config.validation_split``, cut to
    ``max_train_samples`` / ``max_val_samples`` when set. The model's initial weights depend
    only on ``config.random_seed``, not on what ran before in the process.

    :raises UnknownNameError: the model type or data set is not registered.
    """
    import types

    import torch

    from treadle.data import UniversalDataModule

    module = UniversalDataModule.from_training_config(config, plugin_manager=plugin_manager)
    task_spec = module.task_spec
    # the module has already cut the split to max_train_samples / max_val_samples
    train_data, val_data = module.train_dataset(), module.val_dataset()
    torch.manual_seed(config.random_seed)
    factory = plugin_manager.registry("models").get(config.model_type)
    model = factory(config, task_spec)
    model_config = types.SimpleNamespace(
        model_type=config.model_type,
        vocab_size=config.vocab_size,
        d_model=config.d_model,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        d_ff=config.d_ff,
        max_seq_len=config.max_seq_len,
        dropout=config.dropout,
    )
    return RunSetup(config, task_spec, model, model_config, train_data, val_data)


def run_folder_base(root: str | os.PathLike[str], run_name: str) -> Path:
    """The first folder of the runs named ``run_name`` under ``root`` (``root/run_name``; the
    next ones are ``run_name-2``, ``-3``, ...), checked to lie inside ``root``.

    :raises ConfigError: ``run_name`` is not one path component inside ``root`` (``..``, a
        separator, an absolute path, NUL): :class:`~treadle.config.TrainingConfig` refuses
        such names already; this guards every other caller.
    """
    if not isinstance(run_name, str) or "\x00" in run_name or "\x00" in os.fspath(root):
        msg = f"run name {run_name!r} or folder {os.fspath(root)!r} holds a NUL byte"
        raise ConfigError(msg)
    top = Path(os.path.abspath(root))
    base = Path(os.path.abspath(top / run_name))
    if base.parent != top or base.name != run_name:
        msg = (
            f"run name {run_name!r} does not name one folder inside {top}; use letters, "
            "digits, '.', '_' and '-'"
        )
        raise ConfigError(msg)
    return base


def next_run_dir(root: str | os.PathLike[str], run_name: str, resume: bool) -> Path:
    """The folder a run named ``run_name`` under ``root`` would take now, as ``treadle
    train`` does: ``root/run_name`` or ``run_name-2``, ``-3``...; the newest one holding a run
    to resume, else the first holding none. Nothing is created or claimed: the
    :class:`~treadle.engine.trainer.Trainer` claims its folder itself, under a lock, when it
    starts (another process may take this one first; the run then takes the next).

    :raises ConfigError: ``resume`` and no such run exists, 999 runs of the name exist, or the
        name would leave ``root``.
    """
    from treadle.engine.checkpoints.run_folder import find_run_folder, folder_series, holds_run

    base = run_folder_base(root, run_name)
    if resume:
        found = find_run_folder(base)
        if found is None:
            msg = f"no run named {run_name!r} under {base.parent} to resume"
            raise ConfigError(msg)
        return found
    for path in folder_series(base):
        if not (path.exists() and (not path.is_dir() or holds_run(path))):
            return path
    msg = f"{base.parent} holds 999 runs named {run_name!r}; choose another run_name"
    raise ConfigError(msg)
