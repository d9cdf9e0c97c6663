"""Deploy, rollback, status, history and unlock: observe, plan, act, verify.

These are what ``invoke`` tasks and ``python -m conveyor`` call. Each takes the config and an
environment name, talks to that environment's engines and returns or prints a result; errors
are ``ConveyorError`` subclasses with one line a person can act on.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import docker.errors

from conveyor import approvals, artifacts, images, notify
from conveyor import ledger as ledger_mod
from conveyor.bluegreen import BlueGreen, Execution, PhaseFailed, raise_failed
from conveyor.config import Config, Environment
from conveyor.console import Console, console
from conveyor.errors import ArtifactError, ConveyorError, UsageError
from conveyor.hosts import HostTarget, connect_hosts
from conveyor.ledger import Ledger, ReleaseRecord
from conveyor.locks import EnvironmentLock, LockInfo
from conveyor.observe import EnvironmentState, observe
from conveyor.plan import DeployPlan, Release, ServiceImage, plan_move
from conveyor.state import StateStore


@dataclass
class Outcome:
    """What a deploy or rollback did, for printing and for benchmarks."""

    record: ReleaseRecord
    plan: DeployPlan
    url: str
    execution: Execution | None = None


# --- releases ------------------------------------------------------------------------------


def scan_verdict(manifest: dict[str, Any], env: Environment, *, signed: bool) -> dict[str, Any]:
    """The scan verdict of ``env``'s images in a manifest, bound to their image IDs
    (:func:`conveyor.scanners.gate.release_scan`). With CONVEYOR_LEDGER_KEY set, a verdict
    in a manifest that is not signed with it is not trusted: no scan at all."""
    from conveyor.scanners import gate  # noqa: PLC0415 - only deploys from dist need it

    verdict = gate.release_scan(
        manifest, {name: service.image for name, service in env.services.items()}
    )
    if verdict["passed"] is not None and artifacts.signing_key() is not None and not signed:
        return {
            "passed": None,
            "why": f"the manifest's scan verdict is not signed with {artifacts.KEY_VARIABLE} "
            f"(its seal is a plain checksum) — rescan with the key set",
        }
    return verdict


def release_from_dist(config: Config, env: Environment, version: str | None) -> Release:
    """A release from dist/<version>/: checksums and seal verified, images known, and the
    scan verdict of exactly these image IDs (a failed one is refused here, for every env)."""
    folder = artifacts.dist_folder(config, version)
    manifest = artifacts.verify(folder)
    signed = artifacts.check_seal(folder) == artifacts.SIGNED
    scan = scan_verdict(manifest, env, signed=signed)
    if scan["passed"] is False:
        raise ArtifactError(f"{manifest['version']}: {scan['why']} — fix the findings and rescan")
    found: dict[str, ServiceImage] = {}
    for name, service in env.services.items():
        entry = manifest.get("images", {}).get(service.image)
        if not entry:
            raise ArtifactError(
                f"{folder.name} has no '{service.image}' image — run `nox -s image`"
            )
        found[name] = ServiceImage(
            service=name,
            image_id=entry["id"],
            reference=images.image_reference(entry),
            version=manifest["version"],
        )
    return Release(
        version=manifest["version"],
        commit=manifest["commit"],
        dirty=bool(manifest.get("dirty")),
        images=found,
        source=f"{config.build.dist_dir}/{folder.name}",
        scan=scan,
        commit_time=manifest.get("source_date_epoch"),
    )


def release_from_record(record: ReleaseRecord, *, source: str | None = None) -> Release:
    """The release a ledger record ran (what rollback returns to and promotion ships)."""
    return Release(
        version=record.version,
        commit=record.commit,
        dirty=record.dirty,
        images={
            name: ServiceImage(
                service=name,
                image_id=str(svc["image_id"]),
                reference=str(svc.get("reference") or svc["image_id"]),
                version=str(svc.get("version", record.version)),
            )
            for name, svc in record.services.items()
        },
        source=source or f"ledger {record.id}",
        scan=record.scan,
        commit_time=record.commit_time,
    )


# --- an environment's session --------------------------------------------------------------


class Session:
    """Connections to an environment's hosts and its state on the primary host."""

    def __init__(self, config: Config, env_name: str, out: Console = console) -> None:
        self.config = config
        self.env = config.environment(env_name)
        self.out = out
        self.targets = connect_hosts(config, self.env)
        self.primary = self.targets[0]
        self.router_image: str | None = self._existing_router_image()
        self.store = StateStore(self.primary.client, self.env.name, self.router_image)
        self.ledger = Ledger(self.store)

    def _existing_router_image(self) -> str | None:
        with contextlib.suppress(ConveyorError):
            return images.router_image_tag(self.config, self.primary.client)
        return None

    def ensure_router_images(self) -> None:
        """The router image on every host: built once here, copied to the others."""
        local = self.primary.client
        tag = images.build_router_image(self.config, local, self.out)
        for target in self.targets:
            if not images.image_present(target.client, tag):
                self.out.say(f"  {target.name}: copying the router image")
                data = local.images.get(tag).save(named=True)
                target.client.images.load(b"".join(data))
            target.router_image = tag
        self.router_image = tag
        self.store.image = tag

    def lock(self) -> EnvironmentLock:
        return EnvironmentLock(
            self.primary.client,
            self.env.name,
            self.router_image or "",
            stale_after=self.env.timeouts.lock_stale,
        )

    def read_lock(self) -> LockInfo | None:
        return self.lock().read()

    def observe(
        self, records: list[ReleaseRecord] | None = None, *, holding_lock: bool = False
    ) -> EnvironmentState:
        """The environment now. A deploy that holds the lock passes the records it already
        read and skips reading the lock it holds."""
        lock = None if holding_lock else self.read_lock()
        return observe(self.targets, self.ledger, lock, records=records)

    def by_name(self) -> dict[str, HostTarget]:
        return {t.name: t for t in self.targets}

    def public_url(self) -> str:
        first = self.primary.ports
        return f"http://{first.bind}:{first.public}/"


