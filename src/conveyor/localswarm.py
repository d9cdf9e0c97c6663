"""A one-node Docker Swarm on this machine, for the quickstart's ``swarm`` environment.

Swarm mode refuses ``live-restore``, which the machine's own engine runs with (a daemon
restart must not stop what it serves), so the swarm gets a dockerd of its own: its own socket,
data and exec roots, and containerd namespaces, beside the main engine and on the same
containerd, host networking only. It advertises 127.0.0.1: nothing outside the machine can
join it or reach it. ``scripts/setup --swarm`` makes it; it is idempotent, like set-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conveyor import engine, machine
from conveyor.errors import EngineUnavailable
from conveyor.images import image_present

RUN = Path("/run/conveyor-swarm")
SOCKET = RUN / "docker.sock"
# The endpoint deploy.toml's swarm environment names.
ENDPOINT = f"unix://{SOCKET}"
DATA = Path("/var/lib/conveyor-swarm")
LOG = Path("/var/log/conveyor-swarm-dockerd.log")
ARGS = (
    "-H",
    ENDPOINT,
    f"--data-root={DATA}",
    f"--exec-root={RUN / 'exec'}",
    f"--pidfile={RUN / 'docker.pid'}",
    "--bridge=none",
    "--iptables=false",
    f"--containerd={machine.CONTAINERD_SOCKET}",
    "--containerd-namespace=conveyor-swarm",
    "--containerd-plugins-namespace=conveyor-swarm-plugins",
)
ADDRESS = "127.0.0.1"


def ensure(report: machine.Report, main: Any, images: list[str], *, wait: float = 60.0) -> Any:
    """The swarm's engine, started and made a one-node swarm if it is not, holding ``images``
    (copied from the machine's engine ``main``: the router's base, built there offline)."""
    client = _engine(report, wait)
    state = (client.info().get("Swarm") or {}).get("LocalNodeState")
    if state == "active":
        report.skipped(f"local swarm: {ENDPOINT} is already a swarm manager")
    else:
        client.swarm.init(advertise_addr=ADDRESS, listen_addr=f"{ADDRESS}:2377")
        report.did(f"made {ENDPOINT} a one-node swarm (advertising {ADDRESS})")
    for tag in images:
        if image_present(client, tag):
            report.skipped(f"local swarm: {tag} is already present")
            continue
        client.images.load(b"".join(main.images.get(tag).save(named=True)))
        report.did(f"copied {tag} to the local swarm")
    return client


def _engine(report: machine.Report, wait: float) -> Any:
    try:
        client = engine.connect(ENDPOINT, timeout=30)
    except EngineUnavailable:
        pass
    else:
        report.skipped(f"local swarm engine: already answers at {ENDPOINT}")
        return client
    if not machine.is_root():
        raise EngineUnavailable(
            f"no swarm engine at {ENDPOINT} and not root — run scripts/setup --swarm as root"
        )
    machine.ensure_containerd(report, wait=wait)
    RUN.mkdir(parents=True, exist_ok=True)
    client = machine.start_dockerd(ARGS, LOG, ENDPOINT, wait=wait)
    report.did(f"started the swarm's dockerd at {ENDPOINT} (log: {LOG})")
    return client
