"""treadle's one cattrs converter: strict types, no extra keys, errors that name the key."""

from __future__ import annotations

import difflib
import json
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.v import format_exception, transform_error

from treadle.config.reading import check_values, read_config_file, shown
from treadle.errors import ConfigError

# read_config_file lives in treadle.config.reading; it stays importable from here
__all__ = ["read_config_file", "structure", "unstructure", "write_json"]

T = TypeVar("T")

_converter = cattrs.Converter(forbid_extra_keys=True)


def _strict_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"expected an integer, got {type(value).__name__} {shown(value)}"
        raise TypeError(msg)
    return value


def _strict_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"expected a number, got {type(value).__name__} {shown(value)}"
        raise TypeError(msg)
    return float(value)


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        msg = f"expected a string, got {type(value).__name__} {shown(value)}"
        raise TypeError(msg)
    return value


def _strict_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        msg = f"expected true or false, got {type(value).__name__} {shown(value)}"
        raise TypeError(msg)
    return value


# cattrs' defaults coerce ("3" -> 3, 3.7 -> 3, "no" -> True); a config must say what it means.
_converter.register_structure_hook(int, _strict_int)
_converter.register_structure_hook(float, _strict_float)
_converter.register_structure_hook(str, _strict_str)
_converter.register_structure_hook(bool, _strict_bool)
_converter.register_structure_hook(Path, lambda value, _: Path(_strict_str(value, str)))
_converter.register_unstructure_hook(Path, str)


def _structure_tuple(value: Any, type_: Any) -> tuple[Any, ...]:
    """A list (or tuple) as a tuple of the annotated item types. cattrs' own hook takes any
    iterable, so ``"console"`` would become ``("c", "o", ...)``; a config must say a list."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, list | tuple):
        msg = f"expected a list, got {type(value).__name__} {shown(value)}"
        raise TypeError(msg)
    arguments = typing.get_args(type_)
    if not arguments:
        return tuple(value)
    if len(arguments) == 2 and arguments[1] is Ellipsis:
        item_types = [arguments[0]] * len(value)
    elif len(arguments) != len(value):
        msg = f"expected a list of {len(arguments)} items, got {len(value)}: {shown(value)}"
        raise TypeError(msg)
    else:
        item_types = list(arguments)
    items, errors = [], []
    for index, (item, item_type) in enumerate(zip(value, item_types, strict=True)):
        try:
            items.append(_converter.structure(item, item_type))
        except Exception as err:  # gathered as cattrs does, each with its index
            err.__notes__ = [
                *getattr(err, "__notes__", []),
                IterableValidationNote(f"Structuring {type_} @ index {index}", index, item_type),
            ]
            errors.append(err)
    if errors:
        msg = f"While structuring {type_!r}"
        raise IterableValidationError(msg, errors, type_)
    return tuple(items)


def _is_tuple(type_: Any) -> bool:
    return typing.get_origin(type_) is tuple


_converter.register_structure_hook_func(_is_tuple, _structure_tuple)


def _describe(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, ForbiddenExtraKeysError):
        fields = [a.name for a in attrs.fields(exc.cl)] if attrs.has(exc.cl) else []
        parts = []
        for key in sorted(exc.extra_fields):
            close = difflib.get_close_matches(key, fields, n=1)
            parts.append(shown(key) + (f" (did you mean {close[0]!r}?)" if close else ""))
        return f"unknown field {', '.join(parts)}"
    if isinstance(exc, ValueError | TypeError) and str(exc):
        # keep the validator's own sentence ("'batch_size' must be >= 1: 0")
        return str(exc)
    return format_exception(exc, type_)


def structure(
    data: Any,
    cls: type[T],
    *,
    source: str | None = None,
    sources: Mapping[str, str] | None = None,
) -> T:
    """Build ``cls`` from plain data, raising one :class:`ConfigError` listing every problem,
    each with the field's path (``field 'plugins.disable[0]': expected a string``).

    :param source: where the data came from (a file name), for the message.
    :param sources: where each top-level field's value came from (``{"epochs": "file
        c.json"}``); a problem with such a field says ``(from file c.json)``.
    :raises ConfigError: the data is no mapping, nests deeper than
        :data:`~treadle.store_values.MAX_JSON_DEPTH` levels, holds NaN or an infinity, or does
        not fit ``cls``; :attr:`ConfigError.problems` holds one sentence per problem.
    """
    where = f"{source}: " if source else ""
    if not isinstance(data, Mapping) and attrs.has(cls):
        msg = f"{where}expected a mapping of fields for {cls.__name__}, got {type(data).__name__}"
        raise ConfigError(msg)
    try:
        check_values(data, source or f"invalid {cls.__name__}")
    except ConfigError as err:
        if not sources:
            raise
        fields = err.problem_fields[0] if err.problem_fields else ()
        (line,) = _annotated([(fields, str(err))], sources)
        error = ConfigError(line)
        error.problems, error.problem_fields = [line], err.problem_fields
        raise error from err
    try:
        return _converter.structure(data, cls)
    except ConfigError as err:
        problems = _annotated(_class_problems(err), sources)
        raise _problems_error(cls, where, problems) from err
    except (ClassValidationError, IterableValidationError) as err:
        problems = _annotated(_flatten(err), sources)
        raise _problems_error(cls, where, problems) from err


#: a problem: the top-level fields it is about (may be none), and its sentence
_Problem = tuple[tuple[str, ...], str]


def _problems_error(cls: type, where: str, problems: list[str]) -> ConfigError:
    if len(problems) == 1:
        msg = f"{where}invalid {cls.__name__}: {problems[0]}"
    else:
        msg = f"{where}invalid {cls.__name__} ({len(problems)} problems):\n  " + "\n  ".join(
            problems
        )
    error = ConfigError(msg)
    error.problems = problems
    return error


def _class_problems(err: ConfigError) -> list[_Problem]:
    """The problems a class's own validation raised (its cross-field checks)."""
    sentences = err.problems or [str(err)]
    fields = err.problem_fields or [()] * len(sentences)
    return list(zip(fields, sentences, strict=False))


