"""Observe an environment in one place: containers, routers, ledger and lock.

``status``, ``deploy`` and ``rollback`` all start here, so a rerun after a crash sees what the
crashed run left and converges instead of starting blind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor import ledger as ledger_mod
from conveyor import router, terms
from conveyor.containers import ServiceContainer
from conveyor.ledger import ReleaseRecord
from conveyor.lockinfo import LockInfo
from conveyor.terms import Role

if TYPE_CHECKING:
    # Only observe() reads an engine; the states it returns are plain data.
    from conveyor.hosts import HostTarget


@dataclass
class HostState:
    name: str
    router: str
    live: dict[str, str | None]
    containers: list[ServiceContainer]
    error: str | None = None
    # Per service, the colors in service and their weights: two during a canary step.
    weights: dict[str, dict[str, int]] = field(default_factory=dict)
    # A swarm node's state as the manager reports it (state, availability, role, address).
    node: dict[str, str] | None = None

    @property
    def router_up(self) -> bool:
        return self.router == "running" and self.error is None

    def serving(self, live: ReleaseRecord | None) -> bool:
        """Whether this host serves the live release: its router runs, routes every service
        to its expected container, which runs and is not unhealthy, and (a swarm node) the
        manager schedules tasks on it."""
        if live is None or not self.router_up:
            return False
        if self.node is not None and not terms.takes_tasks(self.node):
            return False
        for service in self.live:
            container = self.expected(live, service)
            if (
                container is None
                or not container.running
                or container.health == "unhealthy"
                or self.live[service] not in (None, container.color)  # None: a canary split
            ):
                return False
        return True

    def live_container(self, service: str) -> ServiceContainer | None:
        color = self.live.get(service)
        if color is None:
            return None
        running = [
            c for c in self.containers if c.service == service and c.color == color and c.running
        ]
        return running[-1] if running else None

    def split(self, service: str) -> bool:
        """Both colors take ``service``'s traffic: a canary step (or a crashed one)."""
        return len(self.weights.get(service, {})) > 1

    def canary_color(self, service: str) -> str | None:
        """During a split, the color that is not the live one."""
        if not self.split(service):
            return None
        return next((c for c in self.weights[service] if c != self.live.get(service)), None)

    def settle_split(self, live: ReleaseRecord | None) -> None:
        """Name the live color of a split backend: the one the ledger's live release runs
        (else the heavier one), so the other is the canary, not a disagreement."""
        for service, weights in self.weights.items():
            if len(weights) < 2:
                continue
            expected = self.expected(live, service) if live else None
            if expected is not None and expected.color in weights:
                self.live[service] = expected.color
            else:
                self.live[service] = max(weights, key=lambda color: weights[color])

    def container(self, name: str | None) -> ServiceContainer | None:
        return next((c for c in self.containers if c.name == name), None)

    def leftovers(self, live: ReleaseRecord | None = None) -> list[ServiceContainer]:
        """Running service containers that serve nothing and belong to nothing that should:
        what a crashed or failed run left. Neither the containers the router serves nor the
        ones the ledger's live release names are leftovers — when the two disagree (or the
        router is down) that is reported as a disagreement, not hidden as a leftover."""
        wanted = {c.name for s in self.live if live and (c := self.expected(live, s))}
        if live is not None:
            wanted |= set(live.warm_containers(self.name).values())
        wanted |= {c.name for c in self.canaries()}
        return [
            c
            for c in self.containers
            if c.running
            and c.name not in wanted
            and not (self.router_up and self.live.get(c.service) == c.color)
        ]

    def expected(self, live: ReleaseRecord, service: str) -> ServiceContainer | None:
        """The container that should serve ``service`` here for the live record."""
        name = live.container(self.name, service)
        if name:
            return self.container(name)
        # Records written before they named their containers: by release label.
        labelled = [c for c in self.containers if c.service == service and c.release == live.id]
        return labelled[-1] if labelled else None

    def canaries(self) -> list[ServiceContainer]:
        """The running containers of a split's canary color."""
        return [
            c
            for c in self.containers
            if c.running and self.router_up and c.color == self.canary_color(c.service)
        ]

    def role(self, container: ServiceContainer, expected: ReleaseRecord | None) -> Role:
        if container.running:
            if container in self.canaries():
                return "canary"
            if container in self.leftovers(expected):
                return "leftover"
            if expected and container.name in expected.warm_containers(self.name).values():
                return "warm"
            return "live"
        return "kept"

    def warm(self, live: ReleaseRecord | None) -> list[ServiceContainer]:
        """The live deploy's warm containers that still run here."""
        names = set(live.warm_containers(self.name).values()) if live else set()
        return [c for c in self.containers if c.name in names and c.running]


