"""The approval gate: a gated environment runs only a release that a person approved.

An approval is bound to a release's image IDs, never to a version string: the **release key**
is the sha256 of the sorted ``service=image-id`` lines, so approving one set of images never
lets another through, even one that reports the same version. ``promote --dry-run`` and a
refused deploy print the key (its first 16 hex digits); ``approve --env E --release KEY``
records the approver in the gated environment's ledger (an ``approval`` audit event), and the
deploy checks it before it takes the lock or changes anything.

A deploy finds, in this order: a recorded approval of exactly these image IDs that has not
expired and, unless the environment allows self-approval, was given by someone other than the
deployer; in GitHub Actions, the run's approval of the GitHub environment of the same name
(its required reviewers are the gate) for a release built from the run's commit; on an
interactive terminal where self-approval is allowed, the deployer typing the version. Anything
else fails closed: the deploy exits non-zero, says what to run, and nothing is changed. A
rollback needs no new approval: it returns to a release that already passed the gate.

An approval also binds the release's **migration SQL**: the sha256 of each image's preview
(``dist/<version>/migrations-<image>-<version>.sql``, rendered from exactly that image). If
the SQL recorded for those images differs when the deploy runs, the approval no longer
counts. Approvals recorded before this (or of releases without migrations) bind no SQL and
keep working; a release whose dist/ folder is not on the deploying machine is judged by its
image IDs, which rendered the SQL in the first place.
"""

from __future__ import annotations

import math
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor import admission, artifacts, github, migrationsql, terms
from conveyor import config as config_mod
from conveyor import ledger as ledger_mod
from conveyor.console import Console, console
from conveyor.errors import ConveyorError, UsageError
from conveyor.releases import (
    Release,
    describe_digests,
    for_services,
    release_from_dist,
    release_from_record,
    release_key,
    short,
)
from conveyor.session import Session

if TYPE_CHECKING:
    from conveyor.notify import Announcer

AUDIT_KIND = "approval"
MIN_PREFIX = 12  # the shortest key prefix `approve --release` accepts


class ApprovalRequired(ConveyorError):
    """A gated environment has no valid approval for the release: nothing was changed."""

    exit_code = 4


@dataclass(frozen=True)
class Candidate:
    """A release someone may approve: where it was found and exactly which images it runs."""

    key: str
    version: str
    commit: str
    digests: dict[str, str]
    source: str
    dirty: bool = False
    scan: dict[str, Any] | None = None
    # Where the candidate was found: a ledger record, or a dist/ folder's name.
    record: ledger_mod.ReleaseRecord | None = None
    folder: str | None = None


@dataclass(frozen=True)
class ApprovalRecord:
    """One person's approval of one release key, as the audit trail records it (the policy it
    is judged by is ``config.Approval``)."""

    id: str
    environment: str
    key: str
    digests: dict[str, str]
    version: str
    commit: str
    approver: str
    at: float
    expires: float
    method: str  # "ledger" (invoke approve), "github" (environment reviewers) or "terminal"
    source: str = ""
    note: str = ""
    # image name → sha256 of its migration SQL (empty: the release had none, or an old record)
    migrations: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ApprovalRecord | None:
        """The approval an audit event holds; None when it is malformed (unreadable) or its
        times are not finite: NaN compares false, so it would pass every expiry check."""
        try:
            approval = cls(
                id=str(data["id"]),
                environment=str(data["environment"]),
                key=str(data["key"]),
                digests={str(k): str(v) for k, v in dict(data["digests"]).items()},
                version=str(data["version"]),
                commit=str(data.get("commit", "")),
                approver=str(data["approver"]),
                at=float(data["at"]),
                expires=float(data["expires"]),
                method=str(data.get("method", "ledger")),
                source=str(data.get("source", "")),
                note=str(data.get("note", "")),
                migrations={str(k): str(v) for k, v in dict(data.get("migrations") or {}).items()},
            )
        except (KeyError, TypeError, ValueError, OverflowError):
            return None
        return approval if math.isfinite(approval.at + approval.expires) else None


