"""A one-node Docker Swarm on this machine, for the quickstart's ``swarm`` environment.

Swarm mode refuses ``live-restore``, which the machine's own engine runs with (a daemon
restart must not stop what it serves), so the swarm gets a dockerd of its own: its own socket,
data and exec roots, and containerd namespaces, beside the main engine and on the same
containerd, host networking only. It advertises 127.0.0.1: nothing outside the machine can
join it or reach it. ``scripts/setup --swarm`` makes it; it is idempotent, like set-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor import engine, machine
from conveyor.errors import EngineUnavailable
from conveyor.images import copy_image, image_present


@dataclass(frozen=True)
class Place:
    """Where the swarm's dockerd keeps its socket, data and log, the containerd namespaces it
    uses, and the address it advertises (the quickstart's: :data:`QUICKSTART`)."""

    run: Path = Path("/run/conveyor-swarm")
    data: Path = Path("/var/lib/conveyor-swarm")
    log: Path = Path("/var/log/conveyor-swarm-dockerd.log")
    containerd_namespace: str = "conveyor-swarm"
    address: str = "127.0.0.1"

    @property
    def endpoint(self) -> str:
        """The endpoint deploy.toml's swarm environment names."""
        return f"unix://{self.run / 'docker.sock'}"

    def dockerd_args(self) -> tuple[str, ...]:
        return (
            "-H",
            self.endpoint,
            f"--data-root={self.data}",
            f"--exec-root={self.run / 'exec'}",
            f"--pidfile={self.run / 'docker.pid'}",
            "--bridge=none",
            "--iptables=false",
            f"--containerd={machine.CONTAINERD_SOCKET}",
            f"--containerd-namespace={self.containerd_namespace}",
            f"--containerd-plugins-namespace={self.containerd_namespace}-plugins",
        )


QUICKSTART = Place()


def ensure(
    report: machine.Report,
    main: Any,
    images: list[str],
    *,
    place: Place = QUICKSTART,
    wait: float = 60.0,
) -> Any:
    """The swarm's engine, started and made a one-node swarm if it is not, holding ``images``
    (copied from the machine's engine ``main``: the router's base, built there offline)."""
    client = _engine(report, place, wait)
    state = (client.info().get("Swarm") or {}).get("LocalNodeState")
    if state == "active":
        report.skipped(f"local swarm: {place.endpoint} is already a swarm manager")
    else:
        client.swarm.init(advertise_addr=place.address, listen_addr=f"{place.address}:2377")
        report.did(f"made {place.endpoint} a one-node swarm (advertising {place.address})")
    for tag in images:
        if image_present(client, tag):
            report.skipped(f"local swarm: {tag} is already present")
            continue
        copy_image(main, client, tag)
        report.did(f"copied {tag} to the local swarm")
    return client


def _engine(report: machine.Report, place: Place, wait: float) -> Any:
    try:
        client = engine.connect(place.endpoint, timeout=30)
    except EngineUnavailable:
        pass
    else:
        report.skipped(f"local swarm engine: already answers at {place.endpoint}")
        return client
    if not machine.is_root():
        raise EngineUnavailable(
            f"no swarm engine at {place.endpoint} and not root — run scripts/setup --swarm as root"
        )
    machine.ensure_containerd(report, wait=wait)
    place.run.mkdir(parents=True, exist_ok=True)
    client = machine.start_dockerd(place.dockerd_args(), place.log, place.endpoint, wait=wait)
    report.did(f"started the swarm's dockerd at {place.endpoint} (log: {place.log})")
    return client
