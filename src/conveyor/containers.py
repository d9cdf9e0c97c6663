"""Service containers as conveyor names, labels and reads them: no engine needed.

Naming and labels are the contract between runs: every container conveyor creates carries
``conveyor.env``, ``conveyor.role`` and, for services, ``conveyor.service``,
``conveyor.color``, ``conveyor.release`` and ``conveyor.version``. ``observe`` reads only these,
so a second checkout, a CI runner or a rerun after a crash all see the same environment.

:class:`Container` is the part of the docker SDK's container object that conveyor calls; the
engine side (``hosts``, ``bluegreen``, ``state``, ``locks``) is typed against it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from conveyor.config import Service
from conveyor.errors import ConveyorError

# Values of the ``conveyor.role`` label: what a container is for.
ROLE_SERVICE = "service"
ROLE_ROUTER = "router"
# A one-off container: a migration, a backup or a restore, removed when it ends.
ROLE_ONEOFF = "oneoff"


class ExecResult(Protocol):
    exit_code: int | None
    output: bytes


class Image(Protocol):
    id: str


class Container(Protocol):
    """The container methods and attributes conveyor uses (docker SDK ``Container``)."""

    id: str
    name: str
    status: str
    attrs: dict[str, Any]
    labels: dict[str, str]
    image: Image
    client: Any  # the SDK client: secretfiles streams stdin through its low-level API

    def start(self) -> None: ...
    def stop(self, *, timeout: int = ...) -> None: ...
    def kill(self, signal: str | int | None = ...) -> None: ...
    def reload(self) -> None: ...
    def logs(
        self,
        *,
        tail: int | str = ...,
        timestamps: bool = ...,
        stdout: bool = ...,
        stderr: bool = ...,
        since: float = ...,
        until: float = ...,
    ) -> bytes: ...
    def exec_run(self, cmd: str | list[str], **options: Any) -> ExecResult: ...
    def put_archive(self, path: str, data: bytes) -> bool: ...
    def get_archive(self, path: str) -> tuple[Iterable[bytes], dict[str, Any]]: ...
    def remove(self, *, force: bool = ..., v: bool = ...) -> None: ...
    def rename(self, name: str) -> None: ...
    def wait(self, *, timeout: float = ...) -> dict[str, Any]: ...


def service_container_name(env: str, service: str, color: str, release: str) -> str:
    return f"conveyor-{env}-{service}-{color}-{release}"


# Swarm's limit on a service's name (a DNS label).
MAX_SWARM_SERVICE_NAME = 63


def swarm_service_name(name: str, shorten: str) -> str:
    """``name``, if Swarm takes it as a service's name; else one line saying to shorten
    ``shorten`` (what the name is made of)."""
    if len(name) > MAX_SWARM_SERVICE_NAME:
        raise ConveyorError(
            f"Swarm service name {name} is longer than {MAX_SWARM_SERVICE_NAME} characters — "
            f"shorten {shorten}"
        )
    return name


def router_container_name(env: str) -> str:
    return f"conveyor-{env}-router"


def next_router_container_name(env: str) -> str:
    """The new router while it starts beside the running one (a new router image)."""
    return f"{router_container_name(env)}-next"


def container_fingerprint(service: Service, color: str) -> str:
    """A hash of what a service container was created with (its declaration, never a secret's
    value): a kept container is reused only while this still matches deploy.toml."""
    described = asdict(service)
    # Migration limits never reach the container; only whether conveyor runs its migrations
    # does (MIGRATE_ON_START=0), and a service without them keeps its old fingerprint.
    if described.pop("migrations") is not None:
        described["schema_managed"] = True
    # Likewise the flag volume: only services with flags carry it in their fingerprint.
    if described.pop("flags"):
        described["flags"] = True
    declared = json.dumps({"service": described, "color": color}, sort_keys=True, default=str)
    return hashlib.sha256(declared.encode()).hexdigest()[:16]


def service_labels(
    env: str, service: Service, color: str, release: str, version: str
) -> dict[str, str]:
    """The labels a service container is created with: what ``observe`` reads back."""
    return {
        "conveyor.env": env,
        "conveyor.role": ROLE_SERVICE,
        "conveyor.service": service.name,
        "conveyor.color": color,
        "conveyor.release": release,
        "conveyor.version": version,
        "conveyor.config": container_fingerprint(service, color),
    }


_HEALTH_MARKERS = (
    ("(healthy)", "healthy"),
    ("(unhealthy)", "unhealthy"),
    ("(health: starting)", "starting"),
)


@dataclass
class ServiceContainer:
    """A service container as the engine reports it."""

    name: str
    id: str
    service: str
    color: str
    release: str
    version: str
    image_id: str
    status: str
    health: str | None
    created: str
    fingerprint: str = ""

    @property
    def running(self) -> bool:
        return self.status in {"running", "restarting"}

    @classmethod
    def from_listing(cls, attrs: dict[str, Any]) -> ServiceContainer:
        """From the engine's container *list* entry: one call for all, no inspect each."""
        labels = attrs.get("Labels") or {}
        status_text = str(attrs.get("Status", ""))
        health = None
        for marker, value in _HEALTH_MARKERS:
            if marker in status_text:
                health = value
        return cls(
            name=str((attrs.get("Names") or ["/?"])[0]).lstrip("/"),
            id=str(attrs.get("Id", "")),
            service=labels.get("conveyor.service", "?"),
            color=labels.get("conveyor.color", "?"),
            release=labels.get("conveyor.release", "?"),
            version=labels.get("conveyor.version", "?"),
            image_id=str(attrs.get("ImageID", "")),
            status=str(attrs.get("State", "?")),
            health=health,
            # Seconds, then the release id: two containers made in one second still order.
            created=f"{int(attrs.get('Created', 0)):012d}-{labels.get('conveyor.release', '')}",
            fingerprint=labels.get("conveyor.config", ""),
        )


def lock_name(env: str) -> str:
    """The lock container's name: the engine refuses a second one, which makes it a lock."""
    return f"conveyor-{env}-lock"