def new_approval(
    candidate: Candidate,
    environment: str,
    approver: str,
    policy: config_mod.Approval,
    *,
    method: str,
    note: str = "",
    now: float | None = None,
    migrations: Mapping[str, str] | None = None,
) -> ApprovalRecord:
    at = time.time() if now is None else now
    return ApprovalRecord(
        id=f"a-{secrets.token_hex(4)}",
        environment=environment,
        key=candidate.key,
        digests=dict(candidate.digests),
        version=candidate.version,
        commit=candidate.commit,
        approver=approver,
        at=at,
        expires=at + policy.expires_hours * 3600,
        method=method,
        source=candidate.source,
        note=note,
        migrations=dict(migrations or {}),
    )


def recorded(events: Iterable[Mapping[str, Any]], environment: str) -> list[ApprovalRecord]:
    """Approvals found in an environment's audit events, oldest first."""
    found = []
    for event in events:
        if event.get("kind") != AUDIT_KIND or not isinstance(event.get("approval"), Mapping):
            continue
        approval = ApprovalRecord.from_dict(event["approval"])
        if approval is not None and approval.environment == environment:
            found.append(approval)
    return sorted(found, key=lambda a: a.at)


@dataclass
class ApprovalVerdict:
    """The approval a deploy may use, or why none of the recorded ones counts."""

    approval: ApprovalRecord | None
    rejected: list[str] = field(default_factory=list)


