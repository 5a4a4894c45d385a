"""Reading config text a user hands over (a file, ``--config``): JSON and TOML, strictly and
within the limits every store keeps, so no input ends in a RecursionError, a hang or a
memory blow-up."""

from __future__ import annotations

import json
import math
import re
import reprlib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from treadle.errors import ConfigError
from treadle.store_values import MAX_JSON_BYTES, MAX_JSON_DEPTH

__all__ = ["check_values", "parse_json", "parse_toml", "read_config_file", "shown"]

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 3


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` of at most about ``limit`` characters, whatever the size or depth of
    ``value``: messages stay short and building them never recurses deeply."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reject_constant(name: str) -> float:
    msg = f"{name} is not a valid value (NaN and infinities are refused)"
    raise ValueError(msg)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            msg = f"duplicate key {shown(key)}"
            raise ValueError(msg)
        result[key] = value
    return result


def _limit_error(source: str, size: int) -> ConfigError:
    msg = (
        f"{source} is {size / 2**20:.1f} MiB; config is read up to "
        f"{MAX_JSON_BYTES // 2**20} MiB (MAX_JSON_BYTES): keep large data in files and name "
        f"their paths in the config"
    )
    return ConfigError(msg)


def _depth_error(source: str, where: str) -> ConfigError:
    place = f" at {where}" if where else ""
    msg = (
        f"{source}: data nests deeper than {MAX_JSON_DEPTH} levels{place} "
        f"(MAX_JSON_DEPTH): write flatter data"
    )
    return ConfigError(msg)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def parse_json(text: str, source: str) -> Any:
    """``text`` read as strict JSON: duplicate keys, NaN and infinities refused, at most
    :data:`~treadle.store_values.MAX_JSON_BYTES` long and
    :data:`~treadle.store_values.MAX_JSON_DEPTH` levels deep.

    :param source: what the text is (a file name, a flag), for the message.
    :raises ConfigError: naming ``source``, and the line and column or the limit.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_JSON_BYTES:
        raise _limit_error(source, size)
    try:
        data = json.loads(
            text,
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
        )
    except RecursionError:
        # the parser's own recursion: deeper than any limit of ours
        raise _depth_error(source, "") from None
    except json.JSONDecodeError as err:
        msg = f"{source}: not JSON: {err}"
        raise ConfigError(msg) from err
    except ValueError as err:
        msg = f"{source}: {err}"
        raise ConfigError(msg) from err
    check_values(data, source)
    return data


def _parse_int(digits: str) -> int:
    try:
        return int(digits)
    except ValueError:
        msg = f"the integer {digits[:20]}\u2026 has {len(digits)} digits; such numbers are refused"
        raise ValueError(msg) from None


# A TOML key of N dotted parts nests N levels, and tomllib spends time and memory quadratic in
# N on it (measured: 2,000 parts 0.1 s, 100,000 parts killed for memory), so such keys are
# refused before parsing. Strings and comments are blanked first: dots in them are no keys.
_TOML_STRING_OR_COMMENT = re.compile(
    r'"""(?:[^"\\]|\\.|"(?!""))*"""|\'\'\'.*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*',
    re.DOTALL,
)
_TOML_LONG_DOTTED_KEY = re.compile(
    r'(?:[A-Za-z0-9_-]+|"")(?:[ \t]*\.[ \t]*(?:[A-Za-z0-9_-]+|"")){' + str(MAX_JSON_DEPTH) + ",}"
)


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """``text`` read as TOML, with the limits of :func:`parse_json`.

    :raises ConfigError: naming ``source``, and the line and column or the limit.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_JSON_BYTES:
        raise _limit_error(source, size)
    dotted = _TOML_LONG_DOTTED_KEY.search(_TOML_STRING_OR_COMMENT.sub('""', text))
    if dotted:
        raise _depth_error(source, f"the dotted key {_cut(dotted.group(), 40)}")
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise _depth_error(source, "") from None
    except ValueError as err:  # TOMLDecodeError is one
        msg = f"{source}: {err}"
        raise ConfigError(msg) from err
    check_values(data, source)
    return data


def check_values(data: Any, source: str) -> None:
    """Refuse data nesting deeper than :data:`~treadle.store_values.MAX_JSON_DEPTH` levels
    (``{"a": {"b": 1}}`` is 2) or holding NaN or an infinity. Walks without recursion, so any
    depth is safe to check, and spells a value's path only for the message.

    :raises ConfigError: naming ``source`` and the path of the value (``plugins.options.x``);
        its :attr:`~treadle.errors.ConfigError.problem_fields` holds the top-level key.
    """
    _check_scalar(data, None, source)
    # each entry: a container, its place as (parent place, key) links, and its depth (top: 0)
    stack: list[tuple[Any, _Place | None, int]] = []
    if isinstance(data, Mapping | list | tuple):
        stack.append((data, None, 0))
    while stack:
        container, place, depth = stack.pop()
        if depth >= MAX_JSON_DEPTH:
            raise _about(_depth_error(source, _spelled(place)), place)
        items = container.items() if isinstance(container, Mapping) else enumerate(container)
        for key, item in items:
            kind = type(item)  # most values need no further look: fast for big lists
            if kind in _PLAIN or (kind is float and math.isfinite(item)):
                continue
            if isinstance(item, Mapping | list | tuple):
                stack.append((item, (place, key), depth + 1))
            else:
                _check_scalar(item, (place, key), source)


#: Types a value may have that hold nothing to check.
_PLAIN = frozenset({str, int, bool, type(None)})


def _check_scalar(value: Any, place: _Place | None, source: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        where = _spelled(place) or "the value"
        error = ConfigError(f"{source}: {where} is {value}; NaN and infinities are refused")
        raise _about(error, place)


_Place = tuple[Any, object]


def _spelled(place: _Place | None) -> str:
    """``(((None, "a"), 0), "b")`` as ``a[0].b``, cut to 80 characters."""
    parts: list[str] = []
    while place is not None:
        place, key = place
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    return _cut("".join(reversed(parts)).lstrip("."), 80)


def _about(error: ConfigError, place: _Place | None) -> ConfigError:
    """``error`` with the top-level key of ``place`` as its field (to say who set it)."""
    top = None
    while place is not None:
        place, top = place
    if isinstance(top, str):
        error.problem_fields = [(top,)]
    return error


#: Suffixes read as YAML elsewhere; treadle refuses them with the reason (see read_config_file).
_YAML_SUFFIXES = (".yaml", ".yml")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML (``.toml``) config file strictly: duplicate keys, NaN and
    infinities refused, at most :data:`~treadle.store_values.MAX_JSON_BYTES` long and
    :data:`~treadle.store_values.MAX_JSON_DEPTH` levels deep. YAML is refused: its implicit
    types read ``no`` as false and ``1e-3`` as a string, and a config must say what it means.

    :raises ConfigError: the file is missing, unreadable, too large, too deep or malformed;
        the message names it and what to fix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _YAML_SUFFIXES:
        msg = (
            f"{path}: config files are read as JSON or TOML (.toml), not YAML (YAML reads "
            f"`no` as false and `1e-3` as a string); write the same fields as JSON or TOML"
        )
        raise ConfigError(msg)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_JSON_BYTES + 1)  # bounded: a huge file or /dev/zero is refused
    except FileNotFoundError:
        msg = f"{path}: config file not found"
        raise ConfigError(msg) from None
    except OSError as err:
        msg = f"{path}: cannot read config file: {err.strerror or err}"
        raise ConfigError(msg) from err
    if len(raw) > MAX_JSON_BYTES:
        msg = (
            f"{path} is larger than {MAX_JSON_BYTES // 2**20} MiB; config files are read up "
            f"to {MAX_JSON_BYTES // 2**20} MiB (MAX_JSON_BYTES): keep large data in files and "
            f"name their paths in the config"
        )
        raise ConfigError(msg)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        msg = (
            f"{path}: not UTF-8 text (byte {raw[err.start]:#04x} at byte offset {err.start}); "
            f"save the file as UTF-8"
        )
        raise ConfigError(msg) from err
    data: Any = parse_toml(text, str(path)) if suffix == ".toml" else parse_json(text, str(path))
    if not isinstance(data, dict):
        msg = f"{path}: expected an object of fields at the top level, got {type(data).__name__}"
        raise ConfigError(msg)
    return data
