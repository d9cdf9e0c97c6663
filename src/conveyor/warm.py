"""The previous release kept warm: running out of rotation for ``keep_warm`` after a deploy.

Within the window a rollback finds its containers running and healthy and only switches (no
container starts). No process outlives a command, so nothing stops them on time by itself:
the next deploy, rollback or recover stops a warm color whose window ended, and ``status``
(read-only) says when it ends or that it has. A contract migration stops them at once: the
schema has moved past what they accept.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import Any

import docker.errors

from conveyor.console import Console
from conveyor.observe import EnvironmentState
from conveyor.session import Session


def stop(
    session: Session, state: EnvironmentState, out: Console, *, only_expired: bool
) -> list[str]:
    """Stop the live deploy's warm containers: once their window ended, or at once."""
    live = state.live_record()
    if live is None or not live.warm:
        return []
    if only_expired and time.time() < float(live.warm.get("until", 0)):
        return []
    why = "its keep_warm window ended" if only_expired else "a contract migration ran"
    stopped = []
    for target in session.targets:
        for container in state.host(target.name).warm(live):
            with contextlib.suppress(docker.errors.NotFound):
                target.stop_service_container(container.name)
            stopped.append(f"{target.name}: stopped warm {container.name} ({why})")
            out.say(f"  {stopped[-1]}")
    return stopped


def is_target(session: Session, live: Any, target: Any) -> bool:
    """Whether a rollback to ``target`` can take the warm path: the live deploy kept exactly
    that release warm, its window is open and its containers still run."""
    if live is None or live.warm.get("record") != target.id:
        return False
    if time.time() >= float(live.warm.get("until", 0)):
        return False
    for host in session.targets:
        for name in live.warm_containers(host.name).values():
            try:
                if host.service_container(name).status != "running":
                    return False
            except docker.errors.NotFound:
                return False
    return True


def describe(session: Session, state: EnvironmentState, *, stats: bool) -> dict[str, Any] | None:
    """What is warm, until when, and (with ``stats``) what it costs, from the engine."""
    live = state.live_record()
    if live is None or not live.warm:
        return None
    running = {target.name: state.host(target.name).warm(live) for target in session.targets}
    if not any(running.values()):
        return None
    until = float(live.warm.get("until", 0))
    described: dict[str, Any] = {
        "record": live.warm.get("record"),
        "version": live.warm.get("version"),
        "until": until,
        "expired": time.time() >= until,
        "containers": {host: [c.name for c in found] for host, found in running.items()},
    }
    if stats:
        described["stats"] = {
            container.name: _stats(target.client, container.id)
            for target in session.targets
            for container in running[target.name]
        }
    return described


def lines(warmth: dict[str, Any] | None) -> list[str]:
    if warmth is None:
        return []
    when = datetime.fromtimestamp(warmth["until"], UTC).strftime("%H:%M:%S UTC")
    head = f"  warm: {warmth['record']} ({warmth['version']})"
    if warmth["expired"]:
        out = [f"{head}: its window ended at {when}; the next deploy, rollback or recover stops it"]
    else:
        left = (warmth["until"] - time.time()) / 60
        out = [f"{head} until {when} ({left:.1f} min left) — `invoke rollback` only switches"]
    for name, cost in (warmth.get("stats") or {}).items():
        out.append(f"    {name}: {cost['memory_mb']:.1f} MB memory, {cost['cpu_percent']:.1f}% CPU")
    return out


def _stats(client: Any, container_id: str) -> dict[str, float]:
    """One engine sample: memory in use and CPU over the engine's own two readings."""
    raw = client.api.stats(container_id, stream=False)
    memory = raw.get("memory_stats", {})
    used = float(memory.get("usage", 0)) - float(memory.get("stats", {}).get("inactive_file", 0))
    cpu, pre = raw.get("cpu_stats", {}), raw.get("precpu_stats", {})
    cpu_delta = cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get(
        "total_usage", 0
    )
    system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    cpus = cpu.get("online_cpus") or 1
    percent = 100.0 * cpu_delta / system_delta * cpus if system_delta > 0 else 0.0
    return {"memory_mb": max(used, 0.0) / 1e6, "cpu_percent": percent}
