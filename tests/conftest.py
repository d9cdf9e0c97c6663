"""Fixtures shared by every conveyor test: ports, the real Docker engine, a real registry."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conveyor import artifacts, engine, health, images
from conveyor import config as config_mod
from conveyor.config import Config
from conveyor.errors import EngineUnavailable
from testkit import sandbox
from testkit.registry import write_config as registry_config

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    """A free port below the ephemeral range (see sandbox.allocate_ports)."""
    return sandbox.allocate_ports(1)[0]


@pytest.fixture
def free_port() -> Callable[[], int]:
    return _free_port


@pytest.fixture(scope="session")
def repo_config() -> config_mod.Config:
    return config_mod.load(ROOT / "deploy.toml")


@pytest.fixture(scope="session")
def docker_client() -> Any:
    """The real engine scripts/setup starts. Missing it is a failure, never a skip."""
    try:
        return engine.connect()
    except EngineUnavailable as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def release_folder(repo_config: Config) -> Path:
    """dist/<version>/ of the checkout under test, built by the real build."""
    return artifacts.build(repo_config, say=lambda line: None)


@pytest.fixture(scope="session")
def release_images(repo_config: Config, docker_client: Any, release_folder: Path) -> dict[str, Any]:
    """The api and web images of that release, built by the real docker engine (not pushed)."""
    return images.build_images(repo_config, docker_client, release_folder, push_to_registry=False)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's docker-registry (CNCF distribution) on 127.0.0.1, storage in a temp dir."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is not installed — run scripts/setup as root")
    folder = tmp_path_factory.mktemp("registry")
    port = _free_port()
    config = registry_config(folder, f"127.0.0.1:{port}")
    log = (folder / "registry.log").open("wb")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"docker-registry did not start: {(folder / 'registry.log').read_text()}"
                )
            time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)
    log.close()


@dataclass
class Aftermath:
    """What is true after a command was killed: what the router serves, the ledger, status."""

    killed_at: str
    served: str | None
    history: list[dict[str, Any]]
    status: dict[str, Any]
    status_text: str

    def outcome(self, release: str) -> str:
        return next(r["outcome"] for r in self.history if r["id"] == release)


class CrashHarness:
    """One harness for every kill -9 test: run a conveyor command with its phases traced, kill
    it when it announces the named phase, then compare the router's served version, the ledger
    and ``status`` (DECISIONS: "one crash harness")."""

    def kill_at(
        self, env: Any, phase: str, *argv: str, nth: int = 1, after: float = 0.0
    ) -> Aftermath:
        """``after``: seconds to let the phase run before the kill (0: as it begins)."""

        def kill(process: subprocess.Popen[str]) -> None:
            time.sleep(after)
            process.send_signal(signal.SIGKILL)

        result = self.interrupt_at(env, phase, *argv, nth=nth, act=kill)
        assert result.returncode == -signal.SIGKILL, f"never reached phase {phase}: {result}"
        return self.observe(env, killed_at=phase)

    def interrupt_at(
        self,
        env: Any,
        phase: str,
        *argv: str,
        nth: int = 1,
        act: Callable[[subprocess.Popen[str]], None],
        env_vars: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the command with its phases traced (and ``env_vars`` in its environment) and
        call ``act`` (kill it, kill its daemon, drain a node) as it announces ``phase`` the
        ``nth`` time (each host announces its own); then let it end. Its stderr keeps the
        traced phases."""
        process = env.cli_running(*argv, env={**(env_vars or {}), "CONVEYOR_TRACE_PHASES": "1"})
        assert process.stderr is not None and process.stdout is not None
        seen: list[str] = []
        for line in process.stderr:
            seen.append(line.rstrip("\n"))
            if line.strip() == f"phase: {phase}" and (nth := nth - 1) == 0:
                act(process)
                break
        assert nth == 0, f"never reached phase {phase}: {seen}"
        rest = process.stderr.read()
        stdout = process.stdout.read()
        process.wait(timeout=120)
        stderr = "\n".join(seen) + "\n" + rest
        return subprocess.CompletedProcess(list(argv), process.returncode, stdout, stderr)

    def observe(self, env: Any, *, killed_at: str = "") -> Aftermath:
        def run(*argv: str) -> str:
            result = env.cli(*argv)
            assert result.returncode == 0, f"{argv}: {result.stdout}\n{result.stderr}"
            return str(result.stdout)

        port = env.public()
        answer = health.probe("127.0.0.1", port, "/api/version")
        return Aftermath(
            killed_at=killed_at,
            served=None if answer.body is None else answer.body.get("version"),
            history=json.loads(run("history", "--env", env.name, "--json")),
            status=json.loads(run("status", "--env", env.name, "--json")),
            status_text=run("status", "--env", env.name),
        )


@pytest.fixture
def crash() -> CrashHarness:
    return CrashHarness()
