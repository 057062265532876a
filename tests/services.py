"""Real services for the test suite (registered from tests/conftest.py).

PostgreSQL: ``postgres_dsn`` is a fresh database, created for this test run and
dropped at its end, on

1. the server at ``$OMNINUDGE_TEST_PG`` (a libpq URL, e.g. ``postgresql://postgres@host:5432``),
2. else the server at 127.0.0.1:5432 (user ``postgres``, trust auth) when it answers,
3. else a throwaway cluster: ``initdb`` into a temporary directory, started on a
   spare loopback port, stopped and deleted at the end of the session.

``OMNINUDGE_TEST_PG_FORCE_THROWAWAY=1`` skips 1 and 2. ``PostgresCluster`` is also the
helper for drills that stop, kill and restart PostgreSQL under load
(``postgres_cluster_factory``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
import pytest
from psycopg import sql

__all__ = [
    "PostgresCluster",
    "create_database",
    "drop_database",
    "postgres_answers",
    "spare_port",
]

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


# --- helpers -----------------------------------------------------------------------------


def spare_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_answers(url: str, timeout_s: int = 2) -> bool:
    """True when a PostgreSQL server at ``url`` accepts a connection."""
    try:
        with psycopg.connect(url, connect_timeout=timeout_s, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def with_database(url: str, dbname: str) -> str:
    """``url`` pointing at another database, as a ``postgresql://`` URL (what
    ``DATABASE_URL`` expects)."""
    info = {k: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(url).items()}
    info.pop("dbname", None)
    user = quote(info.pop("user", "postgres"), safe="")
    password = info.pop("password", None)
    auth = user if password is None else f"{user}:{quote(password, safe='')}"
    host = info.pop("host", "127.0.0.1")
    port = info.pop("port", "5432")
    if host.startswith("/"):  # a unix socket directory goes in the query string
        info.update(host=host, port=port)
        netloc = f"{auth}@"
    else:
        netloc = f"{auth}@{host}:{port}"
    query = f"?{urlencode(info)}" if info else ""
    return f"postgresql://{netloc}/{quote(dbname, safe='')}{query}"


def create_database(admin_url: str, prefix: str = "omninudge_test") -> str:
    """Create a uniquely named database (pid + random suffix); return its URL."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(admin_url, name)


def drop_database(admin_url: str, url: str) -> None:
    """Drop the database of ``url``, closing connections left open to it."""
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name)))
        )


def _postgres_bin_dir() -> Path:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )
    for candidate in reversed(candidates):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl) found")


class PostgresCluster:
    """A throwaway PostgreSQL cluster in a temporary directory on a loopback port.

    The server refuses to run as root, so when the tests run as root the cluster
    belongs to the ``postgres`` system user and commands run through ``runuser``.
    """

    def __init__(self, *, port: int | None = None, fsync: bool = True) -> None:
        self.bin_dir = _postgres_bin_dir()
        self.port = port or spare_port()
        self.fsync = fsync
        self.root = Path(tempfile.mkdtemp(prefix="omninudge-pg-"))
        self.data_dir = self.root / "data"
        self.log_file = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, user="postgres", group="postgres")
            self.root.chmod(0o700)
        self._initdb()

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=timeout)

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1"
            f" -c unix_socket_directories={self.root}"
            f" -c fsync={'on' if self.fsync else 'off'} -c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options, "-w",
            "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean), or ``immediate`` (crash-like, recovery on start)."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def kill(self) -> None:
        """SIGKILL the postmaster (its backends exit when they notice)."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    def pid(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            return int(pid_file.read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        return pid is not None and _alive(pid) and postgres_answers(self.admin_url)

    def destroy(self) -> None:
        """Stop the server if it runs and delete the directory."""
        pid = self.pid()
        if pid is not None and _alive(pid):
            with contextlib.suppress(subprocess.SubprocessError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still "exists"; reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """An admin URL (database ``postgres``) of a server the run may create databases on."""
    forced = os.environ.get("OMNINUDGE_TEST_PG_FORCE_THROWAWAY") == "1"
    configured = os.environ.get("OMNINUDGE_TEST_PG")
    if configured and not forced:
        if not postgres_answers(configured):
            pytest.fail(f"OMNINUDGE_TEST_PG={configured} does not answer")
        yield configured
        return
    if not forced and postgres_answers(DEFAULT_PG_URL):
        yield DEFAULT_PG_URL
        return
    with PostgresCluster() as cluster:
        yield cluster.admin_url


@pytest.fixture(scope="session")
def postgres_database_factory(postgres_server: str) -> Iterator[Callable[[], str]]:
    """Make fresh, empty databases on demand (dropped at the end of the session)."""
    made: list[str] = []

    def make() -> str:
        url = create_database(postgres_server)
        made.append(url)
        return url

    yield make
    for url in made:
        with contextlib.suppress(psycopg.Error):
            drop_database(postgres_server, url)


@pytest.fixture(scope="session")
def postgres_dsn(postgres_database_factory: Callable[[], str]) -> str:
    """The URL of one fresh database shared by the whole test run."""
    return postgres_database_factory()


@pytest.fixture
def postgres_cluster_factory() -> Iterator[Callable[[], PostgresCluster]]:
    """Start throwaway clusters on demand (for drills that stop or kill PostgreSQL);
    each is destroyed when the test ends."""
    clusters: list[PostgresCluster] = []

    def make() -> PostgresCluster:
        cluster = PostgresCluster()
        clusters.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in clusters:
        cluster.destroy()
