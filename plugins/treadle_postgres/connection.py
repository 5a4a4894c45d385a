"""PostgreSQL connections for treadle's stores: psycopg 3, autocommit, versioned schemas.

Each store holds one connection in autocommit mode, so a single statement is committed at
once (a job claim, a heartbeat) and a group of statements runs in an explicit transaction
(:meth:`Database.transaction`). A connection lost to a server restart or a network cut fails
the call that found it with a :class:`~treadle.errors.StorageError`; the next call connects
again. A process forked from one holding a store opens its own connection on first use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.rows import DictRow, dict_row

from treadle.errors import StorageError

__all__ = [
    "Connection",
    "Database",
    "Migration",
    "connect",
    "migrate",
    "redact",
]

#: A connection whose rows are dictionaries of column name to value.
Connection = psycopg.Connection[DictRow]

#: A migration is SQL (one or more statements) or a function given the connection, which is
#: inside the migration's transaction.
Migration = str | Callable[[Connection], None]

#: Serializes schema migrations of concurrent openers of one database (an advisory lock key:
#: the bytes of "treadle" as an integer).
MIGRATION_LOCK = 0x74726561646C65

#: Defaults added to a URL that does not set them.
CONNECT_DEFAULTS = {"application_name": "treadle", "connect_timeout": "10"}

# connections a forked child inherited: kept referenced, never finalized there, so that the
# child does not close the parent's session from under it (see Database._live)
_INHERITED: list[Connection] = []


def redact(location: str) -> str:
    """``location`` with any password replaced by ``***``: fit for messages and logs."""
    try:
        parts = urlsplit(location)
    except ValueError:
        return location
    netloc = parts.netloc
    if "@" in netloc:
        credentials, _, host = netloc.rpartition("@")
        if ":" in credentials:
            user = credentials.split(":", 1)[0]
            netloc = f"{user}:***@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key == "password" for key, _ in pairs):
            query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def connect(location: str) -> Connection:
    """A new autocommit connection to the database at ``location`` (a ``postgresql://`` or
    ``postgres://`` URL), its rows as dictionaries.

    ``application_name=treadle`` and ``connect_timeout=10`` are added unless the URL sets
    them; everything else (``sslmode``, ``options=-csearch_path=...``, the ``PG*`` environment
    variables and ``~/.pgpass``) is libpq's.

    :raises StorageError: the URL is malformed or the server cannot be reached or refuses the
        connection; names the location (password hidden) and libpq's reason.
    """
    shown = redact(location)
    try:
        given = psycopg.conninfo.conninfo_to_dict(location)
    except psycopg.ProgrammingError as err:
        msg = (
            f"{shown} is not a valid PostgreSQL URL ({err}); write "
            f"postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?param=value...]"
        )
        raise StorageError(msg) from err
    extra = {key: value for key, value in CONNECT_DEFAULTS.items() if key not in given}
    conninfo = psycopg.conninfo.make_conninfo(location, **extra)
    try:
        connection: Connection = psycopg.connect(conninfo, autocommit=True, row_factory=dict_row)
    except psycopg.Error as err:
        reason = str(err).strip() or type(err).__name__
        msg = (
            f"{shown}: cannot connect to PostgreSQL ({reason}). Check that the server runs "
            f"and listens there, and the user, password and database name (create the "
            f"database first, e.g. with createdb)."
        )
        raise StorageError(msg) from err
    return connection


def migrate(
    connection: Connection, component: str, migrations: Sequence[Migration], location: str
) -> int:
    """Bring ``component``'s tables forward to ``len(migrations)``, all steps in one transaction.

    The version of each component (``registry``, ``experiments``, ``jobs``) lives in the
    ``treadle_schema`` table of the connection's current schema, so stores sharing one
    database migrate independently. Concurrent openers serialize on an advisory lock, and the
    second finds the work done (PostgreSQL's DDL is transactional).

    :returns: the version now in place.
    :raises StorageError: the schema holds tables but is no treadle store, or holds a newer
        schema than this treadle knows (nothing is changed then).
    """
    shown = redact(location)
    target = len(migrations)
    row = connection.execute("SELECT current_schema() AS schema").fetchone()
    if row is None or row["schema"] is None:
        path = connection.execute("SHOW search_path").fetchone()
        msg = (
            f"{shown}: the search_path ({path['search_path'] if path else '?'}) names no "
            f"schema that exists, so treadle has nowhere to keep its tables; create the "
            f"schema first (CREATE SCHEMA ...) or fix the URL's options=-csearch_path."
        )
        raise StorageError(msg)
    # the common case, a store opened again: one read, no lock
    tables = _tables(connection)
    if "treadle_schema" in tables and _version(connection, component) == target:
        return target
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        tables = _tables(connection)
        if tables and "treadle_schema" not in tables:
            msg = (
                f"{shown}: the database's schema holds tables that are not a treadle store "
                f"({', '.join(sorted(tables)[:5])}, and no treadle_schema); use a database of "
                f"its own, or a schema of its own (add ?options=-csearch_path%3Dtreadle to the "
                f"URL after CREATE SCHEMA treadle). Nothing was changed."
            )
            raise StorageError(msg)
        connection.execute(
            "CREATE TABLE IF NOT EXISTS treadle_schema ("
            " component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        current = _version(connection, component)
        if current > target:
            msg = (
                f"{shown} holds {component} schema version {current}, newer than this treadle "
                f"knows ({target}); upgrade treadle to open it. Nothing was changed."
            )
            raise StorageError(msg)
        for version in range(current + 1, target + 1):
            step = migrations[version - 1]
            if callable(step):
                step(connection)
            else:
                connection.execute(step)  # SQL text without parameters: many statements
        if target != current:
            connection.execute(
                "INSERT INTO treadle_schema (component, version) VALUES (%s, %s) "
                "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                (component, target),
            )
    return target


def _tables(connection: Connection) -> set[str]:
    rows = connection.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    ).fetchall()
    return {row["tablename"] for row in rows}


def _version(connection: Connection, component: str) -> int:
    row = connection.execute(
        "SELECT version FROM treadle_schema WHERE component = %s", (component,)
    ).fetchone()
    return 0 if row is None else int(row["version"])


class Database:
    """One store's connection: opened and migrated at once, used under a lock (threads that
    share a store take turns), opened again after a loss or in a forked child.

    :param location: a ``postgresql://`` or ``postgres://`` URL.
    :param component: the component whose schema version the store keeps.
    :param migrations: its migrations, oldest first.
    :raises StorageError: as :func:`connect` and :func:`migrate`.
    """

    def __init__(self, location: str, component: str, migrations: Sequence[Migration]) -> None:
        self.location = location
        self.shown = redact(location)
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._closed = False
        self._connection = connect(location)
        try:
            with self._errors():
                migrate(self._connection, component, migrations, location)
        except BaseException:
            self._connection.close()
            raise

    def close(self) -> None:
        """Close the connection; a store closed is not opened again."""
        with self._lock:
            self._closed = True
            if self._pid == os.getpid():
                self._connection.close()

    def _live(self) -> Connection:
        if self._closed:
            msg = f"The store at {self.shown} is closed; open a new one."
            raise StorageError(msg)
        if self._pid != os.getpid():
            # a forked child shares the parent's socket: never speak on it, never close it
            _INHERITED.append(self._connection)
            self._pid = os.getpid()
            self._connection = connect(self.location)
        elif self._connection.closed:
            self._connection = connect(self.location)
        return self._connection

    @contextmanager
    def _errors(self) -> Iterator[None]:
        # integrity errors pass as they are: stores turn them into their own errors
        try:
            yield
        except psycopg.IntegrityError:
            raise
        except psycopg.Error as err:
            if isinstance(err, psycopg.OperationalError | psycopg.InterfaceError):
                hint = "the connection failed or was lost; the next call connects again"
            else:
                hint = "the statement failed"
            msg = f"{self.shown}: {hint} ({type(err).__name__}: {str(err).strip()})"
            raise StorageError(msg) from err

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """The connection in autocommit mode, held for the block: each statement commits."""
        with self._lock, self._errors():
            yield self._live()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction for the block: committed at its end, rolled back on any exception,
        so a crash leaves nothing half written."""
        with self._lock, self._errors():
            connection = self._live()
            with connection.transaction():
                yield connection