def _annotated(problems: list[_Problem], sources: Mapping[str, str] | None) -> list[str]:
    """Each sentence, followed by where its fields' values came from (a file, a flag)."""
    lines = []
    for fields, sentence in problems:
        origins = {
            name: (sources or {}).get(name, "default")
            for name in fields
            if (sources or {}).get(name, "default") != "default"
        }
        if len(set(origins.values())) == 1:
            lines.append(f"{sentence} (from {next(iter(origins.values()))})")
        elif origins:
            named = "; ".join(f"{name} from {origin}" for name, origin in origins.items())
            lines.append(f"{sentence} ({named})")
        else:
            lines.append(sentence)
    return lines


def _flatten(err: BaseException) -> list[_Problem]:
    if not isinstance(err, BaseExceptionGroup):
        return [((), str(err))]
    # a ConfigError raised by the class itself (cross-field checks) carries its own sentences
    config_errors, rest = err.split(ConfigError)
    if config_errors is None:
        # split() rebuilds every group through derive(), which in cattrs 23 makes each a
        # ClassValidationError (a list's index was lost from the path): keep the original
        rest = err
    problems: list[_Problem] = []
    for leaf in _leaves(config_errors):
        if isinstance(leaf, ConfigError):
            problems.extend(_class_problems(leaf))
    if rest is not None:
        lines = transform_error(rest, format_exception=_describe)
        problems.extend(_in_words(line, rest) for line in lines)
    return problems


def _in_words(line: str, group: BaseExceptionGroup[BaseException]) -> _Problem:
    """cattrs' ``"expected an integer @ $.epochs"`` as ``"field 'epochs': expected an
    integer"``, with the top-level fields it is about."""
    message, separator, path = line.rpartition(" @ ")
    if not separator or not path.startswith("$"):
        return (), line
    field = path[1:].lstrip(".")
    if not field:
        return tuple(_extra_keys(group)), message
    field = re.sub(r"\['([^']*)'\]", r".\1", field)  # options['wandb'] as options.wandb
    top = re.match(r"[^.\[]+", field)
    return ((top.group(),) if top else ()), f"field '{field}': {message}"


def _extra_keys(group: BaseExceptionGroup[BaseException]) -> list[str]:
    """The unknown top-level keys a structuring error reports (to say where they came from)."""
    return [
        key
        for leaf in group.exceptions
        if isinstance(leaf, ForbiddenExtraKeysError)
        for key in sorted(leaf.extra_fields)
    ]


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


def write_json(data: Any, path: Path) -> None:
    """Write ``data`` as indented JSON, atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    temporary.replace(path)
