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

from conveyor import (
    approvals,
    backups,
    flags,
    flagstate,
    notify,
    oneoff,
    recovery,
    schemaphase,
    steering,
    terms,
    warm,
)
from conveyor import config as config_mod
from conveyor import ledger as ledger_mod
from conveyor.analysis import Verdict
from conveyor.bluegreen import BlueGreen, Execution, PhaseFailed, deploy_failed
from conveyor.canary import CanaryRollout
from conveyor.config import Config
from conveyor.console import Console, console
from conveyor.errors import ConveyorError, DeployFailed, LockHeld, StateUnwritable, UsageError
from conveyor.hosts import HostTarget
from conveyor.ledger import ReleaseRecord
from conveyor.lockinfo import LockInfo
from conveyor.locks import EnvironmentLock
from conveyor.observe import EnvironmentState, HostState
from conveyor.plan import DeployPlan, plan_move
from conveyor.releases import Release, release_from_dist, release_from_record
from conveyor.schemaphase import SchemaFailed, SchemaPhase
from conveyor.session import Session


@dataclass
class Moved:
    """What a deploy or rollback did, for printing and for benchmarks."""

    record: ReleaseRecord
    plan: DeployPlan
    url: str
    execution: Execution | None = None


def _live_hint(target: HostTarget, state: EnvironmentState) -> dict[str, str | None]:
    """When a router must be (re)created: per service, the color it should serve — the live
    verified record's running container, else the one running container, else none."""
    host = state.host(target.name)
    live = state.live_record()
    hint: dict[str, str | None] = {}
    for service in target.env.services:
        expected = host.expected(live, service) if live else None
        if expected is not None and expected.running:
            hint[service] = expected.color
            continue
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
) -> Moved | DeployPlan:
    env = config.environment(env_name)
    release = release_from_dist(config, env, version)
    if release.dirty and not env.gated:
        out.warn(f"{release.version} was built from a dirty tree")
    return deploy_release(
        config,
        env_name,
        release,
        kind=terms.DEPLOY,
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
    kind: terms.RecordKind = terms.DEPLOY,
    source: str | None = None,
    dry_run: bool = False,
    lock_wait: float = 0.0,
    message: str = "",
    out: Console = console,
) -> Moved | DeployPlan:
    """Deploy a release from dist/ or resolved elsewhere (``promote`` hands over another
    environment's, from ``source``). Before anything is locked or started — a dry run too —
    a gated environment (or any promotion) passes the gate, and every secret must resolve."""
    env = config.environment(env_name)
    if env.gated or kind == terms.PROMOTE:
        admission = approvals.admit(config, env_name, release, source=source, out=out)
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
    restore_backup: str | None = None,
    allow_schema_mismatch: bool = False,
    out: Console = console,
) -> Moved | DeployPlan:
    session = Session(config, env_name, out)
    records = session.ledger.records()
    live = ledger_mod.current_live(records)
    target = rollback_target(records, to, env_name)
    restore = schema_decision(
        session, records, target, restore_backup, allow_schema_mismatch, dry_run=dry_run
    )
    return _move(
        config,
        env_name,
        release_from_record(target),
        kind=terms.ROLLBACK,
        dry_run=dry_run,
        lock_wait=lock_wait,
        rollback_of=live.id if live else None,
        returning_to=target,
        restore=restore,
        session=session,
        out=out,
        message=f"rollback to {target.id}",
    )


def schema_decision(
    session: Session,
    records: list[ReleaseRecord],
    target: ReleaseRecord,
    restore_backup: str | None,
    allow_mismatch: bool,
    *,
    dry_run: bool,
) -> backups.Backup | None:
    """Before anything is touched: does the rollback target's code accept the database?
    Across a contract revision it does not; then only a restore or ``--allow-schema-mismatch``
    lets the rollback go on. Returns the backup to restore first, if any."""
    out = session.out
    restore = None
    if restore_backup is not None:
        events = session.ledger.audit_events()
        restore = schemaphase.find_backup(records, restore_backup, events)
        if restore is None:
            known = ", ".join(b.id for b in schemaphase.recorded_backups(records, events)[-10:])
            raise UsageError(
                f"no backup '{restore_backup}' in the {session.env.name} ledger "
                f"(known: {known or 'none'})"
            )
    if not schemaphase.migrating_services(session.env):
        return restore
    if restore is None and warm.is_target(session, ledger_mod.current_live(records), target):
        out.say(
            f"schema: {target.version} is warm; its own readiness (checked before the switch) "
            "says whether it accepts the database"
        )
        return None
    verdicts = schema_phase(session).acceptance(target, "check")
    for service, verdict in verdicts.items():
        word = "accepts" if verdict.compatible else "does NOT accept"
        out.say(f"schema: {target.version} {word} {service}'s database ({verdict.why})")
    events = session.ledger.audit_events()
    refused = schemaphase.refusal(session.env.name, target, verdicts, records, events)
    if restore is not None:
        check_restorable(session, records, target, restore, dry_run=dry_run)
    elif refused is not None and allow_mismatch:
        out.warn(f"{refused} (allowed: --allow-schema-mismatch)")
    elif refused is not None and not dry_run:
        raise refused
    elif refused is not None:
        out.say(f"schema: {refused}")
    return restore