def _same_person(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def evaluate(
    policy: config_mod.Approval,
    digests: Mapping[str, str],
    deployer: str,
    approvals: Iterable[ApprovalRecord],
    *,
    now: float | None = None,
    migrations: Mapping[str, str] | None = None,
) -> ApprovalVerdict:
    """Pick the newest approval that covers exactly ``digests``; say why the others do not.

    Expiry is checked against both the time recorded with the approval and the policy in
    force now, so shortening ``expires_hours`` takes effect at once. ``migrations`` is the
    release's migration SQL now (image → sha256; None when unknown here): an approval that
    bound other SQL does not count.
    """
    now = time.time() if now is None else now
    key = release_key(digests)
    verdict = ApprovalVerdict(approval=None)
    for approval in sorted(approvals, key=lambda a: a.at, reverse=True):
        if approval.key != key or approval.digests != dict(digests):
            continue
        changed = _changed_sql(approval.migrations, migrations)
        if changed:
            verdict.rejected.append(
                f"the migration SQL changed since {approval.approver} approved it ({changed})"
            )
            continue
        expires = min(approval.expires, approval.at + policy.expires_hours * 3600)
        if expires <= now:
            verdict.rejected.append(
                f"the approval by {approval.approver} expired {_ago(now - expires)} ago"
            )
            continue
        if approval.at > now + 300:
            verdict.rejected.append(f"the approval by {approval.approver} is dated in the future")
            continue
        if _same_person(approval.approver, deployer) and not policy.allow_self_approval:
            verdict.rejected.append(
                f"{approval.approver} approved it but is also deploying it, and self-approval "
                f"is not allowed here"
            )
            continue
        verdict.approval = approval
        return verdict
    return verdict


def _changed_sql(approved: Mapping[str, str], now: Mapping[str, str] | None) -> str:
    """What differs between the SQL an approval bound and the release's SQL now; empty when
    nothing does, the approval bound none, or the SQL is unknown here."""
    if not approved or now is None:
        return ""
    changes = []
    for image in sorted(set(approved) | set(now)):
        before, after = approved.get(image), now.get(image)
        if before != after:
            changes.append(
                f"{image}: approved {before[:12] if before else 'none'}, "
                f"now {after[:12] if after else 'none'}"
            )
    return "; ".join(changes)


def migration_digests(
    config: config_mod.Config, env: config_mod.Environment, release: Release
) -> dict[str, str] | None:
    """The sha256 of the migration SQL rendered from exactly ``release``'s images (image →
    sha256), read from ``dist/<version>/``; None when that folder is not here."""
    folder = config.root / config.build.dist_dir / release.version
    if not (folder / artifacts.MANIFEST).is_file():
        return None
    artifacts.check_seal(folder)  # an edited manifest is refused, never believed
    manifest = artifacts.read_manifest(folder)
    image_ids = {
        env.services[service].image: image.image_id
        for service, image in release.images.items()
        if service in env.services
    }
    return migrationsql.sql_digests(manifest, image_ids)


def describe_migrations(migrations: Mapping[str, str] | None) -> str:
    if migrations is None:
        return "not recorded here (dist/ folder absent): bound by the image IDs only"
    if not migrations:
        return "none"
    return ", ".join(
        f"{image} sha256 {digest[:12]}" for image, digest in sorted(migrations.items())
    )


# --- candidates: what `approve --release R` may name -----------------------------------------


def candidate_from_record(record: ledger_mod.ReleaseRecord, where: str) -> Candidate:
    digests = record.digests()
    return Candidate(
        key=release_key(digests),
        version=record.version,
        commit=record.commit,
        digests=digests,
        source=f"{where} {record.id}",
        dirty=record.dirty,
        scan=record.scan,
        record=record,
    )


def candidate_from_release(release: Release) -> Candidate:
    digests = release.digests()
    return Candidate(
        key=release_key(digests),
        version=release.version,
        commit=release.commit,
        digests=digests,
        source=release.source,
        dirty=release.dirty,
        scan=release.scan,
    )


def dist_candidates(config: config_mod.Config, env: config_mod.Environment) -> list[Candidate]:
    """Releases in dist/ whose manifests list an image for every service of ``env``."""
    found = []
    dist = config.root / config.build.dist_dir
    for manifest_path in sorted(Path(dist).glob("*/manifest.json")):
        try:
            manifest = artifacts.read_manifest(manifest_path.parent)
        except (ConveyorError, OSError, ValueError):
            continue
        entries = manifest.get("images", {})
        digests = {}
        for name, service in env.services.items():
            entry = entries.get(service.image)
            if isinstance(entry, dict) and entry.get("id"):
                digests[name] = str(entry["id"])
        if len(digests) != len(env.services):
            continue
        found.append(
            Candidate(
                key=release_key(digests),
                version=str(manifest.get("version", manifest_path.parent.name)),
                commit=str(manifest.get("commit", "")),
                digests=digests,
                source=f"{config.build.dist_dir}/{manifest_path.parent.name}",
                dirty=bool(manifest.get("dirty")),
                folder=manifest_path.parent.name,
            )
        )
    return found


def match(reference: str, candidates: Iterable[Candidate]) -> Candidate:
    """The one candidate whose release key starts with ``reference``."""
    ref = reference.strip().lower().removeprefix("sha256:")
    if len(ref) < MIN_PREFIX or any(c not in "0123456789abcdef" for c in ref):
        raise UsageError(
            f"'{reference}' is not a release key: give at least {MIN_PREFIX} hex digits of the "
            f"key that `invoke promote --dry-run` prints, or ENV:RELEASE-ID (e.g. staging:r0007)"
        )
    by_key: dict[str, Candidate] = {}
    for candidate in candidates:
        if candidate.key.startswith(ref):
            by_key.setdefault(candidate.key, candidate)
    if len(by_key) > 1:
        raise UsageError(f"release key '{reference}' is ambiguous: give more digits")
    if not by_key:
        raise UsageError(
            f"no release with key '{reference}' is live in another environment, in this "
            f"environment's ledger or in dist/ — check the key `invoke promote --dry-run` printed"
        )
    return next(iter(by_key.values()))


# --- approve (the command) --------------------------------------------------------------------


def approve(
    config: config_mod.Config,
    env_name: str,
    reference: str,
    *,
    note: str = "",
    out: Console = console,
    ask: Callable[[str], str] | None = None,
) -> ApprovalRecord:
    """Record that the person running this approves exactly one release for ``env_name``.

    ``reference`` is a release key (or a prefix of at least 12 hex digits), or
    ``ENV:RELEASE-ID`` naming a ledger record. On a terminal the approver confirms by typing
    the version; ``ask`` replaces that prompt in tests.
    """
    env = config.environment(env_name)
    if not env.approval.required:
        raise UsageError(
            f"{env_name} does not require approvals (set approval.required = true in "
            f"{config.path.name} to gate it)"
        )
    session = Session(config, env_name, out)
    candidate = _resolve(config, session, reference)
    missing = set(env.services) - set(candidate.digests)
    if missing:
        raise UsageError(
            f"{candidate.source} has no image for {', '.join(sorted(missing))}, which "
            f"{env_name} runs — it cannot be deployed there"
        )
    release = _release_of(config, env, candidate)
    candidate = candidate_from_release(release)
    approver = ledger_mod.who()
    out.say(f"Approving for {env_name}: {candidate.version} from {candidate.source}")
    out.say(
        f"  commit {candidate.commit[:12] or '?'} ("
        + ("DIRTY tree" if candidate.dirty else "clean tree")
        + f"), release key {short(candidate.key)}"
    )
    for service, image_id in sorted(candidate.digests.items()):
        out.say(f"  {service}: {image_id}")
    migrations = migration_digests(config, env, release)
    out.say(f"  migration SQL: {describe_migrations(migrations)}")
    admission = _admission(config, env_name, release)
    out.say(f"  scan: {(release.scan or {}).get('why', 'no scan recorded')}")
    out.say(f"  ran in: {admission.where()}")
    for check in admission.checks:
        out.say(f"  ✓ {check}")
    if ask is None and _interactive():
        ask = input
    if ask is not None:
        typed = ask(f"Type the version ({candidate.version}) to approve it for {env_name}: ")
        if typed.strip() != candidate.version:
            raise UsageError(f"not approved: you typed '{typed.strip()}', not the version")
    approval = new_approval(
        candidate,
        env_name,
        approver,
        env.approval,
        method="ledger",
        note=note,
        migrations=migrations,
    )
    record_approval(session, approval)
    until = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(approval.expires))
    out.say(
        f"✓ {approver} approved {candidate.version} for {env_name} until {until} ({approval.id}); "
        f"it covers these image IDs" + (" and this migration SQL only" if migrations else " only")
    )
    if not env.approval.allow_self_approval:
        out.say(f"  someone other than {approver} must run the deploy")
    return approval


