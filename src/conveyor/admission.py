"""The one gate every release passes into a gated environment, as pure functions.

An environment with ``promote_from``, a required approval or ``require_scan`` lets a release in
— whichever way it comes: ``promote``, ``deploy --version``, or ``approve`` asking whether it
could — only if it succeeded in the source environment and no later rollback undid it there,
it was built from a clean tree, and its scan passed for exactly these image IDs
(:func:`check_release`). A promotion also needs the source's live release to be what its
containers run, healthy (:func:`promotable`). Both are functions of records and observed state,
so every refusal is unit-tested without an engine; :func:`conveyor.approvals.admit` reads the
source's ledger and calls them, and the approval for the release key is checked next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from conveyor import ledger as ledger_mod
from conveyor import terms
from conveyor.config import Environment
from conveyor.errors import ConveyorError
from conveyor.ledger import ReleaseRecord
from conveyor.observe import EnvironmentState, HostState
from conveyor.releases import Release, describe_digests, release_from_record
from conveyor.scanners import gate

UNHEALTHY = {"unhealthy", "starting"}


def first_check_pending(state: EnvironmentState) -> bool:
    """Whether a container taking live traffic has not had its first health check yet
    (Docker runs it one interval after the start): judged now, it would be refused as
    "starting" right after a deploy that found it ready."""
    return any(
        container.health == "starting"
        for host in state.hosts
        for service in host.live
        if (container := host.live_container(service)) is not None
    )


class PromotionRefused(ConveyorError):
    """The source environment's release may not be promoted; nothing was changed."""


def promotable(state: EnvironmentState, services: set[str]) -> tuple[ReleaseRecord, list[str]]:
    """The source's live record, if it may be promoted, and the checks it passed.

    A pure function of the observed source environment, so every refusal is unit-tested.
    ``services`` are the target's services: the source must run each of them.
    """
    record = _newest_settled_deploy(state)
    digests = record.digests()
    missing = services - set(digests)
    if missing:
        raise PromotionRefused(
            f"{state.env} {record.id} has no image for {', '.join(sorted(missing))}, which the "
            f"target runs"
        )
    for host in state.hosts:
        _require_live_images(state.env, host, record, digests)
    hosts = ", ".join(h.name for h in state.hosts)
    return record, [
        f"{record.id} is {state.env}'s newest release and succeeded",
        f"running containers on {hosts} match its image IDs and are healthy",
    ]


def _newest_settled_deploy(state: EnvironmentState) -> ReleaseRecord:
    """The source's newest record, refused unless it is a deploy that succeeded and stands."""
    env = state.env
    if not state.records:
        raise PromotionRefused(f"{env} has no releases to promote — deploy to {env} first")
    newest = state.records[-1]
    if newest.outcome == terms.RUNNING:
        raise PromotionRefused(
            f"a {newest.kind} of {newest.version} to {env} ({newest.id}) is still running — "
            f"wait for it, then promote"
        )
    if newest.outcome == terms.FAILED:
        raise PromotionRefused(
            f"{env}'s current release {newest.id} ({newest.version}) failed in "
            f"{newest.failed_phase}: {newest.reason} — fix it and deploy to {env} again"
        )
    if newest.outcome != terms.SUCCEEDED:
        raise PromotionRefused(
            f"{env}'s current release {newest.id} ({newest.version}) was {newest.outcome} — "
            f"deploy to {env} again before promoting"
        )
    if newest.kind == terms.ROLLBACK or newest.rollback_of:
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
    return newest


def _require_live_images(
    env: str, host: HostState, record: ReleaseRecord, digests: dict[str, str]
) -> None:
    """Refuse unless every service's live container on ``host`` runs the record's image,
    healthy: what runs must be what the ledger says."""
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


def promoted_release(record: ReleaseRecord, source: str) -> Release:
    """Exactly the images ``record`` ran in ``source``: never a rebuild."""
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
    shown = describe_digests(wanted)
    checks: list[str] = []
    record, live = None, False
    if source is not None:
        record, live = _standing_in_source(env, release, wanted, source, source_records)
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


def _standing_in_source(
    env: Environment,
    release: Release,
    wanted: dict[str, str],
    source: str,
    source_records: Sequence[ReleaseRecord],
) -> tuple[ReleaseRecord, bool]:
    """The newest record of exactly these images that passed verify in ``source`` and that no
    rollback undid there, and whether it is live there now."""
    ran = [
        r
        for r in source_records
        if r.is_verified and all(r.digests().get(s) == i for s, i in wanted.items())
    ]
    if not ran:
        raise PromotionRefused(
            f"{release.version} ({describe_digests(wanted)}) never succeeded in {source}, and "
            f"{env.name} takes releases from {source} only — deploy it to {source} first, "
            f"then promote"
        )
    undone = ledger_mod.rolled_back_ids(list(source_records))
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
    return record, current is not None and current.digests() == record.digests()
