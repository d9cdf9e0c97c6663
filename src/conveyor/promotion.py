"""Promote: deploy to one environment exactly the images live and healthy in another.

Never a rebuild: the release is the source environment's current ledger record — its image IDs
and registry digests — and it is promoted only if the containers taking live traffic on every
source host run exactly those image IDs and are healthy, and the source's newest release
succeeded (not failed, interrupted, running or a rollback): :func:`conveyor.admission.promotable`.
The target's gate (:func:`conveyor.approvals.admit`) and approval are checked by the deploy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from conveyor import ledger as ledger_mod
from conveyor import operations, terms
from conveyor.admission import first_check_pending, promotable, promoted_release
from conveyor.config import Config
from conveyor.console import Console, console
from conveyor.errors import UsageError
from conveyor.ledger import ReleaseRecord
from conveyor.observe import EnvironmentState
from conveyor.plan import DeployPlan
from conveyor.releases import Release, for_services, release_key, short
from conveyor.session import Session

# How long a promote waits for the source's live containers' first health check.
FIRST_CHECK_WAIT = 30.0


@dataclass(frozen=True)
class PromotionCandidate:
    """What a promotion would deploy, and the checks it passed."""

    source: str
    record: ReleaseRecord
    release: Release
    key: str
    checks: tuple[str, ...]


def candidate(
    config: Config, source: str, target: str, *, out: Console = console
) -> PromotionCandidate:
    target_env = config.environment(target)
    config.environment(source)
    if source == target:
        raise UsageError(f"cannot promote {source} to itself")
    state = _observed(Session(config, source, out), out)
    record, checks = promotable(state, set(target_env.services))
    release = for_services(promoted_release(record, source), target_env.services)
    return PromotionCandidate(
        source=source,
        record=record,
        release=release,
        key=release_key(release.digests()),
        checks=tuple(checks),
    )


def _observed(session: Session, out: Console) -> EnvironmentState:
    """The source as it runs, once its live containers had their first health check (at most
    ``FIRST_CHECK_WAIT`` seconds): a promote right after a deploy is judged on Docker's
    verdict, not on "starting"."""
    state = session.observe()
    deadline = time.monotonic() + FIRST_CHECK_WAIT
    if first_check_pending(state):
        out.say(f"  waiting for the first health check of {session.env.name}'s live containers")
    while first_check_pending(state) and time.monotonic() < deadline:
        time.sleep(0.5)
        state = session.observe()
    return state


def promote(
    config: Config,
    source: str,
    target: str,
    *,
    dry_run: bool = False,
    lock_wait: float = 0.0,
    out: Console = console,
) -> operations.Moved | DeployPlan | None:
    """Deploy ``source``'s live release to ``target``: what the deploy did, the plan of a dry
    run, or None when ``target`` already runs these image IDs."""
    found = candidate(config, source, target, out=out)
    live = ledger_mod.current_live(operations.history(config, target))
    if live is not None and live.digests() == found.release.digests() and not dry_run:
        out.say(
            f"{target} already runs these image IDs ({live.id}, {live.version}); nothing to promote"
        )
        return None
    out.say(
        f"Promoting {found.release.version} from {source} ({found.record.id}) to {target}: "
        f"release key {short(found.key)}"
    )
    for service, image in sorted(found.release.images.items()):
        out.say(f"  {service}: {image.image_id}")
    for check in found.checks:
        out.say(f"  ✓ {check}")
    return operations.deploy_release(
        config,
        target,
        found.release,
        kind=terms.PROMOTE,
        source=source,
        dry_run=dry_run,
        lock_wait=lock_wait,
        message=f"promote {source} {found.record.id}",
        out=out,
    )