def _release_of(
    config: config_mod.Config, env: config_mod.Environment, candidate: Candidate
) -> Release:
    """The release a candidate names, as ``env`` would deploy it (its services only)."""
    if candidate.record is not None:
        release = release_from_record(candidate.record, source=candidate.source)
    elif candidate.folder is not None:
        try:
            release = release_from_dist(config, env, candidate.folder)
        except ConveyorError as exc:
            raise admission.PromotionRefused(
                f"not approved: {env.name} would refuse {candidate.version} ({exc})"
            ) from None
    else:
        raise UsageError(f"{candidate.source}: not a release conveyor can deploy")
    return for_services(release, env.services)


def _admission(config: config_mod.Config, env_name: str, release: Release) -> admission.Admission:
    """The gate's verdict on ``release``: ``approve`` refuses what a deploy would refuse."""
    try:
        return admit(config, env_name, release)
    except admission.PromotionRefused as exc:
        raise admission.PromotionRefused(
            f"not approved: {env_name} would refuse {release.version} — {exc}"
        ) from None


def _resolve(config: config_mod.Config, session: Session, reference: str) -> Candidate:
    env_part, sep, record_id = reference.partition(":")
    if sep and env_part in config.environments:
        other = session if env_part == session.env.name else Session(config, env_part)
        records = [r for r in other.ledger.records() if r.id == record_id]
        if not records:
            raise UsageError(f"no release {record_id} in the {env_part} ledger")
        if records[0].outcome != terms.SUCCEEDED:
            raise UsageError(
                f"{env_part} {record_id} did not succeed ({records[0].outcome}): only a release "
                f"that went live can be approved"
            )
        return candidate_from_record(records[0], env_part)
    candidates: list[Candidate] = []
    for name in config.environments:
        if name == session.env.name:
            continue
        try:
            live = ledger_mod.current_live(Session(config, name).ledger.records())
        except ConveyorError:
            continue  # an environment we cannot reach cannot be the source
        if live is not None:
            candidates.append(candidate_from_record(live, name))
    candidates.extend(
        candidate_from_record(r, session.env.name)
        for r in reversed(session.ledger.records())
        if r.outcome == terms.SUCCEEDED
    )
    candidates.extend(dist_candidates(config, session.env))
    return match(reference, candidates)


