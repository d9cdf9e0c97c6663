"""Recover from a deploy that died: make every router serve the ledger's verified release.

A deploy writes to the ledger before it switches a router (the intent) and again once every
host passed verify. A process killed anywhere leaves its record ``running`` with nobody holding
the lock. The next deploy, rollback or ``invoke recover`` takes the lock and converges: a record
that passed verify is succeeded (only its drain was cut short); any other is interrupted, and a
router serving anything but the live verified release (a canary's split included) is switched
back to it — after starting that release's kept container if it had stopped. ``status`` only
reports; it never changes.
"""

from __future__ import annotations

import time

from conveyor import router, terms
from conveyor.config import Environment
from conveyor.console import Console
from conveyor.containers import ServiceContainer
from conveyor.errors import ConveyorError
from conveyor.hosts import HostTarget
from conveyor.ledger import Ledger, ReleaseRecord
from conveyor.observe import EnvironmentState


class RecoveryFailed(ConveyorError):
    """A router could not be put back on the verified release."""


def settle_interrupted(ledger: Ledger, records: list[ReleaseRecord], by: str) -> list[str]:
    """Close the records of dead processes (we hold the lock, so 'running' means dead)."""
    actions = []
    for record in records:
        if record.outcome != terms.RUNNING:
            continue
        if record.verified:
            record.outcome = terms.SUCCEEDED
            record.reason = f"verified on every host; its process died in drain (closed by {by})"
        else:
            record.outcome = terms.INTERRUPTED
            # It died, or the ledger refused the write saying how it failed: either way it
            # never recorded an end (its own output said which).
            record.reason = record.reason or (
                f"ended before every host passed verify without recording how (closed by {by})"
            )
        record.ended = record.ended or time.time()
        ledger.write(record)
        actions.append(f"{record.id} ({record.version}) recorded as {record.outcome}")
    return actions


def restore_routers(
    env: Environment, targets: list[HostTarget], state: EnvironmentState, out: Console
) -> list[str]:
    """Switch every router that serves something else back to the live verified release."""
    live = state.live_record()
    if live is None:
        return []
    actions = []
    for target in targets:
        host = state.host(target.name)
        if not host.router_up:
            continue
        for service in env.services:
            expected = host.expected(live, service)
            serving = host.live_container(service)
            split = host.split(service)
            if expected is None or (
                serving is not None and serving.name == expected.name and not split
            ):
                continue
            what = f"{serving.release} ({serving.version})" if serving else "nothing"
            if split:
                # A canary whose process died mid-step: it gets no more traffic.
                what = "a canary split " + ", ".join(
                    f"{color} {weight}%" for color, weight in host.weights[service].items()
                )
            out.say(
                f"  {target.name}: {service} serves {what}; switching back to the verified "
                f"{live.id} ({expected.version})"
            )
            if not expected.running:
                _start_kept(env, target, expected)
            target.admin(router.switch_commands([service], expected.color))
            actions.append(f"{target.name}: {service} back on {live.id} (was {what})")
        if actions:
            target.write_router_config(target.live_colors())
    return actions


def _start_kept(env: Environment, target: HostTarget, container: ServiceContainer) -> None:
    service = env.services[container.service]
    target.start_service_container(target.service_container(container.name), service)
    port = target.ports.services[container.service][container.color]
    deadline = time.monotonic() + env.timeouts.ready
    while time.monotonic() < deadline:
        answer = target.probe(port, service.health.path, timeout=service.health.timeout)
        if answer.ok and (answer.body or {}).get("version") == container.version:
            return
        time.sleep(0.1)
    raise RecoveryFailed(
        f"{target.name}: the verified release's {container.name} did not become ready within "
        f"{env.timeouts.ready:g} s — deploy a release, or roll back with --to"
    )
