"""treadle's one cattrs converter: strict types, no extra keys, errors that name the key."""

from __future__ import annotations

import difflib
import json
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.v import format_exception, transform_error

from treadle.errors import ConfigError

__all__ = ["read_config_file", "structure", "unstructure", "write_json"]

T = TypeVar("T")

_converter = cattrs.Converter(forbid_extra_keys=True)


def _strict_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"expected an integer, got {type(value).__name__} {value!r}"
        raise TypeError(msg)
    return value


def _strict_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"expected a number, got {type(value).__name__} {value!r}"
        raise TypeError(msg)
    return float(value)


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        msg = f"expected a string, got {type(value).__name__} {value!r}"
        raise TypeError(msg)
    return value


def _strict_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        msg = f"expected true or false, got {type(value).__name__} {value!r}"
        raise TypeError(msg)
    return value


# cattrs' defaults coerce ("3" -> 3, 3.7 -> 3, "no" -> True); a config must say what it means.
_converter.register_structure_hook(int, _strict_int)
_converter.register_structure_hook(float, _strict_float)
_converter.register_structure_hook(str, _strict_str)
_converter.register_structure_hook(bool, _strict_bool)
_converter.register_structure_hook(Path, lambda value, _: Path(_strict_str(value, str)))
_converter.register_unstructure_hook(Path, str)


def _describe(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, ForbiddenExtraKeysError):
        fields = [a.name for a in attrs.fields(exc.cl)] if attrs.has(exc.cl) else []
        parts = []
        for key in sorted(exc.extra_fields):
            close = difflib.get_close_matches(key, fields, n=1)
            parts.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        return f"unknown field {', '.join(parts)}"
    if isinstance(exc, ValueError | TypeError) and str(exc):
        # keep the validator's own sentence ("'batch_size' must be >= 1: 0")
        return str(exc)
    return format_exception(exc, type_)


def structure(data: Any, cls: type[T], *, source: str | None = None) -> T:
    """Build ``cls`` from plain data, raising one :class:`ConfigError` listing every problem.

    :param source: where the data came from (a file name), for the message.
    """
    if not isinstance(data, Mapping) and attrs.has(cls):
        msg = f"{source or cls.__name__}: expected a mapping of fields, got {type(data).__name__}"
        raise ConfigError(msg)
    try:
        return _converter.structure(data, cls)
    except ConfigError as err:
        if source:
            problems = getattr(err, "problems", None) or [str(err)]
            msg = f"{source}: invalid {cls.__name__}:\n  " + "\n  ".join(problems)
            raise ConfigError(msg) from err
        raise
    except (ClassValidationError, IterableValidationError) as err:
        lines = _flatten(err)
        where = f"{source}: " if source else ""
        msg = f"{where}invalid {cls.__name__}:\n  " + "\n  ".join(lines)
        raise ConfigError(msg) from err


def _flatten(err: BaseException) -> list[str]:
    if not isinstance(err, BaseExceptionGroup):
        return [str(err)]
    # a ConfigError raised by the class itself (cross-field checks) carries its own sentences
    config_errors, rest = err.split(ConfigError)
    lines: list[str] = []
    for leaf in _leaves(config_errors):
        lines.extend(getattr(leaf, "problems", None) or [str(leaf)])
    if rest is not None:
        lines.extend(transform_error(rest, format_exception=_describe))
    return lines


def _leaves(group: BaseExceptionGroup[BaseException] | None) -> list[BaseException]:
    if group is None:
        return []
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_leaves(exc))
        else:
            found.append(exc)
    return found


def unstructure(obj: Any) -> Any:
    """Plain data (dicts, lists, str, numbers) for ``obj``."""
    return _converter.unstructure(obj)


def _reject_constant(name: str) -> float:
    msg = f"{name} is not a valid value (NaN and infinities are refused)"
    raise ValueError(msg)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            msg = f"duplicate key {key!r}"
            raise ValueError(msg)
        result[key] = value
    return result


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML config file strictly: duplicate keys, NaN and infinities refused.

    :raises ConfigError: the file is missing, unreadable or malformed; the message names it.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        msg = f"{path}: config file not found"
        raise ConfigError(msg) from None
    except (OSError, UnicodeDecodeError) as err:
        msg = f"{path}: cannot read config file: {err}"
        raise ConfigError(msg) from err
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(text)
            _reject_non_finite(data, path)
        else:
            data = json.loads(
                text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant
            )
    except (ValueError, tomllib.TOMLDecodeError) as err:
        msg = f"{path}: {err}"
        raise ConfigError(msg) from err
    if not isinstance(data, dict):
        msg = f"{path}: expected an object of fields at the top level, got {type(data).__name__}"
        raise ConfigError(msg)
    return data


def _reject_non_finite(data: Any, path: Path, where: str = "$") -> None:
    if isinstance(data, float) and not math.isfinite(data):
        msg = f"{path}: {data} at {where} is not a valid value (NaN and infinities are refused)"
        raise ConfigError(msg)
    if isinstance(data, dict):
        for key, value in data.items():
            _reject_non_finite(value, path, f"{where}.{key}")
    elif isinstance(data, list):
        for index, value in enumerate(data):
            _reject_non_finite(value, path, f"{where}[{index}]")


def write_json(data: Any, path: Path) -> None:
    """Write ``data`` as indented JSON, atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    temporary.replace(path)