def check_restorable(
    session: Session,
    records: list[ReleaseRecord],
    target: ReleaseRecord,
    backup: backups.Backup,
    *,
    dry_run: bool,
) -> None:
    """A backup a rollback restores must hold a schema the target knows; on a terminal the
    person confirms the loss (every write since the backup)."""
    contract = schemaphase.contract_between(records, target, backup)
    if contract is not None:
        raise UsageError(
            f"backup {backup.id} holds schema {backup.revision}, ahead of {target.version} "
            f"({target.id}) by contract revision {contract} — pick one taken before it ran "
            f"(see: invoke history --env {session.env.name})"
        )
    session.out.say(
        f"schema: restoring backup {backup.id} (taken {backup.age()} ago) first — every write "
        f"since then is lost, and the live release serves on the restored schema until the "
        "switch"
    )
    if not dry_run and sys.stdin.isatty():
        answer = input(f"Type {backup.id} to restore it and roll back: ").strip()
        if answer != backup.id:
            raise UsageError(f"not rolled back: the answer was not {backup.id}; nothing changed")


def schema_phase(session: Session) -> SchemaPhase:
    return SchemaPhase(
        session.env,
        session.primary,
        session.targets,
        session.out,
        log_dir=session.config.root / ".conveyor" / "logs",
        on_phase=_phase_tracer(),
        image_source=session.image_source(),
    )


def rollback_target(records: list[ReleaseRecord], to: str | None, env_name: str) -> ReleaseRecord:
    """The record a rollback returns to: the last verified release before the live one, or
    the verified record ``to`` names (a release id or a version) — never the live release."""
    live = ledger_mod.current_live(records)
    if to is None:
        target = ledger_mod.previous_live(records)
        if target is None:
            raise UsageError(
                f"{env_name} has no earlier verified release to roll back to "
                f"(see: invoke history --env {env_name})"
            )
        return target
    verified = [r for r in records if r.is_verified]
    matches = [r for r in verified if to in {r.id, r.version}]
    if not matches:
        known = ", ".join(f"{r.id} ({r.version})" for r in verified[-10:]) or "none"
        raise UsageError(
            f"no verified release '{to}' in the {env_name} ledger (known: {known}) — "
            f"see: invoke history --env {env_name}"
        )
    target = matches[-1]
    if live is not None and (target.id == live.id or target.digests() == live.digests()):
        raise UsageError(
            f"{target.id} ({target.version}) is what {env_name} serves now ({live.id}) — "
            f"nothing to roll back; name an earlier release with --to"
        )
    return target


def _move(
    config: Config,
    env_name: str,
    release: Release,
    *,
    kind: terms.RecordKind,
    dry_run: bool,
    lock_wait: float,
    message: str = "",
    rollback_of: str | None = None,
    returning_to: ReleaseRecord | None = None,
    restore: backups.Backup | None = None,
    session: Session | None = None,
    out: Console,
) -> Moved | DeployPlan:
    """The deploy transaction, as its steps: approval, lock, recover an interrupted deploy,
    ensure routers, open the record, change the schema, execute the plan, record the outcome."""
    session = session or Session(config, env_name, out)
    move = Move(
        session,
        release,
        kind=kind,
        rollback_of=rollback_of,
        returning_to=returning_to,
        restore=restore,
        out=out,
    )
    if dry_run:
        return move.dry_run()
    announce = notify.Announcer(config, session.env, out)
    # A gated environment checks its approval before anything is built, locked or started.
    approval = approvals.require(session, release, kind=kind, out=out, announce=announce)
    began = time.time()
    session.ensure_router_images()
    lock = move.take_lock(message, lock_wait)
    try:
        lock_seconds = time.time() - began
        state = move.recover()
        record = move.open_record(state, began, approval)
        record.phases["lock"] = round(lock_seconds, 3)
        announce.started(record)
        try:
            move.change_schema(record, announce)
            move.carry_flags(record)
        except StateUnwritable as refused:
            raise move.stopped(record, refused, announce) from None
        execution = move.execute(state, record, lock, announce)
        return move.finish(execution, state, announce)
    finally:
        release_lock(session, lock, out)
        announce.close()


# What a record's schema entry says when its phase failed (the record itself is "failed").
SCHEMA_FAILURES = {
    "backup": "backup-failed",
    "migrate": "migration-failed",
    "compat": "live-release-refused-schema",
}


