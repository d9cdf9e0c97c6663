"""The health check Docker runs in every service container: when its failures count, and that
the command itself tells a serving port from a failing or silent one."""

from __future__ import annotations

import http.server
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conveyor import config
from conveyor.errors import ConfigError
from conveyor.hosts import HostTarget
from conveyor.router import Ports

ROOT = Path(__file__).resolve().parents[2]


def parse(data: dict[str, Any]) -> config.Config:
    return config.parse(data, Path("deploy.toml"))


def test_docker_counts_failed_checks_only_after_the_ready_timeout_unless_told(
    data: dict[str, Any],
) -> None:
    """A start slower than three checks on a busy host is not 'unhealthy': Docker's start
    period defaults to the environment's ready timeout, and an explicit one is kept."""
    data["environments"]["staging"]["timeouts"]["ready"] = 45
    data["environments"]["staging"]["services"]["web"]["health"]["start_period"] = 2.5
    env = parse(data).environment("staging")
    target = HostTarget(host=env.hosts[0], env=env, client=None, ports=Ports.of(env, 0))
    seconds = 1_000_000_000
    assert target.healthcheck(env.services["api"], "blue")["start_period"] == 45 * seconds
    assert target.healthcheck(env.services["web"], "blue")["start_period"] == int(2.5 * seconds)
    data["environments"]["staging"]["services"]["web"]["health"]["start_period"] = -1
    with pytest.raises(ConfigError, match=r"web\.health\.start_period\]: must be at least 0"):
        parse(data)


class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = 200 if self.path == "/readyz" else 503
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server(serve: Callable[[type[http.server.BaseHTTPRequestHandler]], int]) -> int:
    return serve(Answer)


def run_check(data: dict[str, Any], port: int, path: str) -> subprocess.CompletedProcess[str]:
    """Docker's health command for the api, pointed at ``port``, run as Docker runs it."""
    api = data["environments"]["staging"]["services"]["api"]
    api["ports"]["blue"] = port
    api["health"]["path"] = path
    env = parse(data).environment("staging")
    target = HostTarget(host=env.hosts[0], env=env, client=None, ports=Ports.of(env, 0))
    command = target.healthcheck(env.services["api"], "blue")["test"]
    assert command[:3] == ["CMD", "python3", "-S"], command
    return subprocess.run(command[1:], capture_output=True, text=True, timeout=30, check=False)


def test_the_health_command_passes_a_2xx_and_fails_anything_else(
    data: dict[str, Any], server: int
) -> None:
    assert run_check(data, server, "/readyz").returncode == 0
    failing = run_check(data, server, "/not-ready")
    assert failing.returncode == 1 and "answered b'503'" in failing.stderr, failing.stderr
    server_gone = run_check(data, 1, "/readyz")  # nothing listens on port 1
    assert server_gone.returncode == 1 and "ConnectionRefusedError" in server_gone.stderr
