"""Promote, and the one gate every release passes into a gated environment.

Promote deploys to one environment exactly the images live and healthy in another. Never a
rebuild: the release is the source environment's current ledger record — its image IDs and
registry digests — and it is promoted only if the containers taking live traffic on every
source host run exactly those image IDs and are healthy, and the source's newest release
succeeded (not failed, interrupted, running or a rollback).

The gate (:func:`admit`, pure core :func:`check_release`) is what an environment with
``promote_from``, a required approval or ``require_scan`` lets in, whichever way a release
comes — ``promote``, ``deploy --version``, or ``approve`` asking whether it could: the release
succeeded in the source environment and no later rollback undid it there, it was built from a
clean tree, and its scan passed for exactly these image IDs. The approval for its release key
is checked next, by the deploy itself (:func:`conveyor.approvals.require`), for every way in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from conveyor import approvals
from conveyor import ledger as ledger_mod
from conveyor.config import Config, Environment
from conveyor.console import Console, console
from conveyor.errors import ConveyorError, UsageError
from conveyor.ledger import ReleaseRecord
from conveyor.observe import EnvironmentState
from conveyor.plan import DeployPlan, Release
from conveyor.scanners import gate

UNHEALTHY = {"unhealthy", "starting"}


class PromotionRefused(ConveyorError):
    """The source environment's release may not be promoted; nothing was changed."""


@dataclass(frozen=True)
class Candidate:
    """What a promotion would deploy, and the checks it passed."""

    source: str
    record: ReleaseRecord
    release: Release
    key: str
    checks: tuple[str, ...]


def promotable(state: EnvironmentState, services: set[str]) -> tuple[ReleaseRecord, list[str]]:
    """The source's live record, if it may be promoted, and the checks it passed.

    A pure function of the observed source environment, so every refusal is unit-tested.
    ``services`` are the target's services: the source must run each of them.
    """
    env = state.env
    if not state.records:
        raise PromotionRefused(f"{env} has no releases to promote — deploy to {env} first")
    newest = state.records[-1]
    if newest.outcome == ledger_mod.RUNNING:
        raise PromotionRefused(
            f"a {newest.kind} of {newest.version} to {env} ({newest.id}) is still running — "
            f"wait for it, then promote"
        )
    if newest.outcome == ledger_mod.FAILED:
        raise PromotionRefused(
            f"{env}'s current release {newest.id} ({newest.version}) failed in "
            f"{newest.failed_phase}: {newest.reason} — fix it and deploy to {env} again"
        )
    if newest.outcome != ledger_mod.SUCCEEDED:
        raise PromotionRefused(
            f"{env}'s current release {newest.id} ({newest.version}) was {newest.outcome} — "
            f"deploy to {env} again before promoting"
        )
    if newest.kind == "rollback" or newest.rollback_of:
        raise PromotionRefused(
            f"{env} was rolled back ({newest.id} returned to {newest.version}"
            + (f", rolling back {newest.rollback_of}" if newest.rollback_of else "")
            + f") — deploy a fixed release to {env} before promoting"
        )
    rolled_back = [r for r in state.records if r.rollback_of == newest.id]
    if rolled_back:
        raise PromotionRefused(
            f"{env}'s release {newest.id} was rolled back by {rolled_back[0].id}"
        )
    record = newest
    digests = record.digests()
    missing = services - set(digests)
    if missing:
        raise PromotionRefused(
            f"{env} {record.id} has no image for {', '.join(sorted(missing))}, which the "
            f"target runs"
        )
    checks = [f"{record.id} is {env}'s newest release and succeeded"]
    for host in state.hosts:
        if host.error:
            raise PromotionRefused(f"{env} host {host.name}: cannot read its router ({host.error})")
        for service in sorted(digests):
            container = host.live_container(service)
            if container is None:
                raise PromotionRefused(
                    f"{env} host {host.name}: no running container takes {service}'s live "
                    f"traffic — check `invoke status --env {env}`"
                )
            if container.image_id != digests[service]:
                raise PromotionRefused(
                    f"{env} host {host.name}: live {service} runs image "
                    f"{container.image_id[:19]}, not {digests[service][:19]} of {record.id} — "
                    f"what runs is not what the ledger says; redeploy {env}"
                )
            if container.health in UNHEALTHY:
                raise PromotionRefused(
                    f"{env} host {host.name}: live {service} ({container.name}) is "
                    f"{container.health} — promote only a healthy release"
                )
    hosts = ", ".join(h.name for h in state.hosts)
    checks.append(f"running containers on {hosts} match its image IDs and are healthy")
    return record, checks


