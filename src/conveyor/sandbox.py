"""Throwaway environments and releases, for tests, benchmarks and end-to-end runs.

A sandbox environment is a real one — its own deploy.toml, router, ledger and lock on a
real engine — with a random name, free ports on 127.0.0.1 and short timeouts, removed
completely afterwards. Derived releases are real images built ``FROM`` a built one that
differ only in the version they report and, optionally, an injected fault.
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import socket
from pathlib import Path
from typing import Any

import docker.errors

from conveyor import artifacts


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def allocate_ports(count: int, offsets: tuple[int, ...] = (0,)) -> list[int]:
    """``count`` consecutive ports free on 127.0.0.1 at every offset (hosts share loopback)."""
    rng = secrets.SystemRandom()
    for _ in range(200):
        start = rng.randrange(20000, 40000, 10)
        ports = list(range(start, start + count))
        if all(port_free(p + off) for p in ports for off in offsets):
            return ports
    raise RuntimeError("no free range of ports on 127.0.0.1")


PORTS_NEEDED = 7  # public, preview, admin, api blue/green, web blue/green


def environment_toml(
    name: str,
    ports: list[int],
    dist: Path,
    docker_dir: Path,
    hosts: list[dict[str, Any]],
    *,
    ready: float = 30,
    verify: float = 1.0,
    drain: float = 0.2,
    keep: int = 3,
) -> str:
    """A deploy.toml for one sandbox environment with the reference api and web services."""
    host_lines = ", ".join(
        "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in host.items()) + " }" for host in hosts
    )
    return f"""
[project]
name = "conveyor-sandbox"
source = "https://example.invalid/conveyor"

[build]
dist_dir = "{dist}"

[images.api]
dockerfile = "{docker_dir / "Dockerfile.api"}"
kind = "python-service"

[images.web]
dockerfile = "{docker_dir / "Dockerfile.web"}"
kind = "static-site"

[images.router]
dockerfile = "{docker_dir / "Dockerfile.router"}"
kind = "router"

[environments.{name}]
hosts = [{host_lines}]
keep_releases = {keep}

[environments.{name}.router]
port = {ports[0]}
preview_port = {ports[1]}
admin_port = {ports[2]}

[environments.{name}.timeouts]
ready = {ready}
verify = {verify}
drain = {drain}
stop = 5
lock_stale = 20

[environments.{name}.services.api]
image = "api"
route = "/api"
ports = {{ blue = {ports[3]}, green = {ports[4]} }}
health = {{ path = "/readyz", interval = 1, timeout = 3, retries = 2 }}
env = {{ DATABASE_URL = "sqlite:////data/refapi.db" }}
volumes = {{ "conveyor-{name}-api-data" = "/data" }}

[environments.{name}.services.web]
image = "web"
route = "/"
ports = {{ blue = {ports[5]}, green = {ports[6]} }}
health = {{ path = "/readyz", interval = 1, timeout = 3, retries = 2 }}
"""


def new_name() -> str:
    return f"t{secrets.token_hex(3)}"


def service_port(ports: list[int], service: str, color: str) -> int:
    return ports[{"api": 3, "web": 5}[service] + (0 if color == "blue" else 1)]


def teardown(client: Any, name: str) -> None:
    """Remove every container and volume of a sandbox environment."""
    for container in client.containers.list(all=True, filters={"label": f"conveyor.env={name}"}):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    for volume in client.volumes.list(filters={"name": f"conveyor-{name}-"}):
        with contextlib.suppress(docker.errors.APIError):
            volume.remove(force=True)


def derive_release(
    client: Any,
    base: dict[str, Any],
    dist: Path,
    version: str,
    *,
    fault: str | None = None,
) -> Path:
    """A dist/<version>/ folder whose images report ``version`` (and run with ``fault``)."""
    entries = {}
    for name in ("api", "web"):
        lines = [f"FROM {base[name]['id']}", f"ENV APP_VERSION={version}"]
        if fault and name == "api":
            lines.append(f"ENV REFAPI_FAULT={fault}")
        tag = f"conveyor-sandbox/{name}:{version.replace('+', '-')}"
        image, _ = client.images.build(
            fileobj=io.BytesIO("\n".join(lines).encode()), tag=tag, rm=True
        )
        entries[name] = {"image": tag, "id": image.id, "tags": [tag]}
    folder = dist / version
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "NOTES.txt").write_text(f"sandbox release {version} fault={fault}\n")
    artifacts.write_manifest(
        folder,
        {
            "schema": artifacts.MANIFEST_SCHEMA,
            "name": "conveyor-sandbox",
            "version": version,
            "image_tag": version.replace("+", "-"),
            "image_tags": [version.replace("+", "-")],
            "commit": "0" * 40,
            "dirty": False,
            "build_time": "2026-01-01T00:00:00Z",
            "source_date_epoch": 1767225600,
            "files": artifacts.describe_files(folder, ["NOTES.txt"]),
            "images": entries,
        },
    )
    return folder
