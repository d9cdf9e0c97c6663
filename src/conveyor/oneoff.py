"""One-off containers: a migration, a backup or a restore, run once beside a service.

A one-off runs from a release's image with the service's environment, file secrets and volumes
(so it reaches the same database the service does), on the host's network, with a time limit.
Its output is kept in a log file beside deploy.toml and its tail is returned for the ledger;
the container is removed when it ends. One left by a crashed run (``conveyor.role=oneoff``) is
waited for, then removed, before the next one starts: a migration killed half way must not
race the next.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import requests.exceptions

from conveyor import secretfiles
from conveyor.config import Service
from conveyor.console import Console
from conveyor.containers import ROLE_ONEOFF
from conveyor.errors import ConveyorError

TAIL_LINES = 12


@dataclass(frozen=True)
class OneOff:
    """What a one-off container should run."""

    purpose: str  # "migrate", "backup", "restore": part of its name and label
    release: str  # the ledger record it belongs to
    image: str
    command: list[str]
    env: dict[str, str]
    volumes: dict[str, str]
    timeout: float
    user: str | None = None  # None: the image's own user


@dataclass(frozen=True)
class Finished:
    """How a one-off container ended; ``code`` is None when it ran out of time."""

    code: int | None
    stdout: str
    stderr: str
    seconds: float
    log: Path | None = None

    @property
    def ok(self) -> bool:
        return self.code == 0

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines of its error output (else its output), for a ledger record."""
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return "\n".join(text[-lines:])

    def last_line(self) -> str:
        said = self.tail(1)
        if self.code is None:
            return f"timed out after {self.seconds:.0f} s" + (f" ({said})" if said else "")
        return said or f"exit {self.code}, no output"


def container_name(env: str, service: str, purpose: str, release: str) -> str:
    return f"conveyor-{env}-{service}-{purpose}-{release}"


def labels(env: str, service: str, run: OneOff) -> dict[str, str]:
    return {
        "conveyor.env": env,
        "conveyor.role": ROLE_ONEOFF,
        "conveyor.service": service,
        "conveyor.purpose": run.purpose,
        "conveyor.release": run.release,
    }


def settle_leftovers(
    client: Any, env: str, out: Console, *, wait: float, log_dir: Path | None = None
) -> list[str]:
    """Wait for one-offs a crashed run left behind (a migration may still be running), then
    remove them. Returns what was found, for the ledger."""
    found = client.containers.list(
        all=True, filters={"label": [f"conveyor.env={env}", f"conveyor.role={ROLE_ONEOFF}"]}
    )
    settled = []
    for leftover in found:
        if leftover.status == "running":
            out.say(f"  waiting for {leftover.name}, left running by an interrupted run…")
            with contextlib.suppress(requests.exceptions.RequestException, docker.errors.APIError):
                leftover.wait(timeout=wait)
        if log_dir is not None:
            with contextlib.suppress(docker.errors.APIError, OSError):
                text = leftover.logs().decode(errors="replace")
                log_dir.mkdir(parents=True, exist_ok=True)
                (log_dir / f"{leftover.name}.log").write_text(text, encoding="utf-8")
        with contextlib.suppress(docker.errors.NotFound):
            leftover.remove(force=True, v=True)
        settled.append(f"removed {leftover.name}, left by an interrupted run")
    return settled


def run(
    client: Any,
    env: str,
    service: Service,
    job: OneOff,
    *,
    log_dir: Path | None = None,
) -> Finished:
    """Run ``job`` to the end (or its time limit) and remove its container."""
    name = container_name(env, service.name, job.purpose, job.release)
    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(name).remove(force=True, v=True)
    began = time.monotonic()
    try:
        container = client.containers.create(
            job.image,
            command=job.command,
            name=name,
            network_mode="host",
            environment=job.env,
            labels=labels(env, service.name, job),
            volumes={vol: {"bind": path, "mode": "rw"} for vol, path in job.volumes.items()},
            tmpfs=secretfiles.tmpfs(service),
            **({"user": job.user} if job.user is not None else {}),
        )
    except docker.errors.ImageNotFound:
        shown = job.image[:19] if job.image.startswith("sha256:") else job.image
        raise ConveyorError(
            f"{name}: image {shown} is not on this host"
            + (
                " — run scripts/setup (it builds the backup tools image)"
                if "pgtools" in shown
                else ""
            )
        ) from None
    try:
        secretfiles.start(container, service)
        code = _wait(container, job.timeout)
        stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
        stderr = container.logs(stdout=False, stderr=True).decode(errors="replace")
    finally:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True, v=True)  # v: an image's VOLUME it left anonymous
    finished = Finished(code, stdout, stderr, time.monotonic() - began)
    if log_dir is not None:
        finished = _keep_log(finished, log_dir / f"{name}.log")
    return finished


def _wait(container: Any, timeout: float) -> int | None:
    try:
        result = container.wait(timeout=timeout)
    except requests.exceptions.RequestException:
        with contextlib.suppress(docker.errors.APIError):
            container.kill()
        return None
    return int(result.get("StatusCode", 1))


def _keep_log(finished: Finished, path: Path) -> Finished:
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"# exit {finished.code} after {finished.seconds:.1f} s\n# stdout\n{finished.stdout}"
            f"\n# stderr\n{finished.stderr}\n",
            encoding="utf-8",
        )
        return Finished(finished.code, finished.stdout, finished.stderr, finished.seconds, path)
    return finished