def _live_hint(target: HostTarget, state: EnvironmentState) -> dict[str, str | None]:
    """When a router must be (re)created: the color of the one running container per service."""
    host = state.host(target.name)
    hint: dict[str, str | None] = {}
    for service in target.env.services:
        if host.live.get(service):
            hint[service] = host.live[service]
            continue
        running = [c for c in host.containers if c.service == service and c.running]
        hint[service] = running[-1].color if len(running) == 1 else None
    return hint


# --- deploy and rollback -------------------------------------------------------------------


def deploy(
    config: Config,
    env_name: str,
    *,
    version: str | None = None,
    dry_run: bool = False,
    lock_wait: float = 0.0,
    message: str = "",
    out: Console = console,
) -> Outcome | DeployPlan:
    env = config.environment(env_name)
    release = release_from_dist(config, env, version)
    if release.dirty and not env.gated:
        out.warn(f"{release.version} was built from a dirty tree")
    return deploy_release(
        config,
        env_name,
        release,
        kind="deploy",
        dry_run=dry_run,
        lock_wait=lock_wait,
        message=message,
        out=out,
    )


def deploy_release(
    config: Config,
    env_name: str,
    release: Release,
    *,
    kind: str = "deploy",
    source: str | None = None,
    dry_run: bool = False,
    lock_wait: float = 0.0,
    message: str = "",
    out: Console = console,
) -> Outcome | DeployPlan:
    """Deploy a release from dist/ or resolved elsewhere (``promote`` hands over another
    environment's, from ``source``). Before anything is locked or started — a dry run too —
    a gated environment (or any promotion) passes the gate, and every secret must resolve."""
    from conveyor import config as config_mod  # noqa: PLC0415
    from conveyor import promotion  # noqa: PLC0415 - promotion imports this module

    env = config.environment(env_name)
    if env.gated or kind == "promote":
        admission = promotion.admit(config, env_name, release, source=source, out=out)
        out.say(f"{env_name} is gated; {release.version} passes its checks:")
        for check in admission.checks:
            out.say(f"  ✓ {check}")
    config_mod.require_secrets(env)
    return _move(
        config,
        env_name,
        release,
        kind=kind,
        dry_run=dry_run,
        lock_wait=lock_wait,
        message=message,
        out=out,
    )


def rollback(
    config: Config,
    env_name: str,
    *,
    to: str | None = None,
    dry_run: bool = False,
    lock_wait: float = 0.0,
    out: Console = console,
) -> Outcome | DeployPlan:
    session = Session(config, env_name, out)
    records = session.ledger.records()
    live = ledger_mod.current_live(records)
    if to is None:
        target = ledger_mod.previous_live(records)
        if target is None:
            raise UsageError(
                f"{env_name} has no earlier successful release to roll back to "
                f"(see: invoke history --env {env_name})"
            )
    else:
        matches = [
            r for r in records if r.outcome == ledger_mod.SUCCEEDED and to in {r.id, r.version}
        ]
        if not matches:
            known = sorted({r.version for r in records if r.outcome == ledger_mod.SUCCEEDED})
            raise UsageError(
                f"no successful release '{to}' in the {env_name} ledger (known: "
                f"{', '.join(known) or 'none'})"
            )
        target = matches[-1]
    return _move(
        config,
        env_name,
        release_from_record(target),
        kind="rollback",
        dry_run=dry_run,
        lock_wait=lock_wait,
        rollback_of=live.id if live else None,
        session=session,
        out=out,
        message=f"rollback to {target.id}",
    )


