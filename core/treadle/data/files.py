"""Reading data files into records: .jsonl, .json, .csv, .tsv, .txt and .parquet.

Every record keeps where it came from (``data.jsonl:12``), so later checks can name the file
and line. A file is read and checked whole before any record is returned: a malformed line,
a bad encoding or an empty file raises :class:`~treadle.errors.DataError`, never a partial
result.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import logging
import os
import stat
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from treadle.errors import DataError

__all__ = ["SUFFIXES", "Record", "path_exists", "read_records", "user_path"]

logger = logging.getLogger(__name__)

#: File suffixes :func:`read_records` reads (``.parquet`` needs pyarrow).
SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".txt", ".parquet")


def user_path(path: str | os.PathLike[str]) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded (left as it is when that user does
    not exist: ``Path.expanduser`` raises ``RuntimeError`` there)."""
    return Path(os.path.expanduser(os.fspath(path)))


def path_exists(path: Path) -> bool:
    """Whether ``path`` exists; ``False`` for names no file can have (a NUL byte, too long),
    where ``Path.exists`` raises."""
    return os.path.exists(path)


@attrs.frozen
class Record:
    """One row of a data set and where it came from.

    :ivar location: the file and line (``data.jsonl:12``), or item (``data.json [item 3]``).
    :ivar values: the row's fields by column name.
    """

    location: str
    values: Mapping[str, Any]


def read_records(path: str | Path, *, text_column: str = "text") -> list[Record]:
    """Every record of a data file, checked.

    ``.jsonl``/``.ndjson``: one JSON object per line (blank lines skipped). ``.json``: a list
    of objects, an object of equally long column lists (``{"text": [...], "label": [...]}``),
    or an object whose one list holds the objects (``{"data": [...]}``). ``.csv``/``.tsv``: a
    header row, then rows of as many fields. ``.txt``: each non-blank line is one record whose
    text is in ``text_column``. ``.parquet``: the table's rows (needs pyarrow). Text files
    must be UTF-8 (a byte-order mark is allowed).

    :raises DataError: the file is missing or cannot be opened (naming the system's reason),
        empty, of an unknown kind, not UTF-8 (naming the byte offset and line), or malformed
        or beyond what Python's JSON parser reads (naming the line, and the column where
        known).
    """
    file = user_path(path)
    try:
        status = file.stat()
    except FileNotFoundError:
        msg = f"data file not found: {file} (working directory: {Path.cwd()})"
        raise DataError(msg) from None
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the name
        msg = f"data file {str(file)!r} cannot be opened: {_reason(err)}"
        raise DataError(msg) from None
    if not stat.S_ISREG(status.st_mode):  # a folder, a FIFO, a device
        msg = f"{file} is not a file; give a data file ({', '.join(SUFFIXES)})"
        raise DataError(msg)
    suffix = file.suffix.lower()
    if suffix not in SUFFIXES:
        msg = (
            f"{file}: unknown data file type {suffix or '(no suffix)'!r}; treadle reads "
            f"{', '.join(SUFFIXES)}"
        )
        raise DataError(msg)
    if status.st_size == 0:
        msg = f"{file}: the file is empty (0 bytes); it must hold at least one record"
        raise DataError(msg)
    if suffix == ".parquet":
        records = _read_parquet(file)
    else:
        text = _read_utf8(file)
        if suffix in (".jsonl", ".ndjson"):
            records = _read_jsonl(file, text)
        elif suffix == ".json":
            records = _read_json(file, text)
        elif suffix in (".csv", ".tsv"):
            records = _read_csv(file, text, delimiter="\t" if suffix == ".tsv" else ",")
        else:
            records = _read_txt(file, text, text_column)
    if not records:
        msg = f"{file}: holds no records (only blank lines or an empty table)"
        raise DataError(msg)
    logger.debug("read %d records from %s", len(records), file)
    return records


def _read_utf8(file: Path) -> str:
    try:
        data = file.read_bytes()
    except OSError as err:
        msg = f"{file}: cannot be read: {_reason(err)}"
        raise DataError(msg) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        offset = err.start
        line = data.count(b"\n", 0, offset) + 1
        column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
        msg = (
            f"{file}: not valid UTF-8 at byte offset {offset} (line {line}, column {column}): "
            f"byte {data[offset : offset + 1]!r} ({err.reason}). The file is probably in another "
            f"encoding such as cp1252 or latin-1; re-save it as UTF-8, e.g. "
            f"iconv -f cp1252 -t utf-8 {file.name} > {file.stem}.utf8{file.suffix}"
        )
        raise DataError(msg) from None
    return text.removeprefix("\ufeff")


def _lines(text: str) -> list[str]:
    # split on "\n" only: str.splitlines() would also split on U+2028 inside JSON strings
    return [line.removesuffix("\r") for line in text.split("\n")]


def _read_jsonl(file: Path, text: str) -> list[Record]:
    records = []
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            msg = (
                f"{file}:{number}: malformed JSON line ({err.msg} at column {err.colno}); each "
                f"line must hold one JSON object"
            )
            raise DataError(msg) from None
        except (ValueError, RecursionError) as err:
            _, column, what, fix = _beyond_json_limits(line, err)
            raise DataError(f"{file}:{number}: {what} at column {column}; {fix}") from None
        if not isinstance(value, dict):
            msg = (
                f"{file}:{number}: expected a JSON object on each line, found "
                f"{type(value).__name__} {_clip(value)}"
            )
            raise DataError(msg)
        records.append(Record(f"{file}:{number}", value))
    return records


