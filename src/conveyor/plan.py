"""Plan a blue-green move: a pure function from config and observed state to steps.

It touches nothing, so it is unit-tested without a daemon and printed by ``--dry-run``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conveyor.config import Environment
from conveyor.containers import ServiceContainer, container_fingerprint, service_container_name
from conveyor.errors import ConveyorError
from conveyor.ledger import ReleaseRecord
from conveyor.observe import EnvironmentState, HostState
from conveyor.releases import Release, ServiceImage
from conveyor.router import Ports
from conveyor.terms import DEPLOY, ROLLBACK, RecordKind, Strategy, other


@dataclass(frozen=True)
class ServiceMove:
    service: str
    from_color: str | None
    to_color: str
    port: int
    image: ServiceImage
    container: str
    reuse: str | None = None
    stop_first: tuple[str, ...] = ()
    # The reused container is still running (kept warm): no start, readiness then switch.
    warm: bool = False


@dataclass(frozen=True)
class HostPlan:
    host: str
    moves: tuple[ServiceMove, ...]


@dataclass(frozen=True)
class DeployPlan:
    kind: RecordKind
    environment: str
    release_id: str
    release: Release
    hosts: tuple[HostPlan, ...]
    public: dict[str, str]
    verify_seconds: float
    drain_seconds: float
    rollback_of: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    keep_warm: float = 0.0
    strategy: Strategy = "blue-green"
    # Under "canary": the percentages in turn (the last, 100, is the switch) and each window.
    canary_steps: tuple[int, ...] = ()
    canary_interval: float = 0.0

    def steps(self) -> list[str]:
        """What the deploy will do, in order, in words (``--dry-run`` prints this)."""
        lines = [f"{self.kind} {self.release.version} to {self.environment} as {self.release_id}"]
        lines.append(f"  source: {self.release.source}")
        lines.extend(f"  note: {note}" for note in self.notes)
        n = 1
        lines.append(f"{n}. take the {self.environment} lock")
        for host_plan in self.hosts:
            for move in host_plan.moves:
                for leftover in move.stop_first:
                    n += 1
                    lines.append(f"{n}. [{host_plan.host}] stop leftover {leftover}")
            for move in host_plan.moves:
                n += 1
                if move.warm:
                    what = f"use warm container {move.reuse} (running: no start)"
                elif move.reuse:
                    what = f"restart kept container {move.reuse}"
                else:
                    what = f"start {move.container} from {_short(move.image.reference)}"
                lines.append(
                    f"{n}. [{host_plan.host}] {what} on 127.0.0.1:{move.port} ({move.to_color})"
                )
            n += 1
            services = ", ".join(m.service for m in host_plan.moves)
            lines.append(
                f"{n}. [{host_plan.host}] wait until {services} are healthy and /readyz "
                f"reports {self.release.version}"
            )
            n += 1
            lines.append(f"{n}. [{host_plan.host}] smoke-check through the router's preview route")
            if self.strategy == "blue-green":
                n = self._switch_lines(lines, n, host_plan)
        if self.strategy == "canary":
            n += 1
            steps = " → ".join(f"{p}%" for p in self.canary_steps if p < 100)
            lines.append(
                f"{n}. [every host together] canary steps {steps}: each judged for "
                f"{self.canary_interval:g} s against the stable color; a failed window, or "
                "invoke rollout-abort, puts every host back on the stable color"
            )
            for host_plan in self.hosts:
                n = self._switch_lines(lines, n, host_plan)
        n += 1
        after = (
            f"keep the old color warm for {self.keep_warm:g} s (a rollback then only switches), "
            "then stop it"
            if self.keep_warm and any(m.from_color for h in self.hosts for m in h.moves)
            else "stop the old color (kept for rollback)"
        )
        lines.append(f"{n}. drain {self.drain_seconds:g} s, then {after}")
        n += 1
        lines.append(f"{n}. record {self.release_id} in the ledger and release the lock")
        return lines

    def _switch_lines(self, lines: list[str], n: int, host_plan: HostPlan) -> int:
        n += 1
        switches = ", ".join(
            f"{m.service} {m.from_color or '(none)'} → {m.to_color}" for m in host_plan.moves
        )
        what = "switch the rest of the traffic" if self.strategy == "canary" else "switch traffic"
        lines.append(f"{n}. [{host_plan.host}] {what}: {switches}")
        n += 1
        lines.append(
            f"{n}. [{host_plan.host}] verify for {self.verify_seconds:g} s through "
            f"{self.public.get(host_plan.host, '?')}; on failure switch every host back"
        )
        return n


def _short(reference: str) -> str:
    return reference if len(reference) <= 90 else reference[:87] + "…"


def kept_container(
    env: Environment,
    host: HostState,
    *,
    service: str,
    color: str,
    release: Release,
    record: ReleaseRecord | None,
) -> ServiceContainer | None:
    """The stopped container of exactly the record being returned to, if it is still fit.

    Chosen by the record's own container list (or, for records written before they had one,
    its release label), then checked: the color we need, the record's image, and the same
    declaration in deploy.toml. A failed release's containers are never a candidate.
    """
    if record is None:
        return None
    name = record.container(host.name, service)
    candidates = [
        c
        for c in host.containers
        if c.service == service and (c.name == name if name else c.release == record.id)
    ]
    for container in reversed(candidates):
        if (
            not container.running
            and container.color == color
            and container.image_id == release.images[service].image_id
            and container.fingerprint == container_fingerprint(env.services[service], color)
        ):
            return container
    return None


def warm_container(
    env: Environment,
    host: HostState,
    *,
    service: str,
    color: str,
    release: Release,
    record: ReleaseRecord | None,
) -> ServiceContainer | None:
    """The running (warm) container of exactly the record being returned to, if it is fit:
    its color, its image, the same declaration, and not unhealthy by Docker's check."""
    if record is None:
        return None
    name = record.container(host.name, service)
    for container in host.containers:
        if (
            container.name == name
            and container.running
            and container.health != "unhealthy"
            and container.color == color
            and container.image_id == release.images[service].image_id
            and container.fingerprint == container_fingerprint(env.services[service], color)
        ):
            return container
    return None


