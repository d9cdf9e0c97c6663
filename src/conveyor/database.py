"""An environment's database outside a deploy: ``invoke migrate --contract`` and ``invoke
restore``. Both take the environment's lock, back up first (a contract) or warn what is lost
(a restore), and land in the ledger's audit trail; both have ``--dry-run``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from conveyor import backups, ledger, operations, schemaphase, warm
from conveyor.config import Config
from conveyor.console import Console, console
from conveyor.errors import MigrationFailed, UsageError
from conveyor.session import Session


def contract(
    config: Config,
    env_name: str,
    *,
    dry_run: bool = False,
    lock_wait: float = 0.0,
    out: Console = console,
) -> list[dict[str, Any]]:
    """Run the live release's pending contract revisions: the team commits to its schema, and
    from then on a rollback to an earlier release is refused (or needs a restore)."""
    session = Session(config, env_name, out)
    live = ledger.current_live(session.ledger.records())
    if live is None:
        raise UsageError(f"{env_name} serves no verified release; nothing to contract")
    phase = operations.schema_phase(session)
    if dry_run:
        out.say("Dry run — nothing will be changed.")
        for service, plan in _plans(session, phase, live.services, "plan").items():
            waiting = [plan.revision(r).describe() for r in plan.pending_contract]
            out.say(
                f"  {service}: would back up, then run {', '.join(waiting)}"
                if waiting
                else f"  {service}: no contract revision pending (schema {plan.current})"
            )
        out.say(f"  afterwards a rollback to a release before {live.version} is refused")
        return []
    session.ensure_router_images()
    lock = operations.take_lock(session, live.version, "migrate --contract", lock_wait, out)
    done = []
    try:
        state = operations.converge(session, out, by="invoke migrate --contract")
        for service, plan in _plans(session, phase, live.services, "contract").items():
            if not plan.pending_contract:
                out.say(f"  {service}: no contract revision pending (schema {plan.current})")
                continue
            # A warm previous release would not accept the contracted schema: stop it first.
            stopped = warm.stop(session, state, out, only_expired=False)
            if stopped:
                session.ledger.audit("warm-stopped", by="migrate --contract", actions=stopped)
            done.append(
                _contract_one(session, phase, live.id, service, live.services, current=plan.current)
            )
    finally:
        lock.release()
    out.say(f"✓ {env_name}: schema contracted for {live.version}" if done else "nothing to do")
    return done


def _plans(
    session: Session, phase: schemaphase.SchemaPhase, images: dict[str, Any], release: str
) -> dict[str, Any]:
    return {
        service.name: phase.command(service, str(images[service.name]["image_id"]), release).plan()
        for service in schemaphase.migrating_services(session.env)
        if service.name in images
    }


def _contract_one(
    session: Session,
    phase: schemaphase.SchemaPhase,
    live_id: str,
    service_name: str,
    images: dict[str, Any],
    *,
    current: str | None,
) -> dict[str, Any]:
    service = session.env.services[service_name]
    image = str(images[service_name]["image_id"])
    stamp = f"{live_id}c{int(time.time())}"
    backup = backups.take(phase.site(), service, image, release=stamp, revision=current)
    if backup is not None:
        session.out.say(f"  {service_name}: backup {backup.id} ({backup.bytes} bytes)")
    try:
        applied = phase.command(service, image, stamp).contract()
    except MigrationFailed as failure:
        session.ledger.audit(
            "migrate-failed",
            service=service_name,
            record=live_id,
            step="contract",
            reason=str(failure),
            tail=failure.tail,
            backup=backup.as_dict() if backup else None,
        )
        raise
    event = {
        "service": service_name,
        "record": live_id,
        "step": "contract",
        **applied.as_dict(),
        "backup": backup.as_dict() if backup else None,
    }
    session.ledger.audit("migrated", **event)
    ran = ", ".join(r.describe() for r in applied.ran) or "nothing (another run did it)"
    session.out.say(f"  {service_name}: contracted {applied.before} → {applied.after}: {ran}")
    return event


def restore(
    config: Config,
    env_name: str,
    backup_id: str,
    *,
    dry_run: bool = False,
    lock_wait: float = 0.0,
    yes: bool = False,
    out: Console = console,
) -> backups.Backup:
    """Put a backup back into its service's database, under the lock, recorded."""
    session = Session(config, env_name, out)
    records = session.ledger.records()
    events = session.ledger.audit_events()
    backup = schemaphase.find_backup(records, backup_id, events)
    if backup is None:
        known = ", ".join(b.id for b in schemaphase.recorded_backups(records, events)[-10:])
        raise UsageError(
            f"no backup '{backup_id}' in the {env_name} ledger (known: {known or 'none'})"
        )
    live = ledger.current_live(records)
    loss = (
        f"every write to {backup.service}'s database since it was taken {backup.age()} ago is lost"
    )
    if dry_run:
        out.say("Dry run — nothing will be changed.")
        out.say(f"  would restore {backup.id} ({backup.kind}, {backup.bytes} bytes): {loss}")
        return backup
    if live is None:
        raise UsageError(f"{env_name} serves no verified release to restore with")
    service = session.env.services[backup.service]
    image = str(live.services[backup.service]["image_id"])
    out.warn(f"restoring {backup.id}: {loss}")
    if not yes and sys.stdin.isatty():
        answer = input(f"Type {backup.id} to restore it (anything else stops): ").strip()
        if answer != backup.id:
            raise UsageError(f"not restored: the answer was not {backup.id}; nothing changed")
    session.ensure_router_images()
    lock = operations.take_lock(session, live.version, f"restore {backup.id}", lock_wait, out)
    try:
        phase = operations.schema_phase(session)
        backups.restore(phase.site(), service, image, backup, release=f"{live.id}r")
        session.ledger.audit("restored", backup=backup.as_dict(), record=live.id)
    finally:
        lock.release()
    out.say(f"✓ {env_name}: {backup.service}'s database is back to {backup.id}")
    return backup
