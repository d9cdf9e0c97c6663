"""The schema's part of a deploy, a rollback and ``invoke migrate``: backup, migrate, check.

A deploy whose release has revisions to run, under the environment's lock and before its new
color starts:

1. ``backup``: the database is backed up (a failed backup ends the deploy, nothing changed);
2. ``migrate``: the release's ``expand`` step runs once, in a one-off container from its image
   (earlier releases' contract revisions run here too: the next deploy is when a team commits
   to them); a failure ends the deploy with the output's tail in the ledger;
3. ``compat``: the live release must still pass readiness on every host and answer through the
   public route on the expanded schema — it serves users on it. If not, the deploy stops.

Contract revisions never run during their own release's deploy: ``invoke migrate --contract``
or the next deploy runs them. Until then a rollback is a plain switch; after, the target's own
code says whether it accepts the schema (``current --json``) and a rollback across a contract
revision is refused up front, with the ways out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor import backups, images, router
from conveyor.config import Environment, Service
from conveyor.console import Console
from conveyor.errors import ConveyorError, MigrationFailed, SchemaMismatch
from conveyor.hosts import HostTarget
from conveyor.ledger import ReleaseRecord
from conveyor.releases import Release
from conveyor.schema import Acceptance, MigrationCommand, SchemaPlan
from conveyor.terms import Phase


def migrating_services(env: Environment) -> list[Service]:
    return [s for s in env.services.values() if s.migrations is not None]


class SchemaFailed(ConveyorError):
    """The schema phase failed; the live release still serves (``phase`` says where)."""

    def __init__(self, phase: Phase, reason: str, tail: str = "") -> None:
        super().__init__(reason)
        self.phase = phase
        self.reason = reason
        self.tail = tail


@dataclass
class SchemaPhase:
    """The schema steps of one deploy or rollback, run on the primary host."""

    env: Environment
    primary: HostTarget
    targets: list[HostTarget]
    out: Console
    log_dir: Path | None = None
    on_phase: Callable[[Phase], None] | None = None
    # The engine a release's image is copied from when the primary lacks it (Session's).
    image_source: Any = None

    def site(self) -> backups.Site:
        """Where backups run: the primary, given the PostgreSQL tools image if it lacks it."""
        for service in migrating_services(self.env):
            settings = service.migrations
            if settings is not None and settings.backup_kind == "postgres":
                self._ensure_tools(settings.backup_image)
        return backups.Site(self.primary.client, self.env.name, self.log_dir)

    def _ensure_tools(self, tag: str) -> None:
        """Copy the backup tools image, which scripts/setup builds on this machine, to a
        primary that lacks it (a swarm's manager, a remote host), as a release's images are
        copied; with none here either, the backup says what to run."""
        source = self.image_source
        if (
            source is None
            or source is self.primary.client
            or images.image_present(self.primary.client, tag)
        ):
            return
        if images.image_present(source, tag):
            self.out.say(f"  {self.primary.name}: copying the backup tools image {tag}")
            images.copy_image(source, self.primary.client, tag)

    def command(self, service: Service, image: str, release: str) -> MigrationCommand:
        return MigrationCommand(
            self.primary.client, self.env.name, service, image, release, log_dir=self.log_dir
        )

    # --- deploy ----------------------------------------------------------------------------

    def preview(self, release: Release, record_id: str) -> list[str]:
        """For ``--dry-run``: what the schema phase would run (read-only: ``plan --json``)."""
        lines = []
        for service in migrating_services(self.env):
            image = release.images[service.image]
            self.primary.ensure_image(image.image_id, image.reference, self.image_source)
            plan = self.command(service, image.image_id, record_id).plan()
            lines.extend(describe_plan(service, plan))
        return lines

    def refuse_unknown_contracts(
        self,
        service: Service,
        plan: SchemaPlan,
        live: ReleaseRecord | None,
        known: set[str] | None,
    ) -> None:
        """Before the backup: the expand step may run earlier releases' contract revisions
        (the team committed to them by deploying on) — but never one the live release does
        not know (it was rolled back past): it would stop serving on the contracted schema."""
        if live is None or known is None:
            return
        unknown = [r for r in plan.will_run() if r.kind != "expand" and r.revision not in known]
        if unknown:
            raise SchemaFailed(
                "migrate",
                f"{service.name}: this release's expand step would run contract revision "
                f"{unknown[0].describe()}, which the live release {live.version} does not "
                "know (a rollback went back past it): it would stop serving — deploy the "
                "release that brought that revision first; nothing was changed",
            )

    def run(
        self,
        release: Release,
        record: ReleaseRecord,
        live: ReleaseRecord | None,
        timings: dict[str, float],
        save: Callable[[], None],
        *,
        live_chain: Callable[[str], set[str] | None] = lambda _service: None,
        ledger_schema: Callable[[str], str | None] = lambda _service: None,
    ) -> None:
        """Backup, expand and check each migrating service; ``save`` writes the record."""
        for service in migrating_services(self.env):
            image = release.images[service.image]
            known = ledger_schema(service.name)
            if known is not None and known == release.expand_head(service.name):
                # The ledger saw the database at this release's expand head: no one-off needed
                # (were it wrong, the new color's readiness would refuse the schema).
                record.schema[service.name] = {
                    "current": known,
                    "after": known,
                    "chain": [{"revision": r, "kind": k} for r, k in release.chains[service.name]],
                    "ran": [],
                    "backup": None,
                    "planned": "from the ledger",
                }
                self.out.say(f"  {service.name}: schema at {known} (ledger); nothing to migrate")
                continue
            command = self.command(service, image.image_id, record.id)
            with self.failing_as("migrate"):
                self.primary.ensure_image(image.image_id, image.reference, self.image_source)
                plan = command.plan()
            entry: dict[str, Any] = plan.as_dict() | {"ran": [], "backup": None}
            record.schema[service.name] = entry
            if not plan.pending_expand:
                entry["after"] = plan.current
                self.out.say(f"  {service.name}: schema at {plan.current}; nothing to migrate")
                continue
            for line in describe_plan(service, plan):
                self.out.say(line)
            with self.failing_as("migrate"):
                self.refuse_unknown_contracts(service, plan, live, live_chain(service.name))
            with self.timed("backup", timings):
                backup = backups.take(
                    self.site(), service, image.image_id, release=record.id, revision=plan.current
                )
            entry["backup"] = backup.as_dict() if backup else None
            self.out.say(
                f"  {service.name}: backup {backup.id} ({backup.bytes} bytes)"
                if backup
                else f"  {service.name}: no database yet, nothing to back up"
            )
            save()
            with self.timed("migrate", timings):
                applied = command.expand()
            entry.update(applied.as_dict())
            entry["log"] = applied.log
            save()
            ran = ", ".join(r.describe() for r in applied.ran) or "nothing (another run did it)"
            self.out.say(
                f"  {service.name}: migrated {applied.before or 'empty'} → {applied.after}: {ran}"
            )
            if live is not None:
                with self.timed("compat", timings):
                    self.check_live(service, live, backup)

    def restore_hint(self, service: Service, backup: backups.Backup | None) -> str:
        if backup is None:
            return "fix forward with a release whose revisions the live one accepts"
        return (
            f"put the schema back: invoke restore --env {self.env.name} --backup {backup.id} "
            f"(writes since it was taken, {backup.age()} ago, are lost), or fix forward"
        )

    def check_live(
        self, service: Service, live: ReleaseRecord, backup: backups.Backup | None = None
    ) -> None:
        """The live release answers readiness on every host and through the public route."""
        version = str(live.services.get(service.name, {}).get("version", live.version))
        for target in self.targets:
            color = target.live_colors().get(service.name)
            if color is None:
                continue
            port = target.ports.services[service.name][color]
            health = service.health
            for where, probe_port, headers in (
                (f"{service.name}@{color} /readyz", port, None),
                ("the public route", target.ports.public, {router.SERVICE_HEADER: service.name}),
            ):
                answer = target.probe(
                    probe_port, health.path, timeout=health.timeout, headers=headers
                )
                got = (answer.body or {}).get("version")
                if not answer.ok or got != version:
                    raise SchemaFailed(
                        "compat",
                        f"{target.name}: the live release {live.version} ({live.id}) fails on the "
                        f"new schema: {where} answered {answer.describe()} (version {got}) — "
                        f"{self.restore_hint(service, backup)}",
                    )
        self.out.say(f"  {service.name}: the live release {live.version} accepts the new schema")

    @contextmanager
    def timed(self, name: Phase, timings: dict[str, float]) -> Iterator[None]:
        """A traced, timed phase whose failure is a ``SchemaFailed`` naming it."""
        if self.on_phase is not None:
            self.on_phase(name)
        began = time.monotonic()
        try:
            with self.failing_as(name):
                yield
        finally:
            timings[name] = round(timings.get(name, 0.0) + time.monotonic() - began, 3)

    @contextmanager
    def failing_as(self, name: Phase) -> Iterator[None]:
        """Any failure inside becomes one ``SchemaFailed`` line, so the record is closed."""
        try:
            yield
        except SchemaFailed:
            raise
        except MigrationFailed as exc:
            raise SchemaFailed(name, str(exc), exc.tail) from None
        except ConveyorError as exc:
            raise SchemaFailed(name, str(exc)) from None
        except Exception as exc:  # the engine's own errors (docker.errors and kin)
            raise SchemaFailed(name, f"{type(exc).__name__}: {str(exc)[:200]}") from None

    # --- rollback --------------------------------------------------------------------------

    def acceptance(self, target: ReleaseRecord, record_id: str) -> dict[str, Acceptance]:
        """Per migrating service: does the rollback target's own code accept the schema?"""
        verdicts = {}
        for service in migrating_services(self.env):
            image = str(target.services.get(service.name, {}).get("image_id", ""))
            if not image:
                continue
            reference = str(target.services[service.name].get("reference", ""))
            self.primary.ensure_image(image, reference, self.image_source)
            verdicts[service.name] = self.command(service, image, record_id).current()
        return verdicts


def contract_between(
    records: list[ReleaseRecord], target: ReleaseRecord, backup: backups.Backup
) -> str | None:
    """A contract revision between ``target``'s head and the schema ``backup`` holds, found
    in the chain of any release that knows both; None when there is none (or none known)."""
    known = release_chain(records, target, backup.service)
    if known is None or not backup.revision or backup.revision in known:
        return None
    for record in reversed(records):
        chain = [r for r in record.schema.get(backup.service, {}).get("chain") or []]
        names = [str(r["revision"]) for r in chain]
        if backup.revision not in names:
            continue
        upto = names.index(backup.revision)
        start = max((i for i, name in enumerate(names) if name in known), default=-1)
        between = chain[start + 1 : upto + 1]
        contracts = [str(r["revision"]) for r in between if r.get("kind") != "expand"]
        return contracts[0] if contracts else None
    return None


def describe_plan(service: Service, plan: SchemaPlan) -> list[str]:
    lines = [
        f"  {service.name}: schema {plan.current or 'empty'} ({plan.database}); "
        f"{len(plan.pending_expand)} revision(s) to run before the switch"
    ]
    lines += [f"    run {r.describe()}" for r in plan.will_run()]
    waiting = [plan.revision(r) for r in plan.pending_contract]
    lines += [
        f"    left pending {r.describe()} (until `invoke migrate --contract` or the next deploy)"
        for r in waiting
    ]
    return lines


def refusal(
    env_name: str,
    target: ReleaseRecord,
    verdicts: dict[str, Acceptance],
    records: list[ReleaseRecord],
    events: list[dict[str, Any]] | None = None,
) -> SchemaMismatch | None:
    """Why a rollback to ``target`` is refused, naming the ways out; None when it may switch."""
    refused = {name: v for name, v in verdicts.items() if not v.compatible}
    if not refused:
        return None
    name, verdict = next(iter(refused.items()))
    contract = verdict.contract_ahead()
    named = contract[0].describe() if contract else verdict.why
    restorable = backup_before_contract(records, events or [], target, name)
    ways = (
        f"--restore-backup {restorable.id} (taken {restorable.age()} ago; writes since are lost)"
        if restorable
        else f"--restore-backup ID (see: invoke history --env {env_name})"
    )
    return SchemaMismatch(
        f"rollback to {target.id} ({target.version}) refused: the database is at "
        f"{verdict.current}, ahead of it by contract revision {named} — {ways}, or "
        f"--allow-schema-mismatch to try anyway (the target's readiness still decides)"
    )


def backup_before_contract(
    records: list[ReleaseRecord],
    events: list[dict[str, Any]],
    target: ReleaseRecord,
    service: str,
) -> backups.Backup | None:
    """The backup taken right before the first contract revision ran after ``target`` went
    live — by a deploy's expand step or by ``migrate --contract`` — which is the last schema
    ``target`` is known to accept; else the newest backup taken since ``target``."""
    runs: list[tuple[float, dict[str, Any] | None]] = []
    for record in records:
        entry = record.schema.get(service, {})
        if record.started >= target.started and any(
            r.get("kind") != "expand" for r in entry.get("ran") or []
        ):
            runs.append((record.started, entry.get("backup")))
    for event in events:
        if (
            event.get("kind") == "migrated"
            and event.get("service") == service
            and event.get("ran")
            and float(event.get("at", 0)) >= target.started
        ):
            runs.append((float(event["at"]), event.get("backup")))
    pruned = pruned_backups(events)
    for _at, raw in sorted(runs, key=lambda run: run[0]):
        if raw and raw.get("id") not in pruned:
            return backups.Backup.from_dict(raw)
    since = [
        b
        for b in recorded_backups(records, events)
        if b.service == service and b.taken >= target.started
    ]
    return since[-1] if since else None


def pruned_backups(events: list[dict[str, Any]]) -> set[str]:
    return {i for e in events if e.get("kind") == "backups-pruned" for i in e.get("ids", [])}


def release_chain(
    records: list[ReleaseRecord], record: ReleaseRecord | None, service: str
) -> set[str] | None:
    """The revisions a release's code knows, from the record that deployed it (a rollback
    record points at it); None when no record says (deployed before conveyor ran migrations)."""
    if record is None:
        return None
    by_id = {r.id: r for r in records}
    candidates = [record]
    if record.rollback_to and record.rollback_to in by_id:
        candidates.append(by_id[record.rollback_to])
    candidates += [r for r in reversed(records) if r.version == record.version]
    for candidate in candidates:
        chain = candidate.schema.get(service, {}).get("chain")
        if chain:
            return {str(r["revision"]) for r in chain}
    return None


def recorded_backups(
    records: list[ReleaseRecord], events: list[dict[str, Any]] | None = None
) -> list[backups.Backup]:
    """Every backup the ledger knows of: deploys' and ``migrate --contract``'s, oldest first."""
    found = []
    for record in records:
        for entry in record.schema.values():
            raw = entry.get("backup")
            if raw:
                found.append(backups.Backup.from_dict(raw))
    for event in events or []:
        if event.get("kind") == "migrated" and event.get("backup"):
            found.append(backups.Backup.from_dict(event["backup"]))
    gone = pruned_backups(events or [])
    return sorted((b for b in found if b.id not in gone), key=lambda b: b.taken)


def find_backup(
    records: list[ReleaseRecord], backup_id: str, events: list[dict[str, Any]] | None = None
) -> backups.Backup | None:
    return next((b for b in recorded_backups(records, events) if b.id == backup_id), None)


def live_schema(
    records: list[ReleaseRecord], events: list[dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """Per service, the newest schema the ledger knows of: after the last migration run, by a
    deploy or by ``invoke migrate --contract``."""
    runs: list[tuple[float, str, dict[str, Any]]] = []
    for record in records:
        for service, entry in record.schema.items():
            if entry.get("after") is not None:
                runs.append((record.started, service, entry | {"by": record.id}))
    for record in records:
        for service, entry in record.schema.items():
            restored = entry.get("restored")
            if restored:
                after = {"after": restored.get("revision"), "by": f"restore in {record.id}"}
                runs.append((record.started, service, after))
    for event in events or []:
        if event.get("kind") == "migrated":
            runs.append(
                (float(event.get("at", 0)), str(event["service"]), event | {"by": "contract"})
            )
        if event.get("kind") == "restored" and event.get("backup"):
            backup = event["backup"]
            after = {"after": backup.get("revision"), "by": f"restore of {backup.get('id')}"}
            runs.append((float(event.get("at", 0)), str(backup.get("service")), after))
    latest: dict[str, dict[str, Any]] = {}
    for _at, service, entry in sorted(runs, key=lambda run: run[0]):
        latest[service] = entry
    return latest