def _move(
    config: Config,
    env_name: str,
    release: Release,
    *,
    kind: str,
    dry_run: bool,
    lock_wait: float,
    message: str = "",
    rollback_of: str | None = None,
    session: Session | None = None,
    out: Console,
) -> Outcome | DeployPlan:
    session = session or Session(config, env_name, out)
    env = session.env
    ports = {t.name: t.ports for t in session.targets}
    if dry_run:
        state = session.observe()
        plan = plan_move(env, state, ports, release, "r(next)", kind=kind, rollback_of=rollback_of)
        out.say("Dry run — nothing will be changed. The plan:")
        for line in plan.steps():
            out.say(f"  {line}")
        for line in approvals.status_lines(session, release, kind=kind):
            out.say(line)
        return plan

    # A gated environment checks its approval before anything is built, locked or started.
    announce = notify.Announcer(config, env, out)
    approval = approvals.require(session, release, kind=kind, out=out, announce=announce)

    began = time.time()
    session.ensure_router_images()
    lock = session.lock()
    who = ledger_mod.who()

    def broken(holder: LockInfo, why: str) -> None:
        out.warn(f"breaking the stale lock of {holder.describe()}: {why}")
        session.ledger.audit("lock-broken", holder=holder.__dict__, why=why)

    lock.acquire(who, release.version, message, wait=lock_wait, on_broken=broken)
    try:
        lock_seconds = time.time() - began
        state = session.observe(holding_lock=True)
        # We hold the lock, so a record still "running" belongs to a process that died.
        for stale in [r for r in state.records if r.outcome == ledger_mod.RUNNING]:
            stale.outcome = ledger_mod.INTERRUPTED
            stale.reason = stale.reason or "the deploying process died before finishing"
            stale.ended = stale.ended or time.time()
            session.ledger.write(stale)
        changed = [
            target.name
            for target in session.targets
            if target.ensure_router(_live_hint(target, state), out)
        ]
        if changed:
            state = session.observe(records=state.records, holding_lock=True)
        record_id = ledger_mod.next_id(state.records)
        plan = plan_move(env, state, ports, release, record_id, kind=kind, rollback_of=rollback_of)
        previous = state.live_record()
        record = ReleaseRecord(
            id=record_id,
            environment=env.name,
            kind=kind,
            version=release.version,
            commit=release.commit,
            dirty=release.dirty,
            services={
                name: {
                    "image_id": img.image_id,
                    "reference": img.reference,
                    "version": img.version,
                }
                for name, img in release.images.items()
            },
            who=who,
            started=began,
            hosts=[t.name for t in session.targets],
            rollback_of=rollback_of,
            previous=previous.id if previous else None,
            scan=release.scan,
            commit_time=release.commit_time,
            approval=approval,
        )
        record.phases["lock"] = lock_seconds
        out.say(f"{kind.capitalize()} {release.version} → {env.name} ({record_id}, by {who})")
        session.ledger.write(record)
        announce.started(record)
        executor = BlueGreen(
            env,
            session.by_name(),
            session.ledger,
            out,
            local_client=session.primary.client,
            on_phase=_phase_tracer(),
        )
        try:
            execution = executor.run(plan, record)
        except PhaseFailed as failure:
            record.outcome = ledger_mod.FAILED
            record.failed_phase = failure.phase
            record.reason = failure.reason
            record.ended = time.time()
            record.phases.update({k: round(v, 3) for k, v in executor.timings.items()})
            session.ledger.write(record)
            serving = (
                f"{previous.version} ({previous.id}) is still serving"
                if previous
                else "nothing was serving before, and nothing is now"
            )
            announce.failed(record, serving)
            raise raise_failed(failure, plan, serving) from None
        record.phases.update({k: round(v, 3) for k, v in execution.timings.items()})
        record.outcome = ledger_mod.SUCCEEDED
        record.ended = time.time()
        session.ledger.write(record)
        records = [r for r in state.records if r.id != record.id] + [record]
        check = session.observe(records=records, holding_lock=True)
        # The old color has been stopping in the background since the drain began; it must be
        # down before pruning, and before the lock is released.
        execution.wait_stopped()
        prune(session, records)
        live_versions = check.serving_versions()
        wrong = {s: v for s, v in live_versions.items() if v != {release.version}}
        if wrong or set(live_versions) != set(env.services):
            out.warn(
                f"after the {kind}, live versions are {live_versions}, expected {release.version}"
            )
        url = session.public_url()
        out.say(f"✓ {env.name} serves {release.version} at {url} ({record.duration:.1f} s)")
        announce.succeeded(record, url)
        return Outcome(record=record, plan=plan, url=url, execution=execution)
    finally:
        lock.release()
        announce.close()


