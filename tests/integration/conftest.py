"""Integration fixtures: the repo's release built once, test releases and throwaway environments.

Every environment a test creates has its own name and free ports on 127.0.0.1 and is torn
down afterwards (containers, router, state and data volumes), so tests never touch staging.
Test releases are real images derived from the built API and web images, differing only in
the version they report and, for the unhealthy ones, an injected fault (``REFAPI_FAULT``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from conveyor import config as config_mod
from conveyor import sandbox
from conveyor.config import Config

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class TestEnvironment:
    """A throwaway environment: its deploy.toml, its ports and how to reach it."""

    name: str
    config_path: Path
    ports: list[int]
    offsets: tuple[int, ...]
    dist: Path

    @property
    def config(self) -> Config:
        return config_mod.load(self.config_path)

    def public(self, offset: int = 0) -> int:
        return self.ports[0] + offset

    def service_port(self, service: str, color: str, offset: int = 0) -> int:
        return sandbox.service_port(self.ports, service, color) + offset

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 240) -> Any:
        """Run ``python -m conveyor --config … ARGS`` as a user would."""
        return subprocess.run(
            ["python", "-m", "conveyor", "--config", str(self.config_path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )

    def cli_running(self, *args: str, env: dict[str, str] | None = None) -> Any:
        """The same command, started in the background (stdout and stderr piped)."""
        return subprocess.Popen(
            ["python", "-m", "conveyor", "--config", str(self.config_path), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )


@dataclass
class EnvironmentFactory:
    tmp: Path
    clients: list[Any]
    made: list[TestEnvironment] = field(default_factory=list)

    def __call__(
        self,
        hosts: list[dict[str, Any]] | None = None,
        offsets: tuple[int, ...] = (0,),
        **timing: Any,
    ) -> TestEnvironment:
        name = sandbox.new_name()
        ports = sandbox.allocate_ports(sandbox.PORTS_NEEDED, offsets)
        folder = self.tmp / name
        folder.mkdir()
        dist = self.tmp / "dist"
        dist.mkdir(exist_ok=True)
        path = folder / "deploy.toml"
        path.write_text(
            sandbox.environment_toml(
                name,
                ports,
                dist,
                ROOT / "docker",
                hosts or [{"name": "local", "docker": "local"}],
                **timing,
            ),
            encoding="utf-8",
        )
        env = TestEnvironment(name=name, config_path=path, ports=ports, offsets=offsets, dist=dist)
        self.made.append(env)
        return env


@pytest.fixture
def make_environment(
    tmp_path: Path, docker_client: Any, test_releases: Any
) -> Iterator[EnvironmentFactory]:
    factory = EnvironmentFactory(tmp=tmp_path, clients=[docker_client])
    # Releases live in one dist folder shared by every test environment of this test.
    shutil.copytree(test_releases.dist, tmp_path / "dist")
    yield factory
    for env in factory.made:
        for client in factory.clients:
            sandbox.teardown(client, env.name)


@dataclass
class TestReleases:
    """Releases derived from the built images: dist folders a deploy can verify and use."""

    client: Any
    base: dict[str, Any]
    dist: Path
    made: dict[str, Path] = field(default_factory=dict)

    def make(self, version: str, *, fault: str | None = None) -> str:
        if version not in self.made:
            self.made[version] = sandbox.derive_release(
                self.client, self.base, self.dist, version, fault=fault
            )
        return version


@pytest.fixture(scope="session")
def test_releases(
    docker_client: Any, release_images: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> TestReleases:
    releases = TestReleases(
        client=docker_client, base=release_images, dist=tmp_path_factory.mktemp("releases")
    )
    for version in ("1.0.0", "2.0.0", "3.0.0"):
        releases.make(version)
    releases.make("9.0.1+notready", fault="not-ready")
    releases.make("9.0.2+crash", fault="crash")
    releases.make("9.0.3+failsoon", fault="fail-after-ready=4")
    return releases


@pytest.fixture(scope="session")
def second_engine(
    tmp_path_factory: pytest.TempPathFactory, docker_client: Any
) -> Iterator[tuple[str, Any]]:
    """A second real dockerd on this machine: another host with its own socket and data root."""
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is not installed — run scripts/setup as root")
    folder = Path("/tmp") / f"conveyor-h2-{secrets.token_hex(3)}"
    folder.mkdir()
    socket_path = folder / "docker.sock"
    log = (folder / "dockerd.log").open("wb")
    process = subprocess.Popen(
        [
            "dockerd",
            "-H",
            f"unix://{socket_path}",
            "--data-root",
            str(folder / "data"),
            "--exec-root",
            str(folder / "exec"),
            "--pidfile",
            str(folder / "docker.pid"),
            "--bridge=none",
            "--iptables=false",
            "--containerd-namespace",
            f"h2-{folder.name}",
            "--containerd-plugins-namespace",
            f"h2p-{folder.name}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            client = docker.DockerClient(base_url=f"unix://{socket_path}")
            client.ping()
            break
        except Exception:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"second dockerd did not start: {(folder / 'dockerd.log').read_text()[-2000:]}"
                )
            time.sleep(0.5)
    yield f"unix://{socket_path}", client
    for container in client.containers.list(all=True):
        container.remove(force=True)
    client.close()
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()
    # dockerd leaves mounts behind (its data root, the default netns): undo them, deepest first.
    mounts = Path("/proc/mounts").read_text().split("\n")
    inside = sorted({line.split()[1] for line in mounts if f" {folder}/" in line}, reverse=True)
    for mount in inside:
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False