class Move:
    """One deploy or rollback under way: each method is a named step of ``_move``."""

    def __init__(
        self,
        session: Session,
        release: Release,
        *,
        kind: terms.RecordKind,
        rollback_of: str | None,
        returning_to: ReleaseRecord | None,
        restore: backups.Backup | None = None,
        out: Console,
    ) -> None:
        self.session = session
        self.restore = restore
        self.env = session.env
        self.release = release
        self.kind = kind
        self.rollback_of = rollback_of
        self.returning_to = returning_to
        self.out = out
        self.who = ledger_mod.who()
        self.ports = {t.name: t.ports for t in session.targets}
        # The flag files before this run wrote its own (put back if it fails).
        self.flags_before: dict[str, flags.Definitions] = {}
        # The host whose switch the ledger refused to record beforehand, and why.
        self.refused: tuple[str, StateUnwritable] | None = None
        self.previous: ReleaseRecord | None = None

    def plan(self, state: EnvironmentState, record_id: str) -> DeployPlan:
        return plan_move(
            self.env,
            state,
            self.ports,
            self.release,
            record_id,
            kind=self.kind,
            rollback_of=self.rollback_of,
            returning_to=self.returning_to,
        )

    def dry_run(self) -> DeployPlan:
        state = self.session.observe()
        plan = self.plan(state, "r(next)")
        self.out.say("Dry run — nothing will be changed. The plan:")
        for problem in state.disagreements():
            self.out.say(f"  first, recover: {problem}")
        for target in self.session.targets:
            try:
                target.preflight()
            except ConveyorError as exc:  # a swarm node drained, down or not listed
                self.out.say(f"  refused before anything changes: {exc}")
            change = target.router_change()
            if change is not None:
                self.out.say(f"  first, [{target.name}] {change}")
        if self.kind in terms.DEPLOY_KINDS:
            for line in schema_phase(self.session).preview(self.release, "plan"):
                self.out.say(line)
        for line in plan.steps():
            self.out.say(f"  {line}")
        for line in approvals.status_lines(self.session, self.release, kind=self.kind):
            self.out.say(line)
        return plan

    def take_lock(self, message: str, wait: float) -> EnvironmentLock:
        return take_lock(self.session, self.release.version, message, wait, self.out)

    def recover(self) -> EnvironmentState:
        """Under the lock: close dead runs' records, make routers serve the verified release."""
        return converge(self.session, self.out, by=f"the {self.kind} of {self.release.version}")

    def open_record(
        self, state: EnvironmentState, began: float, approval: dict[str, Any] | None
    ) -> ReleaseRecord:
        record_id = ledger_mod.next_id(state.records)
        self.planned = self.plan(state, record_id)
        previous = state.live_record()
        record = ReleaseRecord(
            id=record_id,
            environment=self.env.name,
            kind=self.kind,
            version=self.release.version,
            commit=self.release.commit,
            dirty=self.release.dirty,
            services={
                name: {"image_id": img.image_id, "reference": img.reference, "version": img.version}
                for name, img in self.release.images.items()
            },
            who=self.who,
            started=began,
            hosts=[t.name for t in self.session.targets],
            rollback_of=self.rollback_of,
            rollback_to=self.returning_to.id if self.returning_to else None,
            previous=previous.id if previous else None,
            scan=self.release.scan,
            commit_time=self.release.commit_time,
            approval=approval,
            containers={
                h.host: {m.service: m.container for m in h.moves} for h in self.planned.hosts
            },
        )
        self.previous = previous
        self.out.say(
            f"{self.kind.capitalize()} {self.release.version} → {self.env.name} "
            f"({record_id}, by {self.who})"
        )
        for note in self.planned.notes:
            self.out.say(f"  note: {note}")
        try:
            # With room to record how this run ends, set aside before it changes anything.
            self.session.ledger.write(record, set_reserve=True)
        except StateUnwritable as refused:
            raise StateUnwritable(
                f"{self.kind} of {self.release.version} to {self.env.name} did not start: "
                f"{refused.problem}; {self.serving()}, no new color was started",
                refused.action,
            ) from None
        return record

    def serving(self) -> str:
        """What serves while this run fails: the release live before it."""
        if self.previous is None:
            return "nothing was serving before, and nothing is now"
        return f"{self.previous.version} ({self.previous.id}) is still serving"

    def close(self, record: ReleaseRecord) -> str:
        """Write how this run ended, from the volume's reserve if it is full; what the one
        line must add when not even that works (the record stays 'running')."""
        try:
            self.session.ledger.write(record, use_reserve=True)
        except StateUnwritable:
            return (
                f"; the ledger could not record that {record.id} failed (it shows as "
                "interrupted until the next command closes it)"
            )
        return ""

    def stopped(
        self, record: ReleaseRecord, refused: StateUnwritable, announce: notify.Announcer
    ) -> StateUnwritable:
        """The ledger refused a write before any new color started: record the failure if
        the reserve allows, put the flags back, and say what serves and what to do."""
        self.restore_flags()
        record.outcome = terms.FAILED
        record.reason = refused.problem
        record.ended = time.time()
        note = self.close(record)
        announce.failed(record, self.serving())
        return StateUnwritable(
            f"{self.kind} of {self.release.version} to {self.env.name} stopped before "
            f"switching: {refused.problem}; {self.serving()}{note}",
            refused.action,
        )

    def change_schema(self, record: ReleaseRecord, announce: notify.Announcer) -> None:
        """Before any new color starts: a deploy backs up, migrates (expand) and checks that
        the live release accepts the new schema; a rollback restores the backup it was given."""
        phase = schema_phase(self.session)
        try:
            if self.restore is not None:
                self._restore(phase, record, self.restore)
            elif self.kind in terms.DEPLOY_KINDS:
                phase.run(
                    self.release,
                    record,
                    self.previous,
                    record.phases,
                    # A migration that ran is recorded, from the reserve if need be.
                    lambda: self.session.ledger.write(record, use_reserve=True),
                    live_chain=lambda name: schemaphase.release_chain(
                        self.session.ledger.records(), self.previous, name
                    ),
                    ledger_schema=self._ledger_schema,
                )
                self._retire_unfit_warm(record)
        except SchemaFailed as failure:
            record.outcome = terms.FAILED
            record.failed_phase = failure.phase
            record.reason = failure.reason
            record.ended = time.time()
            for entry in record.schema.values():
                if entry.get("after") is None or failure.phase == "compat":
                    entry["outcome"] = SCHEMA_FAILURES.get(failure.phase, "failed")
                    entry["error_tail"] = failure.tail or failure.reason
            note = self.close(record)
            serving = self.serving()
            announce.failed(record, serving)
            raise DeployFailed(
                f"{self.kind} of {self.release.version} failed in {failure.phase}: "
                f"{failure.reason} — {serving}; no new color was started{note}"
            ) from None

    def carry_flags(self, record: ReleaseRecord) -> None:
        """Before any new color starts, every host's flag files for this release: a deploy's
        definitions with the environment's current percentages kept, a rollback's the ones
        that went with the release it returns to. A failed run puts the old files back."""
        images = flagstate.images_with_flags(self.env.services.values())
        if not images:
            return
        targets = self.session.targets
        current = flagstate.read_all(targets[:1], images)[targets[0].name]
        self.flags_before = {image: d for image, d in current.items() if d is not None}
        if self.returning_to is not None:
            wanted = flagstate.state_for(
                self.returning_to.id, self.returning_to.flags, self.session.ledger.audit_events()
            )
        else:
            wanted = {
                image: flags.merge(definitions, current.get(image))
                for image, definitions in self.release.flags.items()
            }
        if not wanted:
            return
        flagstate.write_all(targets, wanted)
        record.flags = {"definitions": self.release.flags, "state": wanted}
        self.session.ledger.write(record)
        for image, definitions in sorted(wanted.items()):
            self.out.say(f"  flags ({image}): " + "; ".join(flags.describe(definitions)))

    def restore_flags(self) -> None:
        """After a failed run: the flag files the environment had before it."""
        if self.flags_before:
            try:
                flagstate.write_all(self.session.targets, self.flags_before)
            except ConveyorError as exc:
                self.out.warn(f"could not put the previous flags back: {exc}")

    def _ledger_schema(self, service: str) -> str | None:
        """The revision the ledger last saw ``service``'s database at, if it is sure."""
        ledger = self.session.ledger
        latest = schemaphase.live_schema(ledger.records(), ledger.audit_events())
        after = latest.get(service, {}).get("after")
        return str(after) if after else None

    def _retire_unfit_warm(self, record: ReleaseRecord) -> None:
        """Earlier contract revisions ran in this deploy's expand step: the release kept warm
        before the live one no longer accepts the schema, so it is no rollback target now."""
        ran = [r for entry in record.schema.values() for r in entry.get("ran") or []]
        if any(r.get("kind") != "expand" for r in ran):
            state = self.session.observe(holding_lock=True)
            stopped = warm.stop(self.session, state, self.out, only_expired=False)
            if stopped:
                self.session.ledger.audit("warm-stopped", by=record.id, actions=stopped)

    def _restore(self, phase: SchemaPhase, record: ReleaseRecord, backup: backups.Backup) -> None:
        service = self.env.services[backup.service]
        image = str(self.release.images[service.image].image_id)
        with phase.timed("migrate", record.phases):
            self.out.say(
                f"  {service.name}: restoring backup {backup.id} (taken {backup.age()} ago)"
            )
            backups.restore(phase.site(), service, image, backup, release=record.id)
        record.schema[service.name] = {"restored": backup.as_dict(), "after": None}
        self.session.ledger.write(record)

    def executor(
        self, record: ReleaseRecord, lock: EnvironmentLock, announce: notify.Announcer
    ) -> BlueGreen:
        """The plan's executor, with the hooks that write the ledger at the moments a crash
        must be understood from (the intent before each switch, verified, each canary window)."""
        ledger = self.session.ledger

        def intent(host: str) -> None:
            # Intent first: a crash after the switch still tells the next run where we were.
            added = host not in record.switched
            if added:
                record.switched.append(host)
            try:
                # Not from the reserve: a full volume stops the run here, before the switch.
                ledger.write(record)
            except StateUnwritable as refused:
                if added:  # never switched: the failed record must not say it was
                    record.switched.remove(host)
                self.refused = (host, refused)
                raise

        def verified() -> None:
            record.verified = True
            ledger.write(record, use_reserve=True)

        common: dict[str, Any] = {
            "local_client": self.session.image_source(),
            "on_phase": _phase_tracer(),
            "on_intent": intent,
            # The lock may have been broken under us: then someone else may be deploying.
            "before_switch": lambda _host: lock.ensure_ours(),
            "on_verified": verified,
            # Beside deploy.toml, so a failed run's logs are found where its config lives.
            "log_dir": self.session.config.root / ".conveyor" / "logs",
        }
        executor: BlueGreen
        if self.planned.strategy == "canary":

            def judged(record: ReleaseRecord, verdict: Verdict) -> None:
                lock.ensure_ours()
                ledger.write(record)
                announce.canary_window(record, verdict)

            executor = CanaryRollout(
                self.env,
                self.session.by_name(),
                ledger,
                self.out,
                on_window=judged,
                poll_request=steering.request_poller(self.session, record),
                save=ledger.write,
                **common,
            )
        else:
            executor = BlueGreen(self.env, self.session.by_name(), ledger, self.out, **common)
        return executor

    def execute(
        self,
        state: EnvironmentState,
        record: ReleaseRecord,
        lock: EnvironmentLock,
        announce: notify.Announcer,
    ) -> Execution:
        executor = self.executor(record, lock, announce)
        try:
            return executor.run(self.planned, record)
        except PhaseFailed as failure:
            record.undo = executor.undone
            record.outcome = terms.FAILED
            record.failed_phase = failure.phase
            record.reason = failure.reason
            record.ended = time.time()
            record.phases.update({k: round(v, 3) for k, v in executor.timings.items()})
            note = self.close(record)
            self.restore_flags()
            serving = self.serving()
            announce.failed(record, serving)
            if self.refused is not None:
                host, refused = self.refused
                raise StateUnwritable(
                    f"{self.kind} of {self.release.version} to {self.env.name} stopped before "
                    f"switching {host}: {refused.problem}; {serving}{note}",
                    refused.action,
                ) from None
            raise deploy_failed(failure, self.planned, serving + note) from None
        except StateUnwritable as refused:
            # Every host passed verify, but not even the reserve could record it: serve what
            # the ledger says, as the next command would.
            raise StateUnwritable(
                f"{self.kind} of {self.release.version} to {self.env.name} passed verify, but "
                f"{refused.problem}; {self.serve_recorded(state, record)}",
                refused.action,
                then=f"then re-run (the next command closes {record.id})",
            ) from None

    def serve_recorded(self, state: EnvironmentState, record: ReleaseRecord) -> str:
        """Switch every router back to the ledger's live release and stop this run's new
        containers; what now serves, in words."""
        if self.previous is None:
            return f"{self.release.version} keeps serving, unrecorded"
        now = self.session.observe(records=state.records, holding_lock=True)
        recovery.restore_routers(self.env, self.session.targets, now, self.out)
        for target in self.session.targets:
            for name in record.containers.get(target.name, {}).values():
                with contextlib.suppress(docker.errors.APIError):
                    target.stop_service_container(name)
        return f"switched back: {self.serving()}"

    def finish(
        self, execution: Execution, state: EnvironmentState, announce: notify.Announcer
    ) -> Moved:
        record = execution.record
        record.phases.update({k: round(v, 3) for k, v in execution.timings.items()})
        record.outcome = terms.SUCCEEDED
        record.ended = time.time()
        if execution.warm and self.previous is not None:
            record.warm = {
                "record": self.previous.id,
                "version": self.previous.version,
                "until": record.ended + self.env.keep_warm,
                "containers": execution.warm,
            }
        try:
            self.session.ledger.write(record, use_reserve=True)
        except StateUnwritable as refused:
            execution.wait_stopped()
            raise StateUnwritable(
                f"{self.kind} of {self.release.version} to {self.env.name} is live and passed "
                f"verify ({record.id}), but {refused.problem}",
                refused.action,
                then=f"then run: invoke recover --env {self.env.name} (it records {record.id} "
                "as succeeded)",
            ) from None
        if self.session.store.reserve_used:
            self.out.warn(
                f"the state volume {self.session.store.volume_name} is full: this {self.kind} "
                f"was recorded from its reserve — free space on it before the next one"
            )
        records = [r for r in state.records if r.id != record.id] + [record]
        check = self.session.observe(records=records, holding_lock=True)
        # The old color has been stopping in the background since the drain began; it must be
        # down before pruning, and before the lock is released.
        execution.wait_stopped()
        prune(self.session, records)
        for problem in check.disagreements():
            self.out.warn(f"after the {self.kind}: {problem}")
        url = self.session.public_url()
        self.out.say(
            f"✓ {self.env.name} serves {self.release.version} ({record.id}) at {url} "
            f"({record.duration:.1f} s)"
        )
        announce.succeeded(record, url)
        return Moved(record=record, plan=self.planned, url=url, execution=execution)