def _phase_tracer() -> Callable[[str], None] | None:
    """CONVEYOR_TRACE_PHASES=1 prints each phase as it begins (crash tests and debugging)."""
    if os.environ.get("CONVEYOR_TRACE_PHASES") != "1":
        return None

    def trace(phase: str) -> None:
        print(f"phase: {phase}", file=sys.stderr, flush=True)

    return trace


def prune(session: Session, records: list[ReleaseRecord]) -> None:
    """Keep ``keep_releases`` stopped containers per service; never the rollback target."""
    protected_images: set[str] = set()
    previous = ledger_mod.previous_live(records)
    if previous is not None:
        protected_images = set(previous.digests().values())
    keep = session.env.keep_releases
    for target in session.targets:
        containers = target.service_containers()
        for service in session.env.services:
            stopped = [c for c in containers if c.service == service and not c.running]
            stopped.sort(key=lambda c: c.created, reverse=True)
            for old in stopped[keep:]:
                if old.image_id in protected_images:
                    continue
                with contextlib.suppress(docker.errors.NotFound):
                    target.client.containers.get(old.id).remove(v=False)


# --- status, history, unlock ---------------------------------------------------------------


def _ago(epoch: float | None) -> str:
    if not epoch:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def render_status(state: EnvironmentState, session_url: str) -> list[str]:
    live = state.live_record()
    lines = [
        f"{state.env}: "
        + (
            f"live {live.version} ({live.id}, {live.kind} by {live.who} at {_ago(live.ended)})"
            if live
            else "never deployed"
        )
    ]
    lines.append(f"  public route: {session_url}")
    for host in state.hosts:
        lines.append(
            f"  host {host.name}: router {host.router}" + (f" ({host.error})" if host.error else "")
        )
        for container in reversed(host.containers):
            role = (
                "live"
                if host.live.get(container.service) == container.color and container.running
                else ("LEFTOVER" if container.running else "kept")
            )
            lines.append(
                f"    {container.service:<5} {container.color:<5} {role:<8} "
                f"{container.version:<28} "
                f"{container.release:<6} {container.status}"
                + (f" ({container.health})" if container.health and container.running else "")
            )
    lines.append(
        "  lock: " + ("free" if state.lock is None else f"held by {state.lock.describe()}")
    )
    for record in state.interrupted():
        lines.append(f"  interrupted: {record.id} ({record.version}) — the next deploy cleans up")
    for host in state.hosts:
        for leftover in host.leftovers():
            lines.append(f"  leftover on {host.name}: {leftover.name} (stopped by the next deploy)")
    if state.unreadable:
        lines.append(f"  unreadable ledger events (ignored): {', '.join(state.unreadable)}")
    return lines


def show_status(config: Config, env_name: str, *, as_json: bool) -> None:
    session = Session(config, env_name)
    state = session.observe()
    if as_json:
        print(json.dumps(state.as_dict(), indent=2, default=str))
        return
    for line in render_status(state, session.public_url()):
        console.say(line)


def history(config: Config, env_name: str) -> list[ReleaseRecord]:
    return Session(config, env_name).ledger.records()


def show_history(config: Config, env_name: str, *, as_json: bool, limit: int = 50) -> None:
    records = history(config, env_name)[-limit:]
    if as_json:
        print(json.dumps([r.as_dict() for r in records], indent=2))
        return
    if not records:
        console.say(f"{env_name}: no releases yet")
        return
    console.say(
        f"{'id':<6} {'kind':<8} {'version':<28} {'outcome':<11} {'who':<22} "
        f"{'started':<19} {'took':>6}  detail"
    )
    for r in records:
        took = f"{r.duration:.1f}s" if r.duration is not None else "-"
        detail = ""
        if r.failed_phase:
            detail = f"failed in {r.failed_phase}: {r.reason}"
        elif r.rollback_of:
            detail = f"rollback of {r.rollback_of}"
        elif r.reason:
            detail = r.reason
        console.say(
            f"{r.id:<6} {r.kind:<8} {r.version[:28]:<28} {r.outcome:<11} {r.who[:22]:<22} "
            f"{_ago(r.started):<19} {took:>6}  {detail[:120]}"
        )


def unlock(config: Config, env_name: str, *, out: Console = console) -> LockInfo | None:
    session = Session(config, env_name)
    holder = session.lock().force_remove()
    if holder is None:
        out.say(f"{env_name} is not locked")
        return None
    session.ledger.audit("unlock", holder=holder.__dict__)
    out.say(f"removed the {env_name} lock held by {holder.describe()} (recorded in the ledger)")
    return holder
