"""Arguments several sub-commands share, and what they resolve to: the config-choosing flags of
``train`` and ``verify-resume``, a store's ``--location``, and a job's config."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from treadle.errors import ConfigError, StorageError
from treadle.run_setup import DEFAULT_PRESET, ResolvedConfig, resolve_config

__all__ = [
    "action_parser",
    "add_config_arguments",
    "add_location_argument",
    "forwarded_arguments",
    "read_job_config",
    "require_existing",
    "resolve_arguments",
    "split_names",
]

#: the named config flags, applied after ``--set``
_FIELD_FLAGS = ("epochs", "batch_size", "device")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments that choose a config: shared by ``train`` and ``verify-resume``."""
    parser.add_argument(
        "--preset", default=None, help=f"configuration preset (default: {DEFAULT_PRESET})"
    )
    parser.add_argument("--config", type=Path, help="JSON or TOML file of TrainingConfig fields")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help='override one field; VALUE is JSON (3, 0.1, true, "text", [1, 2]) or plain text',
    )
    parser.add_argument("--epochs", type=int, help="number of epochs")
    parser.add_argument("--batch-size", type=int, help="batch size")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 or auto (default: the config's)")


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def resolve_arguments(args: argparse.Namespace) -> ResolvedConfig:
    """The config :func:`add_config_arguments`' flags choose: the preset, then ``--config``,
    then ``--set``, then the named flags, each value's source named after its flag.

    :raises ConfigError: unknown preset or field, or invalid values; every problem listed.
    """
    return resolve_config(
        args.preset,
        args.config,
        args.overrides,
        {name: getattr(args, name) for name in _FIELD_FLAGS},
        override_label="flag --set",
        field_label=lambda name: f"flag {_flag(name)}",
    )


def forwarded_arguments(args: argparse.Namespace) -> list[str]:
    """The config-choosing arguments of ``args`` as ``treadle train`` flags."""
    forwarded: list[str] = []
    if args.preset:
        forwarded += ["--preset", args.preset]
    if args.config is not None:
        forwarded += ["--config", str(args.config)]
    for text in args.overrides:
        forwarded += ["--set", text]
    for name in _FIELD_FLAGS:
        value = getattr(args, name)
        if value is not None:
            forwarded += [_flag(name), str(value)]
    return forwarded


def add_location_argument(parser: argparse.ArgumentParser, *, top: bool, what: str) -> None:
    """``--location`` on the command and again on each action (so it may come after it)."""
    parser.add_argument(
        "--location",
        default="treadle.db" if top else argparse.SUPPRESS,
        help=f"{what}: a path or sqlite:///path (default: treadle.db)",
    )


def action_parser(actions: Any, name: str, help_text: str, what: str) -> argparse.ArgumentParser:
    """A sub-command action's parser, with its own ``--location`` of the store ``what``."""
    parser: argparse.ArgumentParser = actions.add_parser(
        name, help=help_text, description=help_text
    )
    add_location_argument(parser, top=False, what=what)
    return parser


def require_existing(location: str, what: str) -> None:
    """Refuse a plain path that does not exist: reading commands must not create an empty
    store at a mistyped location. URLs are left to their backend.

    :raises StorageError: naming the location.
    """
    if "://" not in location and not Path(location).exists():
        msg = (
            f"No {what} at {location}: nothing has been recorded there. Pass --location "
            f"with the file training wrote to (experiment_location / registry_location)."
        )
        raise StorageError(msg)


def split_names(text: str | None) -> list[str] | None:
    """``"a, b,c"`` as ``["a", "b", "c"]``; ``None`` stays ``None``."""
    if text is None:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def read_job_config(args: argparse.Namespace) -> dict[str, Any]:
    """A job's config from ``--config-file`` (JSON, or TOML when named ``.toml``), then
    ``--config`` (JSON). Its ``training_config`` is resolved as ``treadle train`` resolves
    ``--preset`` and ``--config`` (:func:`~treadle.run_setup.resolve_config`): the
    defaults, then ``--training-preset`` (default: quick_prototype), then the fields the
    config gives; the job stores the whole result. A config without ``training_config`` gets
    one only when ``--training-preset`` is given. Read by the config loader's rules
    (duplicate keys, NaN, nesting and size refused) and checked as JSON data a store keeps
    (:func:`treadle.store_values.check_json`) before any store is opened.

    :raises ConfigError: unreadable or malformed JSON, a limit passed, an unknown preset or
        ``training_config`` field, or a config that is no JSON object; naming the flag.
    """
    from treadle.config.reading import parse_json, read_config_file
    from treadle.store_values import check_json

    config: dict[str, Any] = {}
    if args.config_file is not None:
        config = read_config_file(args.config_file)
    if args.config is not None:
        given = parse_json(args.config, "--config")
        if not isinstance(given, dict):
            msg = (
                f"--config: the job config must be a JSON object such as "
                f"'{{\"seconds\": 1}}', not {_json_kind(given)}"
            )
            raise ConfigError(msg)
        config = {**config, **given}
    training = config.get("training_config")
    if training is not None or args.training_preset is not None:
        config["training_config"] = _resolve_training_config(args.training_preset, training)
    return check_json(config, "job config")


def _resolve_training_config(preset: str | None, training: object) -> dict[str, Any]:
    """The preset's fields under the config's ``training_config``, by ``treadle train``'s rule."""
    if training is None:
        training = {}
    if not isinstance(training, dict):
        msg = (
            f"--config: 'training_config' must be an object of TrainingConfig fields such as "
            f'{{"epochs": 1}}, not {_json_kind(training)}'
        )
        raise ConfigError(msg)
    resolved = resolve_config(
        preset,
        overrides=training,
        override_label="training_config",
        origin="job config 'training_config'",
    )
    return resolved.config.to_dict()


def _json_kind(value: object) -> str:
    kinds = {str: "a string", list: "a list", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")
