"""Observe an environment in one place: containers, routers, ledger and lock.

``status``, ``deploy`` and ``rollback`` all start here, so a rerun after a crash sees what the
crashed run left and converges instead of starting blind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conveyor import ledger as ledger_mod
from conveyor import router
from conveyor.hosts import HostTarget, ServiceContainer
from conveyor.ledger import ReleaseRecord
from conveyor.locks import LockInfo


@dataclass
class HostState:
    name: str
    router: str
    live: dict[str, str | None]
    containers: list[ServiceContainer]
    error: str | None = None

    def live_container(self, service: str) -> ServiceContainer | None:
        color = self.live.get(service)
        if color is None:
            return None
        running = [
            c for c in self.containers if c.service == service and c.color == color and c.running
        ]
        return running[-1] if running else None

    def leftovers(self) -> list[ServiceContainer]:
        """Running service containers that take no live traffic (a crashed or failed deploy)."""
        return [c for c in self.containers if c.running and self.live.get(c.service) != c.color]


@dataclass
class EnvironmentState:
    env: str
    hosts: list[HostState]
    records: list[ReleaseRecord]
    lock: LockInfo | None
    unreadable: list[str] = field(default_factory=list)

    def host(self, name: str) -> HostState:
        return next(h for h in self.hosts if h.name == name)

    def live_record(self) -> ReleaseRecord | None:
        return ledger_mod.current_live(self.records)

    def interrupted(self) -> list[ReleaseRecord]:
        """Records still 'running' while nobody holds the lock: their process died."""
        if self.lock is not None:
            return []
        return [r for r in self.records if r.outcome == ledger_mod.RUNNING]

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
                    "containers": [c.__dict__ for c in h.containers],
                    "leftovers": [c.name for c in h.leftovers()],
                }
                for h in self.hosts
            ],
            "interrupted": [r.id for r in self.interrupted()],
            "unreadable_ledger_events": self.unreadable,
        }


def observe_host(target: HostTarget) -> HostState:
    containers = target.service_containers()
    status = target.router_status()
    live: dict[str, str | None] = dict.fromkeys(target.env.services)
    error = None
    if status == "running":
        try:
            live = target.live_colors()
        except router.RouterError as exc:
            error = str(exc)
    return HostState(name=target.name, router=status, live=live, containers=containers, error=error)


def observe(
    targets: list[HostTarget],
    ledger: ledger_mod.Ledger,
    lock: LockInfo | None,
    *,
    records: list[ReleaseRecord] | None = None,
) -> EnvironmentState:
    if records is None:
        records = ledger.records()
    return EnvironmentState(
        env=targets[0].env.name,
        hosts=[observe_host(t) for t in targets],
        records=records,
        lock=lock,
        unreadable=list(ledger.unreadable),
    )
