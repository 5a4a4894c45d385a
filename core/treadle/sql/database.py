"""One store's connection to an SQL database: a lock, sessions and transactions, reconnecting
after a loss or a fork, every driver error turned into a treadle error, schemas migrated.

What differs between databases (how to connect, how a write transaction starts, how
concurrent openers serialize a migration, what a driver error means) is the backend's
:class:`Connector`; the rest is here, once.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, Self

from treadle.errors import StorageError
from treadle.sql.dialect import Dialect

__all__ = [
    "ConstraintViolation",
    "Connector",
    "Database",
    "Migration",
    "SQLStore",
    "Session",
    "migrate",
]

logger = logging.getLogger(__name__)

#: A migration is SQL (one or more statements, no parameters) or a function given the
#: driver's connection, inside the migration's transaction.
Migration = str | Callable[[Any], None]

#: Parameters of one statement: positional (``?``) or named (``:name``).
Parameters = Sequence[Any] | Mapping[str, Any]

# connections a forked child inherited: kept referenced, never finalized there, so that the
# child does not close (or checkpoint) the parent's connection from under it
_INHERITED: list[Any] = []


class ConstraintViolation(StorageError):
    """A write broke a unique constraint (another process wrote the same key first); nothing
    of it was written. Stores turn it into their own error or try again."""


class Connector(Protocol):
    """What a backend knows about its database; the shared stores need nothing else but its
    :class:`~treadle.sql.dialect.Dialect`.

    Every method but :meth:`translate` may raise the driver's own errors: :class:`Database`
    passes them through :meth:`translate`.
    """

    #: how the database spells the shared SQL
    dialect: Dialect
    #: the location as the store was given it
    location: str
    #: the location fit for messages and logs (a URL's password hidden)
    shown: str

    def connect(self) -> Any:
        """A new connection in autocommit mode (each statement commits on its own) whose rows
        read by column name (``row["name"]``)."""
        ...

    def is_closed(self, connection: Any) -> bool:
        """Whether ``connection`` was closed under the store (a server restart): the next
        call connects again."""
        ...

    def transaction(self, connection: Any) -> AbstractContextManager[None]:
        """A write transaction for the block: committed at its end, rolled back on any
        exception. Where rows cannot be locked (:attr:`Dialect.row_locks` false) it must take
        the write lock at its start (SQLite's ``BEGIN IMMEDIATE``)."""
        ...

    def migration_transaction(self, connection: Any) -> AbstractContextManager[None]:
        """The transaction a schema migration runs in, serializing processes that open one
        new database at once (the second finds the work done)."""
        ...

    def tables(self, connection: Any) -> set[str]:
        """The tables where treadle keeps its own (the file, the URL's schema)."""
        ...

    def run_script(self, connection: Any, script: str) -> None:
        """Run SQL holding several statements, without parameters, inside the transaction."""
        ...

    def not_a_store(self, tables: Iterable[str]) -> str:
        """The message refusing a database that holds other tables and no treadle schema."""
        ...

    def translate(self, error: Exception) -> Exception | None:
        """The treadle error for a driver error (a :class:`~treadle.errors.StorageError` that
        names :attr:`shown` and the fix; :class:`ConstraintViolation` for a unique key taken),
        or ``None`` to let ``error`` pass as it is."""
        ...


class Session:
    """A connection lent for one block: each statement's SQL is prepared for the driver."""

    __slots__ = ("connection", "dialect")

    def __init__(self, connection: Any, dialect: Dialect) -> None:
        self.connection = connection
        self.dialect = dialect

    def execute(self, sql: str, parameters: Parameters = ()) -> Any:
        """Run one statement; returns the driver's cursor (``rowcount``, ``fetchone()``)."""
        return self.connection.execute(self.dialect.prepare(sql), parameters)

    def one(self, sql: str, parameters: Parameters = ()) -> Any:
        """The first row of a statement's result, or ``None``."""
        return self.execute(sql, parameters).fetchone()

    def all(self, sql: str, parameters: Parameters = ()) -> list[Any]:
        """Every row of a statement's result."""
        return list(self.execute(sql, parameters).fetchall())

    def executemany(self, sql: str, rows: Iterable[Parameters]) -> None:
        """Run one statement for each parameter set."""
        cursor = self.connection.cursor()
        try:
            cursor.executemany(self.dialect.prepare(sql), rows)
        finally:
            cursor.close()


class Database:
    """One store's connection: opened and migrated at once, used under a lock (threads that
    share a store take turns), opened again after a loss or in a forked child.

    :param connector: the backend's side.
    :param component: the component whose schema version the store keeps (``registry``,
        ``experiments``, ``jobs``).
    :param migrations: its migrations, oldest first.
    :raises StorageError: the database cannot be reached or opened, is not a treadle store,
        or holds a newer schema; names the location and the fix.
    """

    def __init__(
        self, connector: Connector, component: str, migrations: Sequence[Migration]
    ) -> None:
        self.connector = connector
        self.dialect = connector.dialect
        self.location = connector.location
        self.shown = connector.shown
        #: held by every session and transaction; a store may hold it across several
        self.lock = threading.RLock()
        self._pid = os.getpid()
        self._closed = False
        with self._errors():
            self._connection = connector.connect()
        try:
            with self._errors():
                migrate(connector, self._connection, component, migrations)
        except BaseException:
            self._connection.close()
            raise

    def close(self) -> None:
        """Close the connection; a store closed is not opened again."""
        with self.lock:
            self._closed = True
            if self._pid == os.getpid():
                self._connection.close()

    def _live(self) -> Any:
        if self._closed:
            msg = f"The store at {self.shown} is closed; open a new one."
            raise StorageError(msg)
        if self._pid != os.getpid():
            # a forked child shares the parent's socket or file locks: never use them, never
            # close them
            _INHERITED.append(self._connection)
            self._pid = os.getpid()
            self._connection = self.connector.connect()
        elif self.connector.is_closed(self._connection):
            self._connection = self.connector.connect()
        return self._connection

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except StorageError:
            raise
        except Exception as err:
            translated = self.connector.translate(err)
            if translated is None:
                raise
            raise translated from err

    @contextmanager
    def session(self) -> Iterator[Session]:
        """The connection in autocommit mode for the block: each statement commits on its own
        (a read, or a write of one statement)."""
        with self.lock, self._errors():
            yield Session(self._live(), self.dialect)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write transaction for the block: committed at its end, rolled back on any
        exception, so a crash leaves nothing half written."""
        with self.lock, self._errors():
            connection = self._live()
            with self.connector.transaction(connection):
                yield Session(connection, self.dialect)


class SQLStore:
    """What every SQL store shares: its :class:`Database`, its location, closing.

    :param database: the store's open, migrated database.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self.location = database.location

    def close(self) -> None:
        """Close the store's connection."""
        self.database.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def migrate(
    connector: Connector, connection: Any, component: str, migrations: Sequence[Migration]
) -> int:
    """Bring ``component``'s tables forward to ``len(migrations)``, all steps in one
    transaction.

    The version of each component lives in the ``treadle_schema`` table, so stores sharing
    one database migrate independently. A store opened again reads its version and writes
    nothing (so a read-only store opens); otherwise the check and the steps run in the
    connector's migration transaction, where a second process opening the same new database
    waits and finds the work done (DDL is transactional in SQLite and PostgreSQL).

    :returns: the version now in place.
    :raises StorageError: the database holds tables but is no treadle store, or holds a
        newer schema than this treadle knows (nothing is changed then).
    """
    target = len(migrations)
    session = Session(connection, connector.dialect)
    # the common case, a store opened again: one read, no lock, no write
    if "treadle_schema" in connector.tables(connection) and _version(session, component) == target:
        return target
    with connector.migration_transaction(connection):
        tables = connector.tables(connection)
        if tables and "treadle_schema" not in tables:
            raise StorageError(connector.not_a_store(tables))
        session.execute(
            "CREATE TABLE IF NOT EXISTS treadle_schema ("
            " component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        current = _version(session, component)
        if current > target:
            msg = (
                f"{connector.shown} holds {component} schema version {current}, newer than "
                f"this treadle knows ({target}); upgrade treadle to open it. Nothing was "
                f"changed."
            )
            raise StorageError(msg)
        for version in range(current + 1, target + 1):
            step = migrations[version - 1]
            if callable(step):
                step(connection)
            else:
                connector.run_script(connection, step)
        if target != current:
            session.execute(
                connector.dialect.upsert(
                    "treadle_schema", ("component", "version"), ("component",), ("version",)
                ),
                (component, target),
            )
            logger.info("%s: %s schema migrated to version %d", connector.shown, component, target)
    return target


def _version(session: Session, component: str) -> int:
    row = session.one("SELECT version FROM treadle_schema WHERE component = ?", (component,))
    return 0 if row is None else int(row["version"])