def take_lock(
    session: Session, version: str, message: str, wait: float, out: Console
) -> EnvironmentLock:
    """The environment's lock; a dead holder's lock is broken with an audit record."""
    lock = session.lock()

    def broken(holder: LockInfo, why: str) -> None:
        out.warn(f"breaking the stale lock of {holder.describe()}: {why}")
        session.ledger.audit("lock-broken", holder=holder.__dict__, why=why)

    lock.acquire(ledger_mod.who(), version, message, wait=wait, on_broken=broken)
    try:
        copied = session.store.sync()
    except BaseException:
        lock.release()
        raise
    for host, count in copied.items():
        out.say(f"  {host}: copied {count} ledger and audit files that its state copy lacked")
    return lock


def release_lock(session: Session, lock: EnvironmentLock, out: Console) -> None:
    """End a command that may have moved traffic: each router's colors are recorded where a
    router that starts anew reads them (a swarm's router service), then the lock goes. A
    failure there is a warning: it must not hide how the command itself ended."""
    try:
        for target in session.targets:
            target.publish_router(out)
    except Exception as exc:
        out.warn(
            f"the routers' colors were not published: {str(exc)[:200]} — a node that starts "
            f"its router anew may serve an older release until invoke recover runs"
        )
    finally:
        lock.release()