def record_approval(session: Session, approval: ApprovalRecord) -> None:
    """Append the approval to the environment's audit trail, on its engine."""
    if not session.store.exists():
        # A production nobody deployed to yet has no state container; it is made from the
        # router image, which the first deploy would build there anyway.
        session.ensure_router_images()
    session.ledger.audit(AUDIT_KIND, approval=approval.as_dict())


# --- the gate, inside a deploy ---------------------------------------------------------------


def admit(
    config: config_mod.Config,
    env_name: str,
    release: Release,
    *,
    source: str | None = None,
    out: Console = console,
) -> admission.Admission:
    """The one gate of a gated environment, for every way in (promote, deploy, approve).

    ``source`` is where a promotion comes from; it must be the environment's ``promote_from``
    when that is set. The source's ledger is read from its engine; one that cannot be read
    lets nothing through.
    """
    env = config.environment(env_name)
    if env.promote_from and source and source != env.promote_from:
        raise admission.PromotionRefused(
            f"{env_name} takes releases from {env.promote_from}, not {source} — promote "
            f"--from {env.promote_from}"
        )
    source = source or env.promote_from
    records: list[ledger_mod.ReleaseRecord] = []
    if source is not None:
        try:
            records = Session(config, source, out).ledger.records()
        except ConveyorError as exc:
            raise admission.PromotionRefused(
                f"cannot read {source}'s ledger ({exc}); {env_name} lets a release in only "
                f"when {source}'s ledger shows it succeeded there"
            ) from None
    return admission.check_release(env, release, source=source, source_records=records)


# --- the approval, inside a deploy ----------------------------------------------------------------


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty() and not os.environ.get("CI")


def status_lines(session: Session, release: Release, *, kind: terms.RecordKind) -> list[str]:
    """What ``--dry-run`` says about the gate."""
    policy = session.env.approval
    if not policy.required:
        return []
    key = release_key(release.digests())
    if kind == terms.ROLLBACK:
        return ["approval: not needed for a rollback to a release that was live here"]
    deployer = ledger_mod.who()
    verdict = evaluate(
        policy,
        release.digests(),
        deployer,
        recorded(session.ledger.audit_events(), session.env.name),
        migrations=migration_digests(session.config, session.env, release),
    )
    if verdict.approval is not None:
        a = verdict.approval
        until = time.strftime("%Y-%m-%d %H:%M", time.localtime(a.expires))
        return [f"approval: {a.approver} approved release key {short(key)} until {until}"]
    lines = [
        f"approval: required, none valid yet for release key {short(key)} "
        f"({describe_digests(release.digests())})",
        f"  a reviewer runs: invoke approve --env {session.env.name} --release {short(key)}",
    ]
    lines.extend(f"  not valid: {why}" for why in verdict.rejected)
    return lines


