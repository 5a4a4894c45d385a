"""SQLite connections for treadle's stores: WAL, busy timeout, foreign keys, versioned schemas."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from treadle.errors import StorageError

__all__ = [
    "Migration",
    "check_before_open",
    "connect",
    "location_to_path",
    "migrate",
    "open_database",
    "transaction",
]

#: A migration is SQL (one or more statements) or a function given the connection.
Migration = str | Callable[[sqlite3.Connection], None]

BUSY_TIMEOUT_MS = 30_000


def location_to_path(location: str | Path) -> Path:
    """The file behind ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or a plain path."""
    text = str(location)
    if text.startswith("sqlite://"):
        rest = text[len("sqlite://") :]
        if not rest.startswith("/"):
            msg = f"SQLite URL {text!r} must look like sqlite:///relative.db or sqlite:////abs.db"
            raise StorageError(msg)
        text = rest[1:]
    if not text or text == ":memory:":
        msg = f"SQLite location {location!r} must name a file (stores are shared by processes)"
        raise StorageError(msg)
    return Path(text)


def connect(location: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) the database at ``location``.

    Autocommit mode (``isolation_level=None``): write with :func:`transaction`. WAL lets
    readers run beside a writer; the busy timeout makes writers wait instead of failing with
    "database is locked"; foreign keys are enforced.

    :raises StorageError: the file is not an SQLite database or cannot be opened; names it.
    """
    path = location_to_path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        connection = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.DatabaseError as err:
        msg = f"{path}: cannot open as an SQLite database ({err}); is it a treadle store?"
        raise StorageError(msg) from err
    connection.row_factory = sqlite3.Row
    return connection


@contextmanager
def transaction(
    connection: sqlite3.Connection, *, immediate: bool = True
) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` (the write lock up front, so two writers never deadlock on an
    upgrade) ... ``COMMIT``; ``ROLLBACK`` on any exception, so a crash leaves nothing half
    written."""
    connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def migrate(connection: sqlite3.Connection, component: str, migrations: Sequence[Migration]) -> int:
    """Bring ``component``'s tables forward to ``len(migrations)``, all steps in one transaction.

    The version of each component (``registry``, ``experiments``, ``jobs``, ...) lives in the
    ``treadle_schema`` table, so stores sharing one file migrate independently.

    :returns: the version now in place.
    :raises StorageError: the file holds tables but is no treadle database, or holds a newer
        schema than this treadle knows (nothing is changed then).
    """
    # One BEGIN IMMEDIATE for check and steps: two processes opening a new file at once
    # serialize here, and the second finds the work done (SQLite's DDL is transactional).
    with transaction(connection):
        tables = {
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        path = connection.execute("PRAGMA database_list").fetchone()[2]
        if tables and "treadle_schema" not in tables:
            msg = (
                f"{path} is an SQLite database but not a treadle store (it has tables "
                f"{', '.join(sorted(tables)[:5])}, and no treadle_schema); choose another file."
            )
            raise StorageError(msg)
        connection.execute(
            "CREATE TABLE IF NOT EXISTS treadle_schema ("
            " component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        row = connection.execute(
            "SELECT version FROM treadle_schema WHERE component = ?", (component,)
        ).fetchone()
        current = row[0] if row else 0
        target = len(migrations)
        if current > target:
            msg = (
                f"{path} holds {component} schema version {current}, newer than this treadle "
                f"knows ({target}); upgrade treadle to open it. Nothing was changed."
            )
            raise StorageError(msg)
        for version in range(current + 1, target + 1):
            step = migrations[version - 1]
            if callable(step):
                step(connection)
            else:
                for statement in _statements(step):
                    connection.execute(statement)
        if target != current:
            connection.execute(
                "INSERT INTO treadle_schema (component, version) VALUES (?, ?) "
                "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                (component, target),
            )
    return target


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT our transaction; split on ';' instead (no ';' in literals
    # in treadle's migrations)
    return [statement.strip() for statement in script.split(";") if statement.strip()]


def check_before_open(location: str | Path, component: str, known_version: int) -> None:
    """Refuse a file that is no treadle store, or holds a newer ``component`` schema, before
    :func:`connect` writes to it (switching a file to WAL rewrites its header).

    Reads through a read-only connection; a file that does not exist yet, is empty, or cannot
    be probed read-only (a lock, a missing ``-shm``) passes to :func:`connect` and
    :func:`migrate`, which check again.

    :raises StorageError: the file is not an SQLite database, is an SQLite database without
        treadle's schema table, or holds a newer schema; the file is left as it was.
    """
    path = location_to_path(location)
    try:
        if path.stat().st_size == 0:
            return
    except FileNotFoundError:
        return
    try:
        probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return
    try:
        tables = {
            row[0] for row in probe.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        version = None
        if "treadle_schema" in tables:
            row = probe.execute(
                "SELECT version FROM treadle_schema WHERE component = ?", (component,)
            ).fetchone()
            version = None if row is None else int(row[0])
    except sqlite3.DatabaseError as err:
        if "not a database" in str(err) or "malformed" in str(err):
            msg = (
                f"{path} is not an SQLite database ({err}); choose another file. "
                f"It was not changed."
            )
            raise StorageError(msg) from err
        return
    finally:
        probe.close()
    if tables and "treadle_schema" not in tables:
        msg = (
            f"{path} is an SQLite database but not a treadle store (it has tables "
            f"{', '.join(sorted(tables)[:5])}, and no treadle_schema); choose another file. "
            f"It was not changed."
        )
        raise StorageError(msg)
    if version is not None and version > known_version:
        msg = (
            f"{path} holds {component} schema version {version}, newer than this treadle "
            f"knows ({known_version}); upgrade treadle to open it. Nothing was changed."
        )
        raise StorageError(msg)


def open_database(
    location: str | Path, component: str, migrations: Sequence[Migration]
) -> sqlite3.Connection:
    """:func:`check_before_open`, :func:`connect`, then :func:`migrate` ``component``.

    :raises StorageError: as those do; a connection opened here is closed again then.
    """
    check_before_open(location, component, len(migrations))
    connection = connect(location)
    try:
        migrate(connection, component, migrations)
    except BaseException:
        connection.close()
        raise
    return connection