def converge(session: Session, out: Console, *, by: str) -> EnvironmentState:
    """Holding the lock: settle dead runs, ensure routers, put them on the verified release."""
    state = session.observe(holding_lock=True)
    died = [r for r in state.records if r.outcome == terms.RUNNING]
    actions = recovery.settle_interrupted(session.ledger, state.records, by)
    if died:
        actions += restore_live_flags(session, state)
    longest = max(
        (s.migrations.timeout for s in session.env.services.values() if s.migrations),
        default=60.0,
    )
    actions += oneoff.settle_leftovers(
        session.primary.client,
        session.env.name,
        out,
        wait=longest,
        log_dir=session.config.root / ".conveyor" / "logs",
    )
    actions += warm.stop(session, state, out, only_expired=True)
    changed = [
        target.name
        for target in session.targets
        if target.ensure_router(_live_hint(target, state), out)
    ]
    if state.live_record() is not None:
        # A router that was down while a release should be serving: that is a recovery. A
        # first deploy creating its router, or a changed config reloading it, is not.
        actions.extend(
            f"{name}: router was {state.host(name).router}; started with the live colors"
            for name in changed
            if state.host(name).router != "running"
        )
    if actions or changed:
        state = session.observe(records=state.records, holding_lock=True)
    restored = recovery.restore_routers(session.env, session.targets, state, out)
    if restored:
        state = session.observe(records=state.records, holding_lock=True)
    actions.extend(restored)
    if actions:
        session.ledger.audit("recovered", by=by, actions=actions)
        for action in actions:
            out.say(f"  recovered: {action}")
    return state