def promoted_release(record: ReleaseRecord, source: str) -> Release:
    """Exactly the images ``record`` ran in ``source``: never a rebuild."""
    from conveyor.operations import release_from_record  # noqa: PLC0415 - a cycle

    return release_from_record(record, source=f"{source} {record.id} (promoted)")


# --- the gate ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Admission:
    """Why a release may enter a gated environment: each check it passed, in words, and the
    source environment's record of exactly these images (where it ran)."""

    environment: str
    checks: tuple[str, ...]
    source: str | None = None
    source_record: ReleaseRecord | None = None
    live_in_source: bool = False

    def where(self) -> str:
        if self.source_record is None:
            return "not required to have run anywhere first"
        state = "live there now" if self.live_in_source else "no longer live there"
        return f"{self.source} {self.source_record.id} ({state})"


def _verified(record: ReleaseRecord) -> bool:
    flag = getattr(record, "is_verified", None)  # the ledger's own notion, where it has one
    return bool(flag) if flag is not None else record.outcome == ledger_mod.SUCCEEDED


def rolled_back_ids(records: Sequence[ReleaseRecord]) -> set[str]:
    """Records that a later rollback undid (the ledger's lineage where it has one)."""
    helper = getattr(ledger_mod, "rolled_back_ids", None)
    if helper is not None:
        return set(helper(list(records)))
    return {
        r.rollback_of
        for r in records
        if r.kind == "rollback" and r.outcome == ledger_mod.SUCCEEDED and r.rollback_of
    }


def for_services(release: Release, services: Iterable[str]) -> Release:
    """The part of ``release`` an environment runs: its services' images only."""
    wanted = set(services)
    return replace(release, images={n: i for n, i in release.images.items() if n in wanted})


def check_release(
    env: Environment,
    release: Release,
    *,
    source: str | None,
    source_records: Sequence[ReleaseRecord] = (),
) -> Admission:
    """The gate as a pure function of the target, the release and the source's ledger.

    Refuses (``PromotionRefused``, nothing changed) a release that lacks one of ``env``'s
    services, that never succeeded in ``source`` or that a rollback undid there, one built
    from a dirty tree, and one whose scan verdict did not pass for exactly its image IDs.
    """
    digests = release.digests()
    missing = sorted(set(env.services) - set(digests))
    if missing:
        raise PromotionRefused(
            f"{release.version} has no image for {', '.join(missing)}, which {env.name} runs"
        )
    wanted = {service: digests[service] for service in env.services}
    shown = approvals.describe_digests(wanted)
    checks: list[str] = []
    record, live = None, False
    if source is not None:
        ran = [
            r
            for r in source_records
            if _verified(r) and all(r.digests().get(s) == i for s, i in wanted.items())
        ]
        if not ran:
            raise PromotionRefused(
                f"{release.version} ({shown}) never succeeded in {source}, and {env.name} takes "
                f"releases from {source} only — deploy it to {source} first, then promote"
            )
        undone = rolled_back_ids(source_records)
        standing = [r for r in ran if r.id not in undone]
        if not standing:
            last = ran[-1]
            by = [r.id for r in source_records if r.rollback_of == last.id]
            raise PromotionRefused(
                f"{release.version} was rolled back in {source} ({last.id}"
                + (f" undone by {by[-1]}" if by else "")
                + f") — fix it and deploy a new release to {source} before {env.name}"
            )
        record = standing[-1]
        current = ledger_mod.current_live(list(source_records))
        live = current is not None and current.digests() == record.digests()
        checks.append(
            f"succeeded in {source} as {record.id} and no rollback undid it"
            + (" (live there now)" if live else "")
        )
    if release.dirty:
        raise PromotionRefused(
            f"{release.version} was built from a dirty tree, and {env.name} takes clean builds "
            f"only — commit, then build, scan and deploy it from a clean checkout"
        )
    checks.append("built from a clean tree")
    why = gate.scan_covers(release.scan, wanted)
    if why is not None:
        raise PromotionRefused(
            f"{release.version}: the scan gate did not pass for these image IDs ({why}) — "
            f"scan them (`nox -s scan -- --artifacts dist/{release.version}`) and deploy again"
        )
    checks.append(f"scan passed for these image IDs ({shown})")
    return Admission(
        environment=env.name,
        checks=tuple(checks),
        source=source,
        source_record=record,
        live_in_source=live,
    )


