"""PostgreSQL connections for treadle's stores: psycopg 3, autocommit, advisory-lock
migrations, reconnecting, and PostgreSQL's errors said as treadle's.

Each store holds one connection in autocommit mode, so a single statement is committed at
once (a job claim, a heartbeat) and a group of statements runs in an explicit transaction. A
connection lost to a server restart or a network cut fails the call that found it with a
:class:`~treadle.errors.StorageError`; the next call connects again. A process forked from one
holding a store opens its own connection on first use (:class:`treadle.sql.Database`).
Everything else is :mod:`treadle.sql`'s; this module is the PostgreSQL
:class:`~treadle.sql.database.Connector`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.rows import DictRow, dict_row

from treadle.errors import StorageError
from treadle.sql import ConstraintViolation, Database, Migration
from treadle.sql import migrate as migrate_schema
from treadle_postgres.dialect import POSTGRES

__all__ = [
    "Connection",
    "Migration",
    "PostgresConnector",
    "connect",
    "migrate",
    "open_store_database",
    "redact",
]

#: A connection whose rows are dictionaries of column name to value.
Connection = psycopg.Connection[DictRow]

#: Serializes schema migrations of concurrent openers of one database (an advisory lock key:
#: the bytes of "treadle" as an integer).
MIGRATION_LOCK = 0x74726561646C65

#: Defaults added to a URL that does not set them.
CONNECT_DEFAULTS = {"application_name": "treadle", "connect_timeout": "10"}


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
        reason = " ".join(str(err).split()) or type(err).__name__
        msg = (
            f"{shown}: cannot connect to PostgreSQL ({reason}). Check that the server runs "
            f"and listens there, and the user, password and database name (create the "
            f"database first, e.g. with createdb)."
        )
        raise StorageError(msg) from err
    return connection


class PostgresConnector:
    """The PostgreSQL side of a store's :class:`~treadle.sql.database.Database`.

    :param location: a ``postgresql://`` or ``postgres://`` URL.
    """

    dialect = POSTGRES

    def __init__(self, location: str) -> None:
        self.location = location
        self.shown = redact(location)

    def connect(self) -> Connection:
        return connect(self.location)

    def is_closed(self, connection: Connection) -> bool:
        return bool(connection.closed)

    @contextmanager
    def transaction(self, connection: Connection) -> Iterator[None]:
        with connection.transaction():
            yield

    @contextmanager
    def migration_transaction(self, connection: Connection) -> Iterator[None]:
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            yield

    def tables(self, connection: Connection) -> set[str]:
        """The tables of the connection's current schema (where treadle keeps its own).

        :raises StorageError: the ``search_path`` names no schema that exists.
        """
        row = connection.execute(
            "SELECT current_schema() AS schema, ARRAY(SELECT tablename FROM pg_tables"
            " WHERE schemaname = current_schema()) AS tables"
        ).fetchone()
        if row is None or row["schema"] is None:
            path = connection.execute("SHOW search_path").fetchone()
            msg = (
                f"{self.shown}: the search_path ({path['search_path'] if path else '?'}) "
                f"names no schema that exists, so treadle has nowhere to keep its tables; "
                f"create the schema first (CREATE SCHEMA ...) or fix the URL's "
                f"options=-csearch_path."
            )
            raise StorageError(msg)
        return set(row["tables"])

    def run_script(self, connection: Connection, script: str) -> None:
        connection.execute(script)  # SQL text without parameters: many statements

    def not_a_store(self, tables: Iterable[str]) -> str:
        return (
            f"{self.shown}: the database's schema holds tables that are not a treadle store "
            f"({', '.join(sorted(tables)[:5])}, and no treadle_schema); use a database of "
            f"its own, or a schema of its own (add ?options=-csearch_path%3Dtreadle to the "
            f"URL after CREATE SCHEMA treadle). Nothing was changed."
        )

    def translate(self, error: Exception) -> Exception | None:
        """psycopg's errors as treadle's: the server named (password hidden), what happened,
        the fix."""
        if not isinstance(error, psycopg.Error):
            return None
        reason = f"{type(error).__name__}: {' '.join(str(error).split())}"
        shown = self.shown
        if isinstance(error, psycopg.errors.UniqueViolation):
            return ConstraintViolation(f"{shown}: {reason}")
        if isinstance(error, psycopg.errors.DiskFull):
            msg = (
                f"{shown}: the database server's disk is full ({reason}). This write was "
                f"rolled back and nothing stored before it changed; free space on the "
                f"server's data disk and try again."
            )
        elif isinstance(error, psycopg.errors.ReadOnlySqlTransaction):
            msg = (
                f"{shown}: the server refuses writes in this session ({reason}): "
                f"default_transaction_read_only is on for the database or user, or the "
                f"server is a read-only standby. Reading works; to write, connect to the "
                f"primary or turn it off (ALTER DATABASE ... SET default_transaction_read_only"
                f" = off). Nothing was changed."
            )
        elif isinstance(error, psycopg.DataError) and "NUL" in str(error):
            msg = (
                f"{shown}: PostgreSQL text cannot hold the NUL character (0x00) ({reason}); "
                f"remove it from the value. Nothing was changed."
            )
        elif isinstance(error, psycopg.errors.DataCorrupted | psycopg.errors.IndexCorrupted):
            msg = (
                f"{shown}: the server reports damaged data ({reason}); treadle changed "
                f"nothing. Restore the database from a backup, or ask its administrator."
            )
        elif isinstance(error, psycopg.errors.QueryCanceled):
            msg = (
                f"{shown}: the server cancelled the statement ({reason}): a statement_timeout "
                f"or an administrator; nothing of it was written."
            )
        elif isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
            msg = (
                f"{shown}: the connection failed or was lost ({reason}); check that the "
                f"server runs and can be reached from here. The next call connects again."
            )
        else:
            msg = f"{shown}: the statement failed ({reason})"
        return StorageError(msg)


def migrate(
    connection: Connection, component: str, migrations: Sequence[Migration], location: str
) -> int:
    """Bring ``component``'s tables forward to ``len(migrations)`` in the connection's
    current schema, all steps in one transaction (:func:`treadle.sql.migrate`); concurrent
    openers serialize on an advisory lock, and the second finds the work done.

    :returns: the version now in place.
    :raises StorageError: the schema holds tables but is no treadle store, holds a newer
        schema than this treadle knows, or the search_path names no schema (nothing is
        changed then).
    """
    return migrate_schema(PostgresConnector(location), connection, component, migrations)


def open_store_database(location: str, component: str, migrations: Sequence[Migration]) -> Database:
    """The :class:`~treadle.sql.database.Database` of a store in the PostgreSQL database at
    ``location``, connected and migrated.

    :raises StorageError: naming the URL (password hidden) and the fix.
    """
    return Database(PostgresConnector(location), component, migrations)