@dataclass
class EnvironmentState:
    env: str
    hosts: list[HostState]
    records: list[ReleaseRecord]
    lock: LockInfo | None
    unreadable: list[str] = field(default_factory=list)
    # What the ledger's reading rejected (forged) or cannot vouch for (unsigned), in words.
    integrity: list[str] = field(default_factory=list)
    forged: list[str] = field(default_factory=list)

    def host(self, name: str) -> HostState:
        return next(h for h in self.hosts if h.name == name)

    def live_record(self) -> ReleaseRecord | None:
        return ledger_mod.current_live(self.records)

    def disagreements(self) -> list[str]:
        """Where what the routers serve is not the ledger's live release, in words."""
        live = self.live_record()
        if live is None:
            return [
                f"{host.name}: {service} serves {serving.release} ({serving.version}), "
                f"which never passed verify"
                for host in self.hosts
                for service in host.live
                if (serving := host.live_container(service)) is not None
            ]
        found = []
        for host in self.hosts:
            if not host.router_up:
                found.append(
                    f"{host.name}: router {host.router}"
                    + (f" ({host.error})" if host.error else "")
                )
                continue
            for service in host.live:
                serving = host.live_container(service)
                expected = host.expected(live, service)
                if serving is None or expected is None or serving.name != expected.name:
                    found.append(
                        f"{host.name}: {service} serves {self._describe(serving)}, but the "
                        f"ledger's live release is {live.id} ({live.version})"
                    )
        return found

    def _describe(self, container: ServiceContainer | None) -> str:
        if container is None:
            return "nothing"
        record = next((r for r in self.records if r.id == container.release), None)
        verdict = "" if record is None or record.is_verified else ", never verified"
        return f"{container.release} ({container.version}{verdict})"

    def interrupted(self) -> list[ReleaseRecord]:
        """Records still 'running' while nobody holds a live lock: their process died."""
        if self.lock is not None and self.lock.stale is None:
            return []
        return [r for r in self.records if r.outcome == terms.RUNNING]

    def serving_versions(self) -> dict[str, set[str]]:
        """Per service, the versions that take live traffic across hosts."""
        versions: dict[str, set[str]] = {}
        for host in self.hosts:
            for service in host.live:
                container = host.live_container(service)
                if container is not None:
                    versions.setdefault(service, set()).add(container.version)
        return versions

    def as_dict(self) -> dict[str, Any]:
        live = self.live_record()
        return {
            "environment": self.env,
            "live_release": live.id if live else None,
            "live_version": live.version if live else None,
            "lock": None if self.lock is None else self.lock.__dict__,
            "hosts": [
                {
                    "name": h.name,
                    "router": h.router,
                    "error": h.error,
                    "live": h.live,
                    "weights": h.weights,
                    "containers": [{**c.__dict__, "role": h.role(c, live)} for c in h.containers],
                    "leftovers": [c.name for c in h.leftovers(live)],
                    "node": h.node,
                    "serving": h.serving(live),
                }
                for h in self.hosts
            ],
            "interrupted": [r.id for r in self.interrupted()],
            "disagreements": self.disagreements(),
            "unreadable_ledger_events": self.unreadable,
            "forged_ledger_events": self.forged,
            "ledger_integrity": self.integrity,
        }


def observe_host(target: HostTarget) -> HostState:
    containers = target.service_containers()
    status = target.router_status()
    live: dict[str, str | None] = dict.fromkeys(target.env.services)
    weights: dict[str, dict[str, int]] = {}
    error = None
    if status == "running":
        try:
            weights = target.weights()
        except router.RouterError as exc:
            error = str(exc)
        for service, ready in weights.items():
            live[service] = next(iter(ready)) if len(ready) == 1 else None
    return HostState(
        name=target.name,
        router=status,
        live=live,
        containers=containers,
        error=error,
        weights=weights,
        node=target.node(),
    )


def observe(
    targets: list[HostTarget],
    ledger: ledger_mod.Ledger,
    lock: LockInfo | None,
    *,
    records: list[ReleaseRecord] | None = None,
) -> EnvironmentState:
    if records is None:
        records = ledger.records()
    hosts = [observe_host(t) for t in targets]
    live = ledger_mod.current_live(records)
    for host in hosts:
        host.settle_split(live)
    return EnvironmentState(
        env=targets[0].env.name,
        hosts=hosts,
        records=records,
        lock=lock,
        unreadable=list(ledger.unreadable),
        integrity=ledger.integrity(),
        forged=list(ledger.forged),
    )
