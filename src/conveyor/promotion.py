"""Promote: deploy to one environment exactly the images live and healthy in another.

Never a rebuild: the release is the source environment's current ledger record — its image
IDs and registry digests — and it is promoted only if the containers taking live traffic on
every source host run exactly those image IDs and are healthy. Promotion refuses, saying why,
when the source's newest release failed, was interrupted or is still running, when the source
was rolled back, when the release was built from a dirty tree, or when its scan gate did not
pass. The target's own gates (approval, scan requirement) then apply as to any deploy.
"""

from __future__ import annotations

from dataclasses import dataclass

from conveyor import approvals
from conveyor import ledger as ledger_mod
from conveyor.config import Config
from conveyor.console import Console, console
from conveyor.errors import ConveyorError, UsageError
from conveyor.ledger import ReleaseRecord
from conveyor.observe import EnvironmentState
from conveyor.plan import DeployPlan, Release

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
    if record.dirty:
        raise PromotionRefused(
            f"{record.version} ({env} {record.id}) was built from a dirty tree — commit, "
            f"build and deploy to {env} from a clean checkout"
        )
    scan = record.scan or {}
    if scan.get("passed") is not True:
        raise PromotionRefused(
            f"{record.version} ({env} {record.id}): the scan gate did not pass "
            f"({scan.get('why', 'no scan recorded')}) — run `nox -s scan` and redeploy {env}"
        )
    digests = record.digests()
    missing = services - set(digests)
    if missing:
        raise PromotionRefused(
            f"{env} {record.id} has no image for {', '.join(sorted(missing))}, which the "
            f"target runs"
        )
    checks = [
        f"{record.id} is {env}'s newest release and succeeded",
        "built from a clean tree",
        f"scan gate passed ({scan.get('why', 'passed')})",
    ]
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


def candidate(config: Config, source: str, target: str, *, out: Console = console) -> Candidate:
    from conveyor.operations import Session  # noqa: PLC0415 - operations imports governance

    target_env = config.environment(target)
    config.environment(source)
    if source == target:
        raise UsageError(f"cannot promote {source} to itself")
    state = Session(config, source, out).observe()
    record, checks = promotable(state, set(target_env.services))
    release = promoted_release(record, source)
    only = {name: img for name, img in release.images.items() if name in target_env.services}
    release = Release(
        version=release.version,
        commit=release.commit,
        dirty=release.dirty,
        images=only,
        source=release.source,
        scan=release.scan,
        commit_time=release.commit_time,
    )
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
        dry_run=dry_run,
        lock_wait=lock_wait,
        message=f"promote {source} {found.record.id}",
        out=out,
    )
    return plan