def require(
    session: Session,
    release: Release,
    *,
    kind: terms.RecordKind,
    out: Console,
    announce: Announcer | None = None,
    ask: Callable[[str], str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any] | None:
    """The approval a deploy to a gated environment runs under, as recorded in its ledger
    record; raise ``ApprovalRequired`` (having changed nothing) when there is none."""
    env = session.env
    policy = env.approval
    if not policy.required:
        return None
    digests = release.digests()
    key = release_key(digests)
    if kind == terms.ROLLBACK:
        return {"method": "rollback", "key": key, "note": "returns to a release live here before"}
    deployer = ledger_mod.who()
    migrations = migration_digests(session.config, env, release)
    verdict = evaluate(
        policy,
        digests,
        deployer,
        recorded(session.ledger.audit_events(), env.name),
        migrations=migrations,
    )
    if verdict.approval is not None:
        a = verdict.approval
        out.say(f"Approved by {a.approver} ({a.method}, {a.id}) for release key {short(key)}")
        return {**a.as_dict(), "deployer": deployer}

    approval = _github_approval(
        session, release, deployer, verdict, migrations, environ=environ, out=out
    )
    if approval is None:
        approval = _terminal_approval(
            session, release, deployer, verdict, migrations, ask=ask, out=out
        )
    if approval is not None:
        return {**approval.as_dict(), "deployer": deployer}

    if announce is not None:
        announce.approval_needed(release, key)
    detail = f" (not valid: {'; '.join(verdict.rejected)})" if verdict.rejected else ""
    who = "a reviewer" if policy.allow_self_approval else f"someone other than {deployer}"
    raise ApprovalRequired(
        f"{env.name} needs an approval of {release.version} with release key {short(key)} "
        f"({describe_digests(digests)}){detail} — {who} runs "
        f"`invoke approve --env {env.name} --release {short(key)}`; nothing was changed"
    )


def _github_approval(
    session: Session,
    release: Release,
    deployer: str,
    verdict: ApprovalVerdict,
    migrations: Mapping[str, str] | None,
    *,
    environ: Mapping[str, str] | None,
    out: Console,
) -> ApprovalRecord | None:
    """In GitHub Actions: the run's approval of the GitHub environment of the same name, for a
    release built from the run's commit — recorded; otherwise why not, in ``verdict``."""
    env, policy = session.env, session.env.approval
    environ = os.environ if environ is None else environ
    if environ.get("GITHUB_ACTIONS") != "true":
        return None
    reviewer, why = github.environment_approval(env.name, environ=environ)
    run_commit = environ.get("GITHUB_SHA", "")
    if reviewer is None:
        verdict.rejected.append(why)
    elif run_commit and release.commit != run_commit:
        verdict.rejected.append(
            f"GitHub reviewer {reviewer} approved this run's commit {run_commit[:12]}, but "
            f"the release was built from {release.commit[:12]}"
        )
    elif _same_person(reviewer, deployer) and not policy.allow_self_approval:
        verdict.rejected.append(
            f"{reviewer} approved the GitHub run they started, and self-approval is not "
            f"allowed here"
        )
    else:
        candidate = candidate_from_release(release)
        approval = new_approval(
            candidate, env.name, reviewer, policy, method="github", note=why, migrations=migrations
        )
        record_approval(session, approval)
        out.say(f"Approved by {reviewer} in GitHub's {env.name} environment ({why})")
        return approval
    return None


def _terminal_approval(
    session: Session,
    release: Release,
    deployer: str,
    verdict: ApprovalVerdict,
    migrations: Mapping[str, str] | None,
    *,
    ask: Callable[[str], str] | None,
    out: Console,
) -> ApprovalRecord | None:
    """On a terminal where self-approval is allowed: the deployer typing the version."""
    env, policy = session.env, session.env.approval
    if ask is None and _interactive():
        ask = input
    if ask is None or not policy.allow_self_approval:
        return None
    key = release_key(release.digests())
    out.say(f"{env.name} needs an approval of {release.version} (release key {short(key)}):")
    for service, image_id in sorted(release.digests().items()):
        out.say(f"  {service}: {image_id}")
    out.say(f"  migration SQL: {describe_migrations(migrations)}")
    typed = ask(f"Type the version ({release.version}) to approve and deploy it: ")
    if typed.strip() != release.version:
        verdict.rejected.append(f"the version typed was '{typed.strip()}'")
        return None
    approval = new_approval(
        candidate_from_release(release),
        env.name,
        deployer,
        policy,
        method="terminal",
        migrations=migrations,
    )
    record_approval(session, approval)
    return approval