def admit(
    config: Config,
    env_name: str,
    release: Release,
    *,
    source: str | None = None,
    out: Console = console,
) -> Admission:
    """The one gate of a gated environment, for every way in (promote, deploy, approve).

    ``source`` is where a promotion comes from; it must be the environment's ``promote_from``
    when that is set. The source's ledger is read from its engine; one that cannot be read
    lets nothing through.
    """
    from conveyor.operations import Session  # noqa: PLC0415 - operations imports this module

    env = config.environment(env_name)
    if env.promote_from and source and source != env.promote_from:
        raise PromotionRefused(
            f"{env_name} takes releases from {env.promote_from}, not {source} — promote "
            f"--from {env.promote_from}"
        )
    source = source or env.promote_from
    records: list[ReleaseRecord] = []
    if source is not None:
        try:
            records = Session(config, source, out).ledger.records()
        except ConveyorError as exc:
            raise PromotionRefused(
                f"cannot read {source}'s ledger ({exc}); {env_name} lets a release in only "
                f"when {source}'s ledger shows it succeeded there"
            ) from None
    return check_release(env, release, source=source, source_records=records)


def candidate(config: Config, source: str, target: str, *, out: Console = console) -> Candidate:
    from conveyor.operations import Session  # noqa: PLC0415 - operations imports governance

    target_env = config.environment(target)
    config.environment(source)
    if source == target:
        raise UsageError(f"cannot promote {source} to itself")
    state = Session(config, source, out).observe()
    record, checks = promotable(state, set(target_env.services))
    release = for_services(promoted_release(record, source), target_env.services)
    return Candidate(
        source=source,
        record=record,
        release=release,
        key=approvals.release_key(release.digests()),
        checks=tuple(checks),
    )


def promote(
    config: Config,
    source: str,
    target: str,
    *,
    dry_run: bool = False,
    lock_wait: float = 0.0,
    out: Console = console,
) -> object:
    """Deploy ``source``'s live release to ``target``; returns the deploy's outcome or plan."""
    from conveyor import operations  # noqa: PLC0415 - operations imports governance

    found = candidate(config, source, target, out=out)
    live = ledger_mod.current_live(operations.history(config, target))
    if live is not None and live.digests() == found.release.digests() and not dry_run:
        out.say(
            f"{target} already runs these image IDs ({live.id}, {live.version}); nothing to promote"
        )
        return None
    out.say(
        f"Promoting {found.release.version} from {source} ({found.record.id}) to {target}: "
        f"release key {approvals.short(found.key)}"
    )
    for service, image in sorted(found.release.images.items()):
        out.say(f"  {service}: {image.image_id}")
    for check in found.checks:
        out.say(f"  ✓ {check}")
    plan: operations.Outcome | DeployPlan = operations.deploy_release(
        config,
        target,
        found.release,
        kind="promote",
        source=source,
        dry_run=dry_run,
        lock_wait=lock_wait,
        message=f"promote {source} {found.record.id}",
        out=out,
    )
    return plan