def plan_move(
    env: Environment,
    state: EnvironmentState,
    ports: dict[str, Ports],
    release: Release,
    release_id: str,
    *,
    kind: RecordKind = DEPLOY,
    rollback_of: str | None = None,
    returning_to: ReleaseRecord | None = None,
) -> DeployPlan:
    """Every host moves every service to the color that is not live there.

    A rollback (``returning_to``) restarts that record's kept containers where they are fit,
    and starts fresh containers from its images where they are not.
    """
    host_plans = []
    notes = []
    for host_state in state.hosts:
        moves = []
        for name in env.services:
            live = host_state.live.get(name)
            target = other(live) if live else "blue"
            warm = warm_container(
                env, host_state, service=name, color=target, release=release, record=returning_to
            )
            stop_first = tuple(
                c.name
                for c in host_state.containers
                if c.service == name and c.color == target and c.running and c is not warm
            )
            kept = warm or kept_container(
                env, host_state, service=name, color=target, release=release, record=returning_to
            )
            reuse = kept.name if kept else None
            gone = _warm_gone(state, host_state, name, returning_to)
            if gone and warm is None:
                notes.append(
                    f"{host_state.name}: the warm {gone} is no longer running — the normal "
                    "path: " + (f"restart {reuse}" if reuse else "start a fresh container")
                )
            moves.append(
                ServiceMove(
                    service=name,
                    from_color=live,
                    to_color=target,
                    port=ports[host_state.name].services[name][target],
                    image=release.images[name],
                    container=reuse or service_container_name(env.name, name, target, release_id),
                    reuse=reuse,
                    stop_first=stop_first,
                    warm=warm is not None,
                )
            )
        notes += _host_notes(state, host_state, moves, kind)
        host_plans.append(HostPlan(host=host_state.name, moves=tuple(moves)))
    for record in state.interrupted():
        notes.append(
            f"{record.id} ({record.version}) was interrupted; its leftovers are cleaned up"
        )
    _refuse_removing_what_another_node_reuses(env, host_plans)
    strategy, why = _strategy(env, kind, host_plans)
    if why:
        notes.append(why)
    return DeployPlan(
        strategy=strategy,
        canary_steps=env.canary.steps if strategy == "canary" else (),
        canary_interval=env.canary.interval if strategy == "canary" else 0.0,
        kind=kind,
        environment=env.name,
        release_id=release_id,
        release=release,
        hosts=tuple(host_plans),
        public={name: f"http://{p.bind}:{p.public}" for name, p in ports.items()},
        verify_seconds=env.timeouts.verify,
        drain_seconds=env.timeouts.drain,
        rollback_of=rollback_of,
        notes=tuple(notes),
        keep_warm=env.keep_warm if kind != ROLLBACK else 0.0,
    )


def _refuse_removing_what_another_node_reuses(env: Environment, host_plans: list[HostPlan]) -> None:
    """On a swarm a color's service is one for every node: a node that stops it as a leftover
    removes it from a node that reuses it. Plans read from one ledger agree; if they do not,
    stop before anything changes. (On hosts each has its own containers.)"""
    if env.engine != "swarm":
        return
    reused = {m.reuse: h.host for h in host_plans for m in h.moves if m.reuse}
    for host_plan in host_plans:
        for move in host_plan.moves:
            for name in move.stop_first:
                if name in reused:
                    raise ConveyorError(
                        f"swarm nodes disagree: {host_plan.host} would remove {name}, which "
                        f"{reused[name]} reuses — see why with invoke status --env {env.name}, "
                        f"then run invoke recover --env {env.name}"
                    )


def _strategy(
    env: Environment, kind: RecordKind, host_plans: list[HostPlan]
) -> tuple[Strategy, str | None]:
    """A canary needs a stable color to compare with, and a rollback goes back at once."""
    if env.strategy != "canary":
        return "blue-green", None
    if kind == ROLLBACK:
        return "blue-green", "a rollback switches at once (no canary steps)"
    if any(m.from_color is None for h in host_plans for m in h.moves):
        return (
            "blue-green",
            "nothing serves yet to compare a canary with: this deploy is blue-green",
        )
    return "canary", None


def _host_notes(
    state: EnvironmentState, host: HostState, moves: list[ServiceMove], kind: RecordKind
) -> list[str]:
    """What the plan replaces or leaves on ``host``: a warm release, running leftovers."""
    live_record = state.live_record()
    warm_names = set(live_record.warm_containers(host.name).values()) if live_record else set()
    stopping = {n for m in moves for n in m.stop_first}
    notes = [
        f"{host.name}: the warm {name} is replaced by this {kind}"
        for move in moves
        for name in move.stop_first
        if name in warm_names
    ]
    notes += [
        f"{host.name}: leftover {leftover.name} is running"
        for leftover in host.leftovers(live_record)
        if leftover.name not in stopping
    ]
    return notes


def _warm_gone(
    state: EnvironmentState, host: HostState, service: str, returning_to: ReleaseRecord | None
) -> str | None:
    """The name of the container the live deploy kept warm for ``returning_to``, when it no
    longer runs (so the rollback takes the normal path, and says so)."""
    live = state.live_record()
    if live is None or returning_to is None or live.warm.get("record") != returning_to.id:
        return None
    name = live.warm_containers(host.name).get(service)
    running = {c.name for c in host.containers if c.running}
    return name if name and name not in running else None