def _read_json(file: Path, text: str) -> list[Record]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        msg = (
            f"{file}:{err.lineno}: malformed JSON ({err.msg} at line {err.lineno}, column "
            f"{err.colno})"
        )
        raise DataError(msg) from None
    except (ValueError, RecursionError) as err:
        line, column, what, fix = _beyond_json_limits(text, err)
        msg = f"{file}:{line}: {what} at line {line}, column {column}; {fix}"
        raise DataError(msg) from None
    rows = _json_rows(file, value)
    records = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            msg = (
                f"{file} [item {index}]: expected a JSON object, found {type(row).__name__} "
                f"{_clip(row)}"
            )
            raise DataError(msg)
        records.append(Record(f"{file} [item {index}]", row))
    return records


def _json_rows(file: Path, value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
        lengths = {name: len(column) for name, column in value.items()}
        if len(set(lengths.values())) != 1:
            msg = (
                f"{file}: the JSON object's column lists differ in length "
                f"({', '.join(f'{name}: {length}' for name, length in lengths.items())})"
            )
            raise DataError(msg)
        columns = list(value.values())
        if len(columns) == 1 and all(isinstance(item, dict) for item in columns[0]):
            return list(columns[0])  # {"data": [{...}, ...]}
        names = list(value)
        return [{name: value[name][index] for name in names} for index in range(len(columns[0]))]
    msg = (
        f"{file}: expected a JSON list of objects, an object of column lists, or an object "
        f"holding one list of objects; found {type(value).__name__}"
    )
    raise DataError(msg)


def _read_csv(file: Path, text: str, delimiter: str) -> list[Record]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    kind = "TSV" if delimiter == "\t" else "CSV"
    records = []
    header: list[str] | None = None
    line = 0
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            msg = f"{file}:{reader.line_num}: malformed {kind} ({err})"
            raise DataError(msg) from None
        line = start
        if not row or (len(row) == 1 and not row[0].strip() and header is not None):
            continue
        if header is None:
            header = [name.strip() for name in row]
            _check_header(file, header, kind)
            continue
        if len(row) != len(header):
            msg = (
                f"{file}:{line}: malformed {kind}: {len(row)} fields where the header has "
                f"{len(header)} ({', '.join(header)}); quote fields that contain "
                f"{'tabs' if delimiter == chr(9) else 'commas'} or line breaks"
            )
            raise DataError(msg)
        records.append(Record(f"{file}:{line}", dict(zip(header, row, strict=True))))
    return records


def _check_header(file: Path, header: list[str], kind: str) -> None:
    if any(not name for name in header):
        msg = f"{file}:1: the {kind} header has an empty column name: {header}"
        raise DataError(msg)
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        msg = f"{file}:1: the {kind} header names a column twice: {', '.join(duplicates)}"
        raise DataError(msg)


def _read_txt(file: Path, text: str, text_column: str) -> list[Record]:
    return [
        Record(f"{file}:{number}", {text_column: line})
        for number, line in enumerate(_lines(text), start=1)
        if line.strip()
    ]


def _read_parquet(file: Path) -> list[Record]:
    try:
        parquet = importlib.import_module("pyarrow.parquet")
    except ImportError as err:
        msg = f"{file}: reading Parquet files needs pyarrow: pip install pyarrow ({err})"
        raise DataError(msg) from err
    try:
        table = parquet.read_table(file)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError and others
        msg = f"{file}: not a readable Parquet file ({type(err).__name__}: {err})"
        raise DataError(msg) from err
    return [Record(f"{file} [row {index}]", row) for index, row in enumerate(table.to_pylist())]


def _beyond_json_limits(text: str, err: ValueError | RecursionError) -> tuple[int, int, str, str]:
    """Where (line, column) and what Python's JSON parser refused in ``text``, and the fix:
    nesting past the recursion limit, or an integer past ``sys.get_int_max_str_digits()``,
    both of which it reports without a position."""
    if isinstance(err, RecursionError):
        depth, offset = _json_scan(text, lambda offset, depth, digits: False)
        what = f"JSON nested {depth} levels deep"
        fix = f"Python reads about {sys.getrecursionlimit()} levels; flatten the data"
    else:
        limit = sys.get_int_max_str_digits()
        _, offset = _json_scan(text, lambda offset, depth, digits: digits > limit)
        what = f"a JSON number of more than {limit} digits"
        fix = f"Python reads integers of up to {limit} digits; store longer numbers as text"
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1, what, fix


def _json_scan(text: str, stop: Callable[[int, int, int], bool]) -> tuple[int, int]:
    """Walk ``text`` outside its strings, tracking nesting depth and the length of the digit
    run so far; returns ``(depth, offset)`` where ``stop(offset, depth, digits)`` first holds,
    else the deepest nesting and where it is first reached."""
    depth = deepest = deepest_at = digits = 0
    in_string = escaped = False
    for offset, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        digits = digits + 1 if char.isdigit() else 0
        if char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest, deepest_at = depth, offset
        elif char in "]}":
            depth -= 1
        if stop(offset, depth, digits):
            return depth, offset
    return deepest, deepest_at


def _reason(err: BaseException) -> str:
    strerror = getattr(err, "strerror", None)
    return str(strerror) if strerror else str(err)


def _clip(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
