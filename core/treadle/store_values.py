"""The values a store keeps from a user: names, free text, JSON data and metrics, each checked
by one rule that every store path goes through (the facades, and again the shared SQL stores),
so a value one store takes, every store takes."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from treadle.errors import ConfigError

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "check_json",
    "check_name",
    "check_text",
    "decode_metrics",
    "encode_metrics",
]

#: How deeply JSON handed to a store may nest (``{"a": {"b": 1}}`` is 2 deep).
MAX_JSON_DEPTH = 64
#: How large JSON handed to a store may be, encoded as UTF-8.
MAX_JSON_BYTES = 4 * 2**20

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_name(value: object, what: str, *, max_length: int = 256) -> str:
    """``value`` as a name fit to store: a non-empty string of at most ``max_length``
    characters without control characters (NUL, newlines). Quotes, slashes, ``../`` and SQL
    are plain text to a store: kept verbatim.

    :raises ConfigError: naming ``what`` and the problem.
    """
    if not isinstance(value, str):
        msg = f"{what} must be a string: {value!r}"
        raise ConfigError(msg)
    if not value.strip():
        msg = f"{what} must not be empty or blank: {value!r}"
        raise ConfigError(msg)
    if len(value) > max_length:
        msg = f"{what} is {len(value)} characters long; at most {max_length} are allowed"
        raise ConfigError(msg)
    control = _CONTROL.search(value)
    if control:
        msg = (
            f"{what} {value[:60]!r} holds the control character {control.group()!r} at "
            f"position {control.start()}; use printable characters"
        )
        raise ConfigError(msg)
    return value


def check_text(value: object, what: str) -> str:
    """``value`` as free text fit for every store (notes, a hash, a folder): a string without
    NUL characters, which PostgreSQL's text cannot hold. Newlines and quotes are kept.

    :raises ConfigError: naming ``what`` and the problem.
    """
    if not isinstance(value, str):
        msg = f"{what} must be a string: {value!r:.60}"
        raise ConfigError(msg)
    position = value.find("\x00")
    if position >= 0:
        msg = (
            f"{what} holds a NUL character (\\x00) at position {position}, which stores "
            f"cannot keep as text; remove it"
        )
        raise ConfigError(msg)
    return value


_JSON_KINDS = "strings, finite numbers, booleans, null, lists and objects with string keys"


def check_json(value: object, what: str) -> dict[str, Any]:
    """``value`` as the JSON data a store keeps (a config, a summary, a job's config or
    result, a data profile), copied: a mapping with string keys whose values are strings,
    finite numbers, booleans, ``None``, lists (or tuples) and such mappings again, at most
    :data:`MAX_JSON_DEPTH` deep and :data:`MAX_JSON_BYTES` long as JSON. A ``Path`` becomes
    its text. Every store path goes through this one rule, so a value one store takes, every
    store takes.

    :param what: the value's name in messages (``config``, ``job config``).
    :raises ConfigError: naming the key (``config.optimizer.lr``) and what to fix.
    """
    if not isinstance(value, Mapping):
        msg = (
            f'{what} must be a mapping (a JSON object such as {{"key": 1}}), not '
            f"{type(value).__name__}: {value!r:.60}"
        )
        raise ConfigError(msg)
    data: dict[str, Any] = _json_value(value, what, 1)
    size = len(json.dumps(data, ensure_ascii=False).encode())
    if size > MAX_JSON_BYTES:
        msg = (
            f"{what} is {size / 2**20:.1f} MiB as JSON; a store keeps at most "
            f"{MAX_JSON_BYTES // 2**20} MiB (MAX_JSON_BYTES): keep large data in files and "
            f"store their paths"
        )
        raise ConfigError(msg)
    return data


def _json_value(value: object, path: str, depth: int) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            msg = f"{path} is {value}; JSON data holds finite numbers only: store a number or null"
            raise ConfigError(msg)
        return float(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping | list | tuple) and depth > MAX_JSON_DEPTH:
        msg = (
            f"{path} nests deeper than {MAX_JSON_DEPTH} levels (MAX_JSON_DEPTH); store flatter data"
        )
        raise ConfigError(msg)
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                msg = (
                    f"{path} has a key that is not a string: {key!r:.60} "
                    f"({type(key).__name__}); JSON object keys are strings: write {str(key)!r:.60}"
                )
                raise ConfigError(msg)
            result[key] = _json_value(item, f"{path}.{key}", depth + 1)
        return result
    if isinstance(value, list | tuple):
        return [_json_value(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    msg = (
        f"{path} holds a {type(value).__name__} ({value!r:.60}); store JSON data only: "
        f"{_JSON_KINDS}"
    )
    raise ConfigError(msg)


def encode_metrics(metrics: Mapping[str, Any], what: str = "metrics") -> dict[str, Any]:
    """Metrics as JSON-ready data: names checked, values floats, non-finite values as the
    strings ``"nan"``, ``"inf"``, ``"-inf"`` (strict JSON has none of them).

    :raises ConfigError: a name is not a valid name, or a value is not a number.
    """
    if not isinstance(metrics, Mapping):
        msg = f"{what} must be a mapping of names to numbers: {type(metrics).__name__}"
        raise ConfigError(msg)
    encoded: dict[str, Any] = {}
    for name, value in metrics.items():
        check_name(name, f"{what} name")
        if isinstance(value, bool) or not isinstance(value, int | float):
            try:
                number = float(value)  # numpy and 0-d torch numbers
            except (TypeError, ValueError):
                msg = f"{what} {name!r} must be a number: {value!r}"
                raise ConfigError(msg) from None
        else:
            number = float(value)
        encoded[name] = number if math.isfinite(number) else str(number)
    return encoded


def decode_metrics(data: Mapping[str, Any]) -> dict[str, float]:
    """The inverse of :func:`encode_metrics`."""
    return {str(name): float(value) for name, value in data.items()}
