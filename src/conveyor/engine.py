"""Connections to Docker engines, with errors that say what to run."""

from __future__ import annotations

import os
from typing import Any

import docker
from docker.errors import DockerException

from conveyor.errors import EngineUnavailable

DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def describe(endpoint: str | None) -> str:
    return endpoint or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


def connect(endpoint: str | None = None, *, timeout: int = 120) -> Any:
    """A ``docker.DockerClient`` that has answered a ping.

    ``endpoint`` None means the local default (DOCKER_HOST, else the standard socket).
    The API version is negotiated: Debian's dockerd 20.10 speaks 1.41.
    """
    where = describe(endpoint)
    try:
        if endpoint is None:
            client = docker.from_env(timeout=timeout)
        else:
            client = docker.DockerClient(
                base_url=endpoint, timeout=timeout, use_ssh_client=endpoint.startswith("ssh://")
            )
        client.ping()
    except DockerException as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EngineUnavailable(
            f"no Docker engine at {where} — run scripts/setup (or start dockerd) [{reason[:160]}]"
        ) from None
    return client