def restore_live_flags(session: Session, state: EnvironmentState) -> list[str]:
    """After a run died: the flag files that go with the live release (a dead deploy may have
    written its own before it could switch)."""
    live = state.live_record()
    if live is None or not flagstate.images_with_flags(session.env.services.values()):
        return []
    wanted = flagstate.state_for(live.id, live.flags, session.ledger.audit_events())
    if not wanted:
        return []
    flagstate.write_all(session.targets, wanted)
    return [f"flags of {live.id} ({live.version}) put back: {', '.join(sorted(wanted))}"]


def recover(
    config: Config,
    env_name: str,
    *,
    dry_run: bool = False,
    lock_wait: float = 0.0,
    out: Console = console,
) -> list[str]:
    """``invoke recover``: converge alone, then stop leftovers; what a crashed deploy needs."""
    session = Session(config, env_name, out)
    if dry_run:
        state = session.observe()
        problems = state.disagreements() + [
            f"{r.id} ({r.version}) was interrupted and will be closed" for r in state.interrupted()
        ]
        live = state.live_record()
        problems += [
            f"{h.name}: leftover {c.name} will be stopped"
            for h in state.hosts
            for c in h.leftovers(live)
        ]
        out.say("Dry run — nothing will be changed.")
        for line in problems or [f"{env_name} already serves its verified release"]:
            out.say(f"  {line}")
        return problems
    session.ensure_router_images()
    lock = take_lock(session, "-", "recover", lock_wait, out)
    try:
        state = converge(session, out, by="invoke recover")
        live = state.live_record()
        stopped = []
        for target in session.targets:
            for leftover in state.host(target.name).leftovers(live):
                out.say(f"  {target.name}: stopping leftover {leftover.name}")
                target.stop_service_container(leftover.name)
                stopped.append(f"{target.name}: stopped leftover {leftover.name}")
        if stopped:
            session.ledger.audit("recovered", by="invoke recover", actions=stopped)
        final = session.observe(holding_lock=True)
        for problem in final.disagreements():
            out.warn(problem)
        out.say(
            f"✓ {env_name} serves "
            + (f"{live.version} ({live.id})" if live else "nothing yet (no verified release)")
        )
        return stopped
    finally:
        release_lock(session, lock, out)


