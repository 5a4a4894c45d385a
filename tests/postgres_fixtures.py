"""A throwaway PostgreSQL server for the tests, and one fresh database per test.

Enable in a test module with ``pytest_plugins = ["tests.postgres_fixtures"]``. The server is
started once per session (per xdist worker): ``initdb`` into a temp folder (owned by the
``postgres`` user when the tests run as root, because initdb refuses root), listening on a
free port of 127.0.0.1 and a socket in that folder, ``fsync=off``; it is stopped and its
folder removed at the end. Tests are skipped, with the reason, only where no PostgreSQL server
binaries (or no psycopg) can be found; ``.ci/run`` installs them. See ENVIRONMENT.md.

``postgres_url`` gives each test a schema of its own in one shared database (the URL sets
``search_path``): treadle keeps every table and its schema versions in the current schema, so
that isolates tests as a database would, in a millisecond instead of the 0.1-1 s a
``CREATE DATABASE`` takes on a busy machine. ``postgres_database_url`` gives a whole new
database, for the tests that need a plain URL.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

#: Where Debian's packages put the server binaries; then $PATH.
BINARY_GLOB = "/usr/lib/postgresql/*/bin"


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: the newest Debian one, else $PATH's."""

    def version(folder: str) -> tuple[int, ...]:
        number = Path(folder).parent.name
        return tuple(int(part) for part in number.split(".") if part.isdigit())

    for folder in sorted(glob.glob(BINARY_GLOB), key=version, reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@attrs.frozen
class PostgresServer:
    """A running throwaway server; ``url(name)`` is a database on it."""

    bindir: Path
    folder: Path
    port: int
    as_user: str | None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A server program (``pg_ctl ...``) run as the server's owner."""
        argv = [str(self.bindir / command[0]), *command[1:]]
        if self.as_user is not None:
            argv = ["runuser", "-u", self.as_user, "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)

    def create_database(self) -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')  # a generated name: no user text
        return self.url(name)

    def create_schema(self, database_url: str) -> str:
        """A new, empty schema in the database of ``database_url``; returns a URL whose
        ``search_path`` is that schema."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f'CREATE SCHEMA "{name}"')  # a generated name: no user text
        return f"{database_url}?options=-csearch_path%3D{name}"

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url``, ending its sessions (workers a test left behind)."""
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


#: Server settings for tests: no flush to disk at all (the data is thrown away).
FAST_SETTINGS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


#: The file in a server's folder naming the process that started it.
OWNER_FILE = "owner.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_abandoned_servers(parent: str | None = None) -> list[Path]:
    """Stop and remove the throwaway servers whose starting process is gone (a test session
    killed before its teardown, say by a timeout); returns their folders."""
    swept = []
    for folder in Path(parent or tempfile.gettempdir()).glob("treadle-pg-*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        stat = folder.stat()
        as_user = "postgres" if os.geteuid() == 0 and stat.st_uid != 0 else None
        server = PostgresServer(find_bindir() or Path("/nonexistent"), folder, 0, as_user)
        if (folder / "data" / "postmaster.pid").exists():
            server.run("pg_ctl", "-D", str(folder / "data"), "-m", "immediate", "stop", check=False)
        shutil.rmtree(folder, ignore_errors=True)
        swept.append(folder)
    return swept


def start_server(settings: str = FAST_SETTINGS) -> PostgresServer:
    """initdb and start a server in a new temp folder (first stopping servers abandoned by
    sessions that were killed).

    :param settings: ``postgres`` options beyond where it listens (``-c name=value ...``).
    :raises RuntimeError: initdb or pg_ctl failed (their output attached).
    """
    bindir = find_bindir()
    assert bindir is not None
    root = os.geteuid() == 0
    # as root, a folder under /tmp: the postgres user must be able to reach it
    parent = "/tmp" if root and Path("/tmp").is_dir() else None
    sweep_abandoned_servers(parent)
    folder = Path(tempfile.mkdtemp(prefix="treadle-pg-", dir=parent))
    (folder / OWNER_FILE).write_text(str(os.getpid()))
    as_user = None
    if root:
        import pwd

        as_user = "postgres"
        owner = pwd.getpwnam(as_user)
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    folder.chmod(0o700)
    data = folder / "data"
    server = PostgresServer(bindir, folder, 0, as_user)
    try:
        server.run(
            *("initdb", "-D", str(data), "-U", "postgres", "-A", "trust"),
            *("-E", "UTF8", "--no-locale", "--no-sync"),
        )
        for _ in range(5):  # a free port may be taken between the probe and the start
            port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c max_connections=200"
                f" {settings}"
            )
            started = server.run(
                *("pg_ctl", "-D", str(data), "-l", str(folder / "server.log")),
                *("-w", "-t", "30", "-o", options, "start"),
                check=False,
            )
            if started.returncode == 0:
                return attrs.evolve(server, port=port)
        log = (folder / "server.log").read_text(errors="replace")[-3000:]
        msg = f"pg_ctl start failed: {started.stdout}{started.stderr}\n{log}"
        raise RuntimeError(msg)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def stop_server(server: PostgresServer) -> None:
    """Stop the server at once (``-m immediate``: its data is thrown away) and remove its
    folder."""
    try:
        server.run("pg_ctl", "-D", str(server.folder / "data"), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(server.folder, ignore_errors=True)


def skip_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or ``None``."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return 'psycopg 3 is not installed (pip install "treadle[postgres]")'
    if find_bindir() is None:
        return (
            f"no PostgreSQL server binaries: no initdb under {BINARY_GLOB} or on PATH "
            f"(install them with: apt-get install -y postgresql)"
        )
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and no 'postgres' user to run initdb as (initdb refuses root)"
    return None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the session."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    server = start_server()
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def postgres_shared_database(postgres_server: PostgresServer) -> str:
    """The URL of one database for the session, in which each test gets a schema."""
    return postgres_server.create_database()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, postgres_shared_database: str) -> str:
    """The URL of a new, empty schema of its own (``?options=-csearch_path%3D...``): to
    treadle as good as a new database. Left in place: the server is thrown away at the end."""
    return postgres_server.create_schema(postgres_shared_database)


@pytest.fixture
def postgres_database_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The plain URL of a new, empty database, dropped (its sessions ended) after the test."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)
