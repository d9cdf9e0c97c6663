"""A throwaway PostgreSQL cluster for tests: its own temp dir, 127.0.0.1, a free port.

    with postgres_server() as pg:          # or the pytest fixture built on it
        url = pg.url                       # postgresql://USER:PW@127.0.0.1:PORT/DB
        pg.psql("SELECT 1")
        other = pg.create_database("t2")   # a fresh database's URL, same cluster

Debian's server binaries live in /usr/lib/postgresql/<major>/bin (not on PATH), and initdb
refuses to run as root: as root, every server command runs through ``runuser -u postgres``.
The cluster never listens on 5432 nor on any address but 127.0.0.1, or the address a test
gives in a network namespace it made itself (``host=``, ``netns=``: a swarm's nodes reach it
there); its Unix socket sits in its own temp dir. It is stopped (immediate) and deleted on exit.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_PORT = 5432
START_TIMEOUT_SECONDS = 30
BINDIR_ENV = "PG_BINDIR"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here; a test should skip with this message."""


def server_bindir() -> Path:
    """The newest installed server's bin dir (PG_BINDIR wins), which holds initdb and pg_ctl."""
    forced = os.environ.get(BINDIR_ENV)
    candidates = [forced] if forced else glob.glob("/usr/lib/postgresql/*/bin")
    found = [Path(c) for c in candidates if (Path(c) / "initdb").exists()]
    if not found and shutil.which("initdb"):
        found = [Path(str(shutil.which("initdb"))).resolve().parent]
    if not found:
        raise PostgresUnavailable(
            "no PostgreSQL server (initdb) in /usr/lib/postgresql/*/bin — run scripts/setup "
            "(it installs Debian's postgresql)"
        )
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port != DEFAULT_PORT:
            return port


@dataclass
class PostgresServer:
    """A running cluster and the database and password user made for the test."""

    bindir: Path
    root: Path
    port: int
    user: str
    password: str
    database: str
    as_postgres: tuple[str, ...]
    # Where it listens: 127.0.0.1 in this namespace, or an address in a test's own network
    # namespace (a swarm's switch, which every node reaches).
    host: str = "127.0.0.1"
    netns: str | None = None

    @property
    def in_netns(self) -> tuple[str, ...]:
        """The prefix that runs a command in the server's network namespace."""
        return ("nsenter", f"--net=/run/netns/{self.netns}") if self.netns else ()

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def psql(
        self, sql: str, *, database: str | None = None, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run SQL as the test user over TCP; unaligned, tuples only (``.stdout`` is the rows)."""
        psql = self.bindir / "psql"
        return subprocess.run(
            [
                *self.in_netns,
                str(psql) if psql.exists() else "psql",
                "--no-psqlrc",
                "--quiet",
                "--tuples-only",
                "--no-align",
                "--set=ON_ERROR_STOP=1",
                f"--dbname={self.url_for(database or self.database)}",
                f"--command={sql}",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def connect(self, *, autocommit: bool = True, database: str | None = None) -> Any:
        """A psycopg (3) connection as the test user; psycopg comes with refapi[postgres].
        Not to a server in another namespace (this process cannot reach it): use psql."""
        if self.netns:
            raise RuntimeError(f"{self.host} is in namespace {self.netns}: use psql()")
        try:
            psycopg = importlib.import_module("psycopg")
        except ModuleNotFoundError:
            raise PostgresUnavailable("psycopg is not installed (refapi[postgres])") from None
        return psycopg.connect(self.url_for(database or self.database), autocommit=autocommit)

    def create_database(self, name: str) -> str:
        """A new empty database owned by the test user; returns its URL."""
        self._superuser_sql(f'CREATE DATABASE "{name}" OWNER "{self.user}"')
        return self.url_for(name)

    def _superuser_sql(self, sql: str) -> None:
        self._run(
            self.bindir / "psql",
            "--no-psqlrc",
            "--quiet",
            "--set=ON_ERROR_STOP=1",
            f"--host={self.socket_dir}",
            f"--port={self.port}",
            "--username=postgres",
            "--dbname=postgres",
            f"--command={sql}",
        )

    def _run(self, program: Path, *args: str) -> None:
        result = subprocess.run(
            [*self.in_netns, *self.as_postgres, str(program), *args],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_SECONDS + 30,
            check=False,
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"{program.name} {args[:1]} failed: {' / '.join(tail)}")


@contextlib.contextmanager
def postgres_server(
    *,
    user: str = "conveyor",
    database: str = "conveyor",
    attempts: int = 3,
    host: str = "127.0.0.1",
    netns: str | None = None,
) -> Iterator[PostgresServer]:
    """Start a cluster (initdb + pg_ctl start), create ``database`` owned by a password
    ``user``, yield it, then stop it and delete everything it wrote. It listens on ``host``
    only, in the network namespace ``netns`` when given (a namespace the test made)."""
    bindir = server_bindir()
    root_user = os.geteuid() == 0
    if root_user and shutil.which("runuser") is None:
        raise PostgresUnavailable("running as root and no runuser to drop to the postgres user")
    as_postgres = ("runuser", "-u", "postgres", "--") if root_user else ()
    root = Path(tempfile.mkdtemp(prefix="conveyor-pg-"))
    server = PostgresServer(
        bindir, root, 0, user, secrets.token_hex(12), database, as_postgres, host, netns
    )
    try:
        if root_user:
            shutil.chown(root, user="postgres", group="postgres")
        server._run(
            bindir / "initdb",
            f"--pgdata={server.data_dir}",
            "--username=postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        (server.socket_dir).mkdir()
        if root_user:
            shutil.chown(server.socket_dir, user="postgres", group="postgres")
        if netns:
            # initdb admits TCP from loopback only; the hosts on the namespace's own subnets
            # (a swarm's nodes) come with the password too.
            with (server.data_dir / "pg_hba.conf").open("a") as hba:
                hba.write("host all all samenet scram-sha-256\n")
        _start(server, attempts)
        server._superuser_sql(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{server.password}'")
        server._superuser_sql(f'CREATE DATABASE "{database}" OWNER "{user}"')
        yield server
    finally:
        if server.port:
            with contextlib.suppress(Exception):
                server._run(
                    bindir / "pg_ctl",
                    "stop",
                    f"--pgdata={server.data_dir}",
                    "--mode=immediate",
                    "--wait",
                )
        shutil.rmtree(root, ignore_errors=True)


def _start(server: PostgresServer, attempts: int) -> None:
    """pg_ctl start on a free port; another process may take the port first, so retry."""
    for attempt in range(1, attempts + 1):
        server.port = free_port()
        options = (
            f"-k {server.socket_dir} -p {server.port} -c listen_addresses={server.host} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        try:
            server._run(
                server.bindir / "pg_ctl",
                "start",
                f"--pgdata={server.data_dir}",
                f"--log={server.log_path}",
                f"--options={options}",
                "--wait",
                f"--timeout={START_TIMEOUT_SECONDS}",
            )
            return
        except RuntimeError:
            server.port = 0
            if attempt == attempts:
                log = server.log_path.read_text() if server.log_path.exists() else ""
                raise RuntimeError(
                    f"PostgreSQL did not start in {attempts} attempts: {log[-500:]}"
                ) from None