def _phase_tracer() -> Callable[[str], None] | None:
    """CONVEYOR_TRACE_PHASES=1 prints each phase as it begins (crash tests and debugging)."""
    if os.environ.get("CONVEYOR_TRACE_PHASES") != "1":
        return None

    def trace(phase: str) -> None:
        print(f"phase: {phase}", file=sys.stderr, flush=True)

    return trace


def prune(session: Session, records: list[ReleaseRecord]) -> None:
    """Keep the containers of the newest ``keep_releases`` releases in effect (the live one and
    the rollback targets); remove every other stopped service container — a failed,
    interrupted or rolled-back release's containers are never worth keeping."""
    stack, _undone = ledger_mod.lineage(records)
    kept = stack[-(session.env.keep_releases + 1) :]
    for target in session.targets:
        containers = target.service_containers()
        protected: set[str] = set()
        for record in kept:
            named = record.containers.get(target.name)
            if named:
                protected.update(named.values())
            else:
                protected.update(c.name for c in containers if c.release == record.id)
        for old in containers:
            if old.running or old.name in protected:
                continue
            with contextlib.suppress(docker.errors.NotFound):
                target.remove_service_container(old.name)
    prune_backups(session, records, kept)


def prune_backups(
    session: Session, records: list[ReleaseRecord], kept: list[ReleaseRecord]
) -> list[str]:
    """Keep the newest ``keep_releases`` backups and every backup taken by a kept release's
    deploy (the schema its rollback target saw); delete the other files, once, recorded."""
    if not schemaphase.migrating_services(session.env):
        return []
    events = session.ledger.audit_events()
    gone = {i for e in events if e.get("kind") == "backups-pruned" for i in e.get("ids", [])}
    known = [b for b in schemaphase.recorded_backups(records, events) if b.id not in gone]
    keep = {b.id for b in known[-session.env.keep_releases :]}
    kept_ids = {r.id for r in kept}
    # A deploy's backup has its record's id; a `migrate --contract` backup, "<live id>c<time>".
    keep |= {b.id for b in known if b.release.split("c", 1)[0] in kept_ids}
    doomed = [b for b in known if b.id not in keep]
    if not doomed or session.router_image is None:
        return []
    backups.remove(
        session.primary.client, session.env.name, [b.file for b in doomed], session.router_image
    )
    ids = [b.id for b in doomed]
    session.ledger.audit("backups-pruned", ids=ids)
    return ids


# --- status, history, unlock ---------------------------------------------------------------


def _ago(epoch: float | None) -> str:
    if not epoch:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _router_state(host: HostState) -> str:
    if host.router_up or host.router == "missing":
        return host.router
    return f"DOWN ({host.router}{': ' + host.error if host.error else ''})"


def _node_state(host: HostState, live: ReleaseRecord | None) -> str:
    """A swarm node's part of its status line: the manager's view, and whether it serves."""
    node = host.node
    if node is None:
        return ""
    serves = "serves" if host.serving(live) else "NOT serving"
    return f"; swarm {node['role']} {node['address']} {terms.node_condition(node)} — {serves}"


