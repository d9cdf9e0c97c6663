"""Connections to Docker engines, with errors that say what to run."""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import docker.api.client
import requests
from docker.errors import DockerException

from conveyor.errors import EngineUnavailable

DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def describe(endpoint: str | None) -> str:
    return endpoint or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


_agent_started = False


def prepare_ssh() -> None:
    """For ``ssh://`` hosts in CI: load ``CONVEYOR_SSH_KEY`` into an ssh-agent and trust the
    host keys in ``CONVEYOR_SSH_KNOWN_HOSTS``. The key never touches the disk.

    Without those variables the user's own ssh setup (agent, ~/.ssh/config) is used as is.
    """
    global _agent_started  # noqa: PLW0603 - one agent per process
    key = os.environ.get("CONVEYOR_SSH_KEY")
    if key and not _agent_started:
        if not os.environ.get("SSH_AUTH_SOCK"):
            started = subprocess.run(
                ["ssh-agent", "-s"], capture_output=True, text=True, check=True
            ).stdout
            for name in ("SSH_AUTH_SOCK", "SSH_AGENT_PID"):
                found = re.search(rf"{name}=([^;]+);", started)
                if found:
                    os.environ[name] = found.group(1)
            pid = int(os.environ.get("SSH_AGENT_PID", "0"))
            if pid:
                atexit.register(_stop_agent, pid)
        added = subprocess.run(
            ["ssh-add", "-q", "-"],
            input=key.strip() + "\n",
            capture_output=True,
            text=True,
            check=False,
        )
        if added.returncode != 0:
            # ssh-add's message never contains the key; it says what is wrong with it.
            raise EngineUnavailable(
                f"CONVEYOR_SSH_KEY was not accepted by ssh-add: {added.stderr.strip()[:120]}"
            )
        _agent_started = True
    known = os.environ.get("CONVEYOR_SSH_KNOWN_HOSTS")
    if known:
        folder = Path.home() / ".ssh"
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / "known_hosts"
        present = set(path.read_text().splitlines()) if path.exists() else set()
        missing = [line for line in known.strip().splitlines() if line and line not in present]
        if missing:
            with path.open("a") as handle:
                handle.write("\n".join(missing) + "\n")


SSH_TRANSPORT = "docker.transport.sshconn"


def ssh_transport() -> tuple[type[BaseException], ...]:
    """Load the SDK's ssh:// transport that conveyor/__init__ held back, and hand it to the
    client class, which looks it up by name when it meets an ssh:// URL. Returns what the
    transport raises when the host cannot be reached or refuses us."""
    if SSH_TRANSPORT in sys.modules and sys.modules[SSH_TRANSPORT] is None:
        del sys.modules[SSH_TRANSPORT]
    transport = importlib.import_module(SSH_TRANSPORT)
    docker.api.client.SSHHTTPAdapter = transport.SSHHTTPAdapter
    return (transport.paramiko.SSHException,)


def _stop_agent(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


# Idle ssh sessions kept per engine connection: SSH_POOLS x SSH_POOL_SIZE.
SSH_POOLS = 2
SSH_POOL_SIZE = 2


def connect(endpoint: str | None = None, *, timeout: int = 120) -> Any:
    """A ``docker.DockerClient`` that has answered a ping.

    ``endpoint`` None means the local default (DOCKER_HOST, else the standard socket).
    The API version is negotiated: Debian's dockerd 20.10 speaks 1.41.
    """
    where = describe(endpoint)
    # OSError: an ssh:// host that does not answer fails in the transport, before Docker's API.
    failures: tuple[type[BaseException], ...] = (DockerException, OSError)
    if where.startswith("ssh://"):
        failures += ssh_transport()
    if endpoint is not None and endpoint.startswith("ssh://"):
        prepare_ssh()
    try:
        if endpoint is None:
            client = docker.from_env(timeout=timeout)
        else:
            # ssh:// goes through paramiko (agent, ~/.ssh/known_hosts, host keys checked):
            # the ssh-binary transport breaks its pipe on the many short execs a deploy makes.
            # Every pooled HTTP connection is an ssh session on one connection, and the SDK
            # keeps a pool per URL (9 by default, 4 connections each): far past sshd's default
            # MaxSessions 10. Two pools of two stay within it with a deploy's few parallel calls.
            client = docker.DockerClient(
                base_url=endpoint,
                timeout=timeout,
                use_ssh_client=False,
                num_pools=SSH_POOLS,
                max_pool_size=SSH_POOL_SIZE,
            )
        client.ping()
    except failures as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if not where.startswith("unix://"):
            raise EngineUnavailable(
                f"cannot reach the Docker engine at {where} — check that the host is up and "
                f"reachable (ssh access, DOCKER_HOST) [{reason[:160]}]"
            ) from None
        raise EngineUnavailable(
            f"no Docker engine at {where} — run scripts/setup (or start dockerd) [{reason[:160]}]"
        ) from None
    return client


def lost(exc: BaseException) -> bool:
    """Whether an engine call failed because nobody answered: refused, reset, timed out, or
    the socket gone (a daemon killed or restarted, a host unreachable) — not an API error."""
    return isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout)


def answers(client: Any, timeout: float = 3.0) -> bool:
    """A quick ping (``timeout`` seconds) of an already connected engine."""
    try:
        return bool(client.api._get(client.api._url("/_ping"), timeout=timeout).ok)
    except (DockerException, requests.exceptions.RequestException, OSError):
        return False
