"""SQLite connections for treadle's stores: WAL, busy timeout, foreign keys, ``BEGIN IMMEDIATE``
writes, read-only files and folders, and SQLite's errors said as treadle's.

Everything else (the SQL of the stores, migrations, sessions) is :mod:`treadle.sql`'s; this
module is the SQLite :class:`~treadle.sql.database.Connector`.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import stat
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from treadle.errors import StorageError
from treadle.sql import ConstraintViolation, Database, Migration, migrate
from treadle_sqlite.dialect import SQLITE

__all__ = [
    "BUSY_TIMEOUT_MS",
    "Migration",
    "SQLiteConnector",
    "check_before_open",
    "connect",
    "location_to_path",
    "open_database",
    "open_store_database",
]

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
    if not text.strip() or _CONTROL.search(text):
        msg = (
            f"SQLite location {location!r:.80} is blank or holds a control character (NUL, "
            f"newline); name the file in printable characters"
        )
        raise StorageError(msg)
    return Path(text)


def _error_name(error: BaseException) -> str:
    return str(getattr(error, "sqlite_errorname", None) or "")


def _cannot_open_writable(error: sqlite3.Error) -> bool:
    # a read-only file system or folder: SQLite cannot create the -wal and -shm files
    return _error_name(error).startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN"))


class SQLiteConnector:
    """The SQLite side of a store's :class:`~treadle.sql.database.Database`: one file.

    :param location: a path or ``sqlite:///path``.
    """

    dialect = SQLITE

    def __init__(self, location: str | Path) -> None:
        self.location = str(location)
        self.shown = self.location
        self.path = location_to_path(location)

    # -- connecting ----------------------------------------------------------------------

    def connect(self) -> sqlite3.Connection:
        """Open (creating if needed) the file: autocommit mode (``isolation_level=None``),
        WAL so readers run beside a writer, a busy timeout so writers wait instead of failing
        with "database is locked", foreign keys enforced.

        A store whose file or folder this process may not write opens read-only: ``mode=ro``,
        or, in a read-only folder without pending WAL changes (a read-only mount, a
        snapshot), ``immutable=1``. Reading works; a write raises a ``StorageError`` saying
        the store is read-only.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            msg = (
                f"{self.path}: cannot create its folder ({err.strerror}); create it, or choose "
                f"a location this process may write."
            )
            raise StorageError(msg) from err
        try:
            return self._open(str(self.path), uri=False, read_only=False)
        except sqlite3.Error as err:
            if not (self.path.exists() and _cannot_open_writable(err)):
                raise
        return self._open_read_only()

    def _open_read_only(self) -> sqlite3.Connection:
        uri = self.path.resolve().as_uri()
        try:
            return self._open(f"{uri}?mode=ro", uri=True, read_only=True)
        except sqlite3.Error as err:
            if not _cannot_open_writable(err):
                raise
            wal = self.path.with_name(f"{self.path.name}-wal")
            if wal.exists() and wal.stat().st_size > 0:
                msg = (
                    f"{self.path} lies in a folder this process cannot write, and {wal.name} "
                    f"beside it holds changes not yet merged, which SQLite can only read with "
                    f"write access to the folder. Open it once where the folder is writable, "
                    f"or copy the store with its -wal file to such a folder. Nothing was "
                    f"changed."
                )
                raise StorageError(msg) from err
        logger.info("%s: read-only folder; opened immutable (read-only)", self.path)
        return self._open(f"{uri}?mode=ro&immutable=1", uri=True, read_only=True)

    @staticmethod
    def _open(target: str, *, uri: bool, read_only: bool) -> sqlite3.Connection:
        connection = sqlite3.connect(
            target,
            uri=uri,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if not read_only:
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException:
            connection.close()
            raise
        connection.row_factory = sqlite3.Row
        return connection

    def is_closed(self, connection: sqlite3.Connection) -> bool:
        return False  # an SQLite file is not taken away under an open connection

    # -- transactions and migrations -----------------------------------------------------

    @contextmanager
    def transaction(self, connection: sqlite3.Connection) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` (the write lock up front, so two writers never deadlock on an
        upgrade) ... ``COMMIT``; ``ROLLBACK`` on any exception, so a crash leaves nothing half
        written."""
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
            connection.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (a full disk): then there is nothing to undo
            if connection.in_transaction:
                try:
                    connection.execute("ROLLBACK")
                except sqlite3.Error as err:
                    logger.debug("%s: rollback failed (%s)", self.path, err)
            raise

    @contextmanager
    def migration_transaction(self, connection: sqlite3.Connection) -> Iterator[None]:
        """One ``BEGIN IMMEDIATE`` for check and steps: two processes opening a new file at
        once serialize here, and the second finds the work done (SQLite's DDL is
        transactional). Foreign keys are off meanwhile, as SQLite's procedure for rebuilding
        a table asks (``ALTER TABLE`` cannot change a ``CHECK``; with them on, dropping the
        old table would cascade to every row referring to it), and checked before the
        commit."""
        connection.execute("PRAGMA foreign_keys = OFF")  # a no-op inside a transaction
        try:
            with self.transaction(connection):
                yield
                broken = connection.execute("PRAGMA foreign_key_check").fetchmany(5)
                if broken:
                    msg = (
                        f"{self.shown}: a schema migration would leave rows referring to "
                        f"missing ones ({[tuple(row) for row in broken]}); nothing was changed"
                    )
                    raise StorageError(msg)
        finally:
            connection.execute("PRAGMA foreign_keys = ON")

    def tables(self, connection: sqlite3.Connection) -> set[str]:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {row[0] for row in rows}

    def run_script(self, connection: sqlite3.Connection, script: str) -> None:
        # executescript() would COMMIT our transaction; split on ';' instead (no ';' in
        # literals in treadle's migrations)
        for statement in script.split(";"):
            if statement.strip():
                connection.execute(statement)

    def not_a_store(self, tables: Iterable[str]) -> str:
        return (
            f"{self.path} is an SQLite database but not a treadle store (it has tables "
            f"{', '.join(sorted(tables)[:5])}, and no treadle_schema); choose another file. "
            f"It was not changed."
        )

    # -- errors --------------------------------------------------------------------------

    def translate(self, error: Exception) -> Exception | None:
        """SQLite's errors as treadle's: the file named, what happened, the fix."""
        return self.describe(error) if isinstance(error, sqlite3.Error) else None

    def describe(self, error: sqlite3.Error) -> StorageError:
        """The treadle error for an SQLite error."""
        name = _error_name(error)
        path = self.path.resolve()
        detail = f"{error}; {name}" if name else str(error)
        if name in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"):
            return ConstraintViolation(f"{self.shown}: {detail}")
        if name.startswith("SQLITE_READONLY"):
            msg = (
                f"{path} is read-only for this process ({detail}): reading works, writing "
                f"needs write access to the file, its folder and its -wal and -shm files. "
                f"Check their permissions (ls -l) and whether the file system is mounted "
                f"read-only. Nothing was changed."
            )
        elif name.startswith("SQLITE_FULL"):
            msg = (
                f"{path}: the disk is full ({detail}). This write was rolled back and "
                f"nothing stored before it changed; free space on the disk that holds "
                f"{path.parent} and try again."
            )
        elif name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
            msg = (
                f"{path} is damaged ({detail}): SQLite found a page it cannot read. treadle "
                f"changed nothing in it. Restore it from a backup, or save what can still be "
                f"read with: sqlite3 {path} .recover | sqlite3 recovered.db"
            )
        elif name.startswith("SQLITE_IOERR"):
            msg = (
                f"{path}: the operating system failed to read or write it ({detail}); check "
                f"the disk and its file system. The write was rolled back."
            )
        elif name.startswith("SQLITE_CANTOPEN"):
            msg = (
                f"{path}: cannot open the file ({detail}); check that its folder exists and "
                f"that this process may read and write there."
            )
        elif name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            msg = (
                f"{path} stayed locked by another process for {BUSY_TIMEOUT_MS // 1000} s "
                f"({detail}): a long transaction elsewhere holds it; try again, or find the "
                f"process holding it (fuser {path})."
            )
        else:
            msg = f"{path}: SQLite failed ({type(error).__name__}: {detail})"
        return StorageError(msg)


def check_before_open(location: str | Path, component: str, known_version: int) -> None:
    """Refuse a file that is no treadle store, is damaged, or holds a newer ``component``
    schema, before :meth:`SQLiteConnector.connect` writes to it (switching a file to WAL
    rewrites its header).

    Reads through a read-only connection; a file that does not exist yet, is empty, or cannot
    be probed read-only (a lock, a read-only folder) passes to ``connect`` and ``migrate``,
    which check again.

    :raises StorageError: the file is not an SQLite database, is damaged, is an SQLite
        database without treadle's schema table, or holds a newer schema; the file is left as
        it was.
    """
    path = location_to_path(location)
    try:
        status = path.stat()
    except FileNotFoundError:
        return
    except OSError as err:  # a name too long, a file where a folder should be, no access
        msg = f"{path}: cannot hold a store ({err.strerror}); choose another location"
        raise StorageError(msg) from err
    if stat.S_ISDIR(status.st_mode):
        msg = (
            f"{path} is a folder; an SQLite store is a file: name one inside it, such as "
            f"{path / 'treadle.db'}"
        )
        raise StorageError(msg)
    if status.st_size == 0:
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
        name = _error_name(err)
        if name.startswith("SQLITE_NOTADB"):
            msg = (
                f"{path} is not an SQLite database ({err}); choose another file. "
                f"It was not changed."
            )
            raise StorageError(msg) from err
        if name.startswith("SQLITE_CORRUPT"):
            raise SQLiteConnector(location).describe(err) from err
        return
    finally:
        probe.close()
    if tables and "treadle_schema" not in tables:
        raise StorageError(SQLiteConnector(location).not_a_store(tables))
    if version is not None and version > known_version:
        msg = (
            f"{path} holds {component} schema version {version}, newer than this treadle "
            f"knows ({known_version}); upgrade treadle to open it. Nothing was changed."
        )
        raise StorageError(msg)


def open_store_database(
    location: str | Path, component: str, migrations: Sequence[Migration]
) -> Database:
    """The :class:`~treadle.sql.database.Database` of a store in the SQLite file at
    ``location``: checked before anything is written (:func:`check_before_open`), opened
    and migrated.

    :raises StorageError: naming the file and the fix.
    """
    check_before_open(location, component, len(migrations))
    return Database(SQLiteConnector(location), component, migrations)


def connect(location: str | Path) -> sqlite3.Connection:
    """A new connection to the SQLite file at ``location`` (see
    :meth:`SQLiteConnector.connect`).

    :raises StorageError: the file cannot be opened; names it and the fix.
    """
    connector = SQLiteConnector(location)
    try:
        return connector.connect()
    except sqlite3.Error as err:
        raise connector.describe(err) from err


def open_database(
    location: str | Path, component: str, migrations: Sequence[Migration]
) -> sqlite3.Connection:
    """:func:`check_before_open`, :func:`connect`, then migrate ``component``: a bare
    connection, for tools and tests; stores use :func:`open_store_database`.

    :raises StorageError: as those do; a connection opened here is closed again then.
    """
    check_before_open(location, component, len(migrations))
    connector = SQLiteConnector(location)
    connection = connect(location)
    try:
        migrate(connector, connection, component, migrations)
    except sqlite3.Error as err:
        connection.close()
        raise connector.describe(err) from err
    except BaseException:
        connection.close()
        raise
    return connection