def rollout_in_progress(state: EnvironmentState) -> ReleaseRecord | None:
    """The canary record still running, if any (its process alive or not)."""
    running = [r for r in state.records if r.outcome == terms.RUNNING and r.canary]
    return running[-1] if running else None


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
        lines.append(f"  host {host.name}: router {_router_state(host)}" + _node_state(host, live))
        split = {s: w for s, w in host.weights.items() if len(w) > 1}
        if split:
            lines.append(
                "    canary split (read from the router): "
                + "; ".join(
                    f"{service} " + " / ".join(f"{c} {w}%" for c, w in sorted(weights.items()))
                    for service, weights in sorted(split.items())
                )
            )
        for container in reversed(host.containers):
            role = host.role(container, live).replace("leftover", "LEFTOVER")
            lines.append(
                f"    {container.service:<5} {container.color:<5} {role:<8} "
                f"{container.version:<28} "
                f"{container.release:<6} {container.status}"
                + (f" ({container.health})" if container.health and container.running else "")
            )
    lines.append("  lock: " + ("free" if state.lock is None else state.lock.summary(state.env)))
    rolling = rollout_in_progress(state)
    if rolling is not None:
        lines.append(
            f"  canary rollout: {rolling.id} ({rolling.version}) "
            f"{rolling.canary.get('state')} at {rolling.canary.get('percent', 0)}% — "
            f"`invoke rollout --env {state.env}` shows every verdict"
        )
    for record in state.interrupted():
        verdict = "verified, drain cut short" if record.verified else "never verified"
        lines.append(
            f"  interrupted: {record.id} ({record.version}, {verdict}) — the next deploy, "
            f"rollback or `invoke recover --env {state.env}` closes it"
        )
    for host in state.hosts:
        for leftover in host.leftovers(live):
            lines.append(f"  leftover on {host.name}: {leftover.name} (stopped by the next deploy)")
    problems = state.disagreements()
    if problems:
        lines.append("  !! the routers and the ledger DISAGREE:")
        lines.extend(f"  !!   {problem}" for problem in problems)
        lines.append(f"  !! fix: invoke recover --env {state.env}   (--dry-run shows what it does)")
    if state.unreadable:
        lines.append(f"  unreadable ledger events (ignored): {', '.join(state.unreadable)}")
    lines.extend(f"  {line}" for line in state.integrity)
    return lines


def show_status(config: Config, env_name: str, *, as_json: bool, stats: bool = False) -> None:
    session = Session(config, env_name)
    state = session.observe()
    # Approvals and lock breaks live in the audit trail: a forged one must show here too.
    events = session.ledger.audit_events()
    state.integrity = session.ledger.integrity()
    state.forged = list(session.ledger.forged)
    schemas = schemaphase.live_schema(state.records, events)
    warmth = warm.describe(session, state, stats=stats)
    flag_files = flag_glance(session)
    if as_json:
        extra = {"schema": schemas, "warm": warmth, "flags": flag_files}
        print(json.dumps(state.as_dict() | extra, indent=2, default=str))
        return
    lines = render_status(state, session.public_url()) + schema_lines(session.env, schemas)
    for image, definitions in sorted(flag_files.items()):
        shown = flags.describe(definitions) if isinstance(definitions, dict) else [definitions]
        lines.append(f"  flags ({image}): " + "; ".join(shown))
    for line in lines + warm.lines(warmth):
        console.say(line)


def flag_glance(session: Session) -> dict[str, Any]:
    """The primary host's flag files for ``status`` (a broken one is named, not fatal)."""
    found: dict[str, Any] = {}
    for image in flagstate.images_with_flags(session.env.services.values()):
        try:
            found[image] = flagstate.read(session.primary, image) or "none written yet"
        except ConveyorError as exc:
            found[image] = f"unreadable: {exc}"
    return found


def schema_lines(env: Any, schemas: dict[str, dict[str, Any]]) -> list[str]:
    """The live schema per migrating service, as the ledger last saw it migrated."""
    lines = []
    for service in schemaphase.migrating_services(env):
        entry = schemas.get(service.name)
        if entry is None:
            lines.append(f"  schema {service.name}: not migrated by conveyor yet")
            continue
        pending = entry.get("pending_contract") or []
        if entry.get("step") == "contract":
            pending = []
        database = f"{entry['database']}, " if entry.get("database") else ""
        lines.append(
            f"  schema {service.name}: {entry.get('after')} ({database}by {entry.get('by')})"
            + (f"; contract pending: {', '.join(pending)}" if pending else "")
        )
    return lines


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
        migrated = r.migration_summary()
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
        if migrated:
            console.say(f"{'':<6} {migrated}")
        if r.canary_summary():
            console.say(f"{'':<6} canary: {r.canary_summary()}")


def unlock(
    config: Config, env_name: str, *, force: bool = False, out: Console = console
) -> LockInfo | None:
    """Remove a stale lock; a live holder's lock only with ``force``. Both are audited."""
    session = Session(config, env_name)
    lock = session.lock()
    holder = lock.read()
    if holder is None:
        out.say(f"{env_name} is not locked")
        return None
    if holder.stale is None and not force:
        raise LockHeld(
            f"{env_name} is locked by {holder.describe()}, and that deploy is alive "
            f"({holder.liveness()}) — wait for it, or if you are sure it is stuck: "
            f"invoke unlock --env {env_name} --force (recorded)"
        )
    why = holder.stale or "forced while its holder was alive"
    # Recorded first: an unlock that happened is never missing from the audit trail.
    session.ledger.audit("unlock", holder=holder.__dict__, forced=holder.stale is None, why=why)
    lock.remove(holder)
    if holder.stale is None:
        out.say(
            f"forced: removed the {env_name} lock held by {holder.describe()}, a live deploy — "
            f"it stops before its next switch (recorded in the ledger)"
        )
    else:
        out.say(
            f"removed the stale {env_name} lock held by {holder.describe()}: {holder.stale} "
            f"(recorded in the ledger)"
        )
    return holder
