"""Run the real server: `python -m refapi` as a subprocess on a free 127.0.0.1 port; and a
throwaway PostgreSQL cluster (testkit.postgres) with a fresh database per test."""

from __future__ import annotations

import importlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit.postgres import PostgresServer, PostgresUnavailable, postgres_server, server_bindir

START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
POLL_SECONDS = 0.05


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RefapiProcess:
    """One `python -m refapi` process with its own port, logs and (by default) database."""

    def __init__(
        self, name: str, workdir: Path, env: dict[str, str], args: tuple[str, ...]
    ) -> None:
        self.port = int(env["PORT"]) if env["PORT"].isdigit() else 0
        self.stdout_path = workdir / f"{name}.out"
        self.stderr_path = workdir / f"{name}.err"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "refapi", *args],
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=err,
            )
        # trust_env=False: never route 127.0.0.1 through a proxy from the environment.
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", trust_env=False, timeout=5.0
        )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def logs(self) -> str:
        return f"--- stdout ---\n{self.stdout_path.read_text()}--- stderr ---\n{self.stderr}"

    def get(self, path: str) -> httpx.Response:
        return self.http.get(path)

    def post(self, path: str, body: Any) -> httpx.Response:
        return self.http.post(path, json=body)

    def wait_for(self, path: str, status: int, timeout: float = START_TIMEOUT_SECONDS) -> Any:
        """Poll until `path` answers `status`; return its JSON body."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"refapi exited {self.process.returncode} early\n{self.logs()}")
            try:
                response = self.get(path)
            except httpx.TransportError:
                pass
            else:
                if response.status_code == status:
                    return response.json()
            time.sleep(POLL_SECONDS)
        pytest.fail(f"{path} never answered {status} within {timeout}s\n{self.logs()}")

    def wait_for_exit(self, timeout: float = START_TIMEOUT_SECONDS) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"refapi still running after {timeout}s\n{self.logs()}")

    def stop(self, stop_signal: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(stop_signal)
        return self.wait_for_exit(STOP_TIMEOUT_SECONDS)

    def close(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_SECONDS)


@pytest.fixture
def start_refapi(tmp_path: Path) -> Iterator[Callable[..., RefapiProcess]]:
    """Start refapi with APP_VERSION/GIT_COMMIT set, a fresh port and a SQLite file in tmp_path.

    Keyword arguments override environment variables; `args` are passed to refapi.
    """
    started: list[RefapiProcess] = []

    def start(*args: str, db: str = "refapi.db", **variables: str) -> RefapiProcess:
        env = dict(os.environ)
        env.update(
            PORT=str(free_port()),
            HOST="127.0.0.1",
            DATABASE_URL=f"sqlite:///{tmp_path / db}",
            APP_VERSION="9.8.7",
            GIT_COMMIT="feedface",
            PYTHONUNBUFFERED="1",
        )
        env.update(variables)
        started.append(RefapiProcess(f"refapi-{len(started)}", tmp_path, env, args))
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster per test session (per xdist worker); skipped where there is none."""
    try:
        importlib.import_module("psycopg")
        server_bindir()
    except (ModuleNotFoundError, PostgresUnavailable) as exc:
        # In CI a skip would hide every PostgreSQL test: scripts/setup installs the server.
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL tests cannot run: {exc} — run scripts/setup")
        pytest.skip(str(exc))
    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """A fresh, empty database in the session's cluster."""
    return postgres.create_database(f"refapi_{secrets.token_hex(4)}")
