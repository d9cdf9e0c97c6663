"""The approval gate: bound to image IDs, expiring, refusing self-approval, failing closed."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import pytest

from conveyor import approvals, artifacts, migrationsql, releases
from conveyor.config import Approval as Policy
from conveyor.config import Config, Environment
from conveyor.console import Console
from conveyor.errors import UsageError
from conveyor.releases import Release, ServiceImage

if TYPE_CHECKING:
    from conveyor.session import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_governance_fakes import recording_server

API = "sha256:" + "a" * 64
WEB = "sha256:" + "b" * 64
OTHER_API = "sha256:" + "c" * 64
STRICT = Policy(required=True, allow_self_approval=False, expires_hours=24)
LAX = Policy(required=True, allow_self_approval=True, expires_hours=24)


def release(api: str = API, web: str = WEB, version: str = "1.4.0") -> Release:
    return Release(
        version=version,
        commit="f" * 40,
        dirty=False,
        images={
            "api": ServiceImage("api", api, api, version),
            "web": ServiceImage("web", web, web, version),
        },
        source="staging r0007",
        scan={"passed": True, "why": "scan gate passed"},
    )


def approval_of(
    rel: Release, approver: str = "alice", *, at: float | None = None, policy: Policy = STRICT
) -> approvals.ApprovalRecord:
    return approvals.new_approval(
        approvals.candidate_from_release(rel),
        "production",
        approver,
        policy,
        method="ledger",
        now=at,
    )


class FakeLedger:
    def __init__(self, events: list[dict[str, Any]] | None = None) -> None:
        self.events = events or []

    def audit_events(self) -> list[dict[str, Any]]:
        return list(self.events)

    def audit(self, kind: str, **details: Any) -> None:
        self.events.append({"kind": kind, "at": time.time(), **details})


@dataclasses.dataclass
class FakeStore:
    present: bool = True

    def exists(self) -> bool:
        return self.present


def no_dist() -> Any:
    """A config whose dist/ folder holds no release: migration SQL is unknown there."""
    return SimpleNamespace(root=Path("/nonexistent"), build=SimpleNamespace(dist_dir="dist"))


@dataclasses.dataclass
class FakeSession:
    env: Environment
    ledger: FakeLedger
    store: FakeStore = dataclasses.field(default_factory=FakeStore)
    router_images_built: int = 0
    config: Any = dataclasses.field(default_factory=no_dist)

    def ensure_router_images(self) -> None:
        self.router_images_built += 1
        self.store.present = True


def gate(session: FakeSession, rel: Release, **kwargs: Any) -> dict[str, Any] | None:
    """The deploy-time gate, run against the fake session."""
    return approvals.require(cast("Session", session), rel, **kwargs)


class FakeAnnouncer:
    def __init__(self) -> None:
        self.needed: list[tuple[str, str]] = []

    def approval_needed(self, rel: Release, key: str) -> None:
        self.needed.append((rel.version, key))


@pytest.fixture
def production(repo_config: Config) -> Environment:
    return repo_config.environments["production"]


@pytest.fixture(autouse=True)
def deployer(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("GITHUB_ACTOR", "bob")
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.setattr(approvals, "_interactive", lambda: False)
    return "bob"


def quiet() -> Console:
    return Console(open("/dev/null", "w"), quiet=True)


# --- the key -----------------------------------------------------------------------------


def test_the_key_is_bound_to_image_ids_not_to_the_version() -> None:
    key = releases.release_key({"api": API, "web": WEB})
    assert key == releases.release_key({"web": WEB, "api": API})  # order does not matter
    assert key != releases.release_key({"api": OTHER_API, "web": WEB})
    assert release().digests() != release(api=OTHER_API).digests()
    same_version_other_images = release(api=OTHER_API, version="1.4.0")
    assert releases.release_key(same_version_other_images.digests()) != key
    assert len(key) == 64 and releases.short(key) == key[:16]


# --- evaluate ----------------------------------------------------------------------------


def test_an_approval_by_someone_else_of_exactly_these_images_is_valid() -> None:
    rel = release()
    verdict = approvals.evaluate(STRICT, rel.digests(), "bob", [approval_of(rel)])
    assert verdict.approval is not None and verdict.approval.approver == "alice"


def test_an_approval_of_other_images_never_lets_this_release_through() -> None:
    approved = release(api=OTHER_API)  # same version, one different image
    verdict = approvals.evaluate(STRICT, release().digests(), "bob", [approval_of(approved)])
    assert verdict.approval is None


def test_an_approval_with_matching_key_but_tampered_digests_is_ignored() -> None:
    rel = release()
    forged = dataclasses.replace(approval_of(rel), digests={"api": OTHER_API, "web": WEB})
    assert approvals.evaluate(STRICT, rel.digests(), "bob", [forged]).approval is None


def test_approvals_expire_after_the_configured_hours() -> None:
    rel = release()
    now = time.time()
    old = approval_of(rel, at=now - 25 * 3600)
    verdict = approvals.evaluate(STRICT, rel.digests(), "bob", [old], now=now)
    assert verdict.approval is None
    assert "expired 60 min ago" in verdict.rejected[0]
    fresh = approval_of(rel, at=now - 23 * 3600)
    assert approvals.evaluate(STRICT, rel.digests(), "bob", [fresh], now=now).approval == fresh


def test_a_shorter_expiry_in_the_config_applies_to_approvals_already_given() -> None:
    rel = release()
    now = time.time()
    given = approval_of(rel, at=now - 2 * 3600)  # valid for 24 h when given
    one_hour = Policy(required=True, allow_self_approval=False, expires_hours=1)
    assert approvals.evaluate(one_hour, rel.digests(), "bob", [given], now=now).approval is None


def test_self_approval_is_refused_unless_the_environment_allows_it() -> None:
    rel = release()
    own = approval_of(rel, approver="Bob")  # the same person, whatever the case
    refused = approvals.evaluate(STRICT, rel.digests(), "bob", [own])
    assert refused.approval is None
    assert "self-approval is not allowed" in refused.rejected[0]
    assert approvals.evaluate(LAX, rel.digests(), "bob", [own]).approval == own


def test_the_newest_valid_approval_wins_and_invalid_ones_are_explained() -> None:
    rel = release()
    now = time.time()
    first = approval_of(rel, "carol", at=now - 3600)
    second = approval_of(rel, "alice", at=now - 60)
    own = approval_of(rel, "bob", at=now - 10)
    verdict = approvals.evaluate(STRICT, rel.digests(), "bob", [first, own, second], now=now)
    assert verdict.approval == second
    assert len(verdict.rejected) == 1


def test_recorded_reads_only_this_environments_approval_events() -> None:
    rel = release()
    mine = approval_of(rel)
    theirs = dataclasses.replace(approval_of(rel), environment="staging")
    events = [
        {"kind": "approval", "approval": mine.as_dict()},
        {"kind": "approval", "approval": theirs.as_dict()},
        {"kind": "approval", "approval": {"garbage": True}},
        {"kind": "unlock", "holder": {}},
    ]
    assert approvals.recorded(events, "production") == [mine]


# --- what `approve --release R` may name ------------------------------------------------


def test_a_key_prefix_names_exactly_one_candidate() -> None:
    a = approvals.candidate_from_release(release())
    b = approvals.candidate_from_release(release(api=OTHER_API))
    assert approvals.match(a.key[:16], [a, b]) == a
    assert approvals.match(b.key.upper()[:12], [a, b]) == b
    with pytest.raises(UsageError, match="not a release key"):
        approvals.match("1.4.0", [a, b])
    with pytest.raises(UsageError, match="not a release key"):
        approvals.match(a.key[:8], [a, b])
    with pytest.raises(UsageError, match="no release with key"):
        approvals.match("0" * 16, [a, b])


def test_an_ambiguous_prefix_is_refused() -> None:
    a = approvals.candidate_from_release(release())
    twin = dataclasses.replace(a, key=a.key[:20] + "0" * 44)
    with pytest.raises(UsageError, match="ambiguous"):
        approvals.match(a.key[:12], [a, twin])


# --- the gate inside a deploy --------------------------------------------------------------


def test_a_gated_deploy_without_approval_fails_closed_and_records_nothing(
    production: Environment,
) -> None:
    session = FakeSession(production, FakeLedger())
    announce = FakeAnnouncer()
    rel = release()
    with pytest.raises(approvals.ApprovalRequired) as info:
        gate(session, rel, kind="promote", out=quiet(), announce=announce)
    message = str(info.value)
    key = releases.release_key(rel.digests())
    assert f"--release {key[:16]}" in message
    assert "nothing was changed" in message and "someone other than bob" in message
    assert info.value.exit_code == 4
    assert session.ledger.events == []
    assert announce.needed == [("1.4.0", key)]


def test_an_ungated_environment_needs_nothing(repo_config: Config) -> None:
    session = FakeSession(repo_config.environments["staging"], FakeLedger())
    assert gate(session, release(), kind="deploy", out=quiet()) is None


def test_a_valid_recorded_approval_is_what_the_deploy_records(production: Environment) -> None:
    rel = release()
    given = approval_of(rel)
    session = FakeSession(
        production, FakeLedger([{"kind": "approval", "approval": given.as_dict()}])
    )
    used = gate(session, rel, kind="promote", out=quiet())
    assert used is not None
    assert used["approver"] == "alice" and used["deployer"] == "bob"
    assert used["digests"] == rel.digests() and used["id"] == given.id


def test_the_refusal_says_why_a_recorded_approval_did_not_count(production: Environment) -> None:
    rel = release()
    own = approval_of(rel, approver="bob")
    session = FakeSession(production, FakeLedger([{"kind": "approval", "approval": own.as_dict()}]))
    with pytest.raises(approvals.ApprovalRequired, match="bob approved it but is also deploying"):
        gate(session, rel, kind="promote", out=quiet())


def test_a_rollback_needs_no_new_approval(production: Environment) -> None:
    session = FakeSession(production, FakeLedger())
    used = gate(session, release(), kind="rollback", out=quiet())
    assert used is not None and used["method"] == "rollback"


def test_typing_the_version_approves_only_where_self_approval_is_allowed(
    production: Environment,
) -> None:
    rel = release()
    asked: list[str] = []

    def typed(answer: str) -> Any:
        def ask(prompt: str) -> str:
            asked.append(prompt)
            return answer

        return ask

    strict = FakeSession(production, FakeLedger())
    with pytest.raises(approvals.ApprovalRequired):
        gate(strict, rel, kind="deploy", out=quiet(), ask=typed("1.4.0"))
    assert asked == [], "a terminal is no way around a ban on self-approval"

    lax = FakeSession(dataclasses.replace(production, approval=LAX), FakeLedger())
    with pytest.raises(approvals.ApprovalRequired, match=r"the version typed was '1\.4'"):
        gate(lax, rel, kind="deploy", out=quiet(), ask=typed("1.4"))
    assert lax.ledger.events == []
    used = gate(lax, rel, kind="deploy", out=quiet(), ask=typed("1.4.0"))
    assert used is not None and used["method"] == "terminal" and used["approver"] == "bob"
    assert [e["kind"] for e in lax.ledger.events] == ["approval"]
    assert "Type the version (1.4.0)" in asked[-1]


# --- GitHub's environment reviewers --------------------------------------------------------


def github_env(url: str, sha: str = "f" * 40) -> dict[str, str]:
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_API_URL": url,
        "GITHUB_REPOSITORY": "acme/shop",
        "GITHUB_RUN_ID": "77",
        "GITHUB_TOKEN": "ghs_" + "t" * 36,
        "GITHUB_SHA": sha,
    }


def reviews(*entries: tuple[str, str, str]) -> list[dict[str, Any]]:
    return [
        {"state": state, "user": {"login": login}, "environments": [{"name": env}], "comment": ""}
        for state, login, env in entries
    ]


def test_a_github_environment_reviewer_approves_the_runs_release(production: Environment) -> None:
    rel = release()
    session = FakeSession(production, FakeLedger())
    with recording_server() as api:
        api.routes[("GET", "/repos/acme/shop/actions/runs/77/approvals")] = (
            200,
            reviews(("rejected", "mallory", "production"), ("approved", "alice", "production")),
        )
        used = gate(
            session,
            rel,
            kind="promote",
            out=quiet(),
            environ=github_env(api.url),
        )
    assert used is not None and used["method"] == "github" and used["approver"] == "alice"
    assert used["digests"] == rel.digests()
    assert [e["approval"]["approver"] for e in session.ledger.events] == ["alice"]
    (request,) = api.requests
    assert request.headers["Authorization"] == "Bearer ghs_" + "t" * 36


@pytest.mark.parametrize(
    ("entries", "sha", "why"),
    [
        ((), "f" * 40, "no reviewer approved GitHub's production environment"),
        ((("approved", "alice", "staging"),), "f" * 40, "no reviewer approved"),
        ((("approved", "bob", "production"),), "f" * 40, "approved the GitHub run they started"),
        ((("approved", "alice", "production"),), "e" * 40, "but the release was built from"),
    ],
)
def test_github_approval_refusals(
    production: Environment, entries: tuple[Any, ...], sha: str, why: str
) -> None:
    session = FakeSession(production, FakeLedger())
    with recording_server() as api:
        api.routes[("GET", "/repos/acme/shop/actions/runs/77/approvals")] = (200, reviews(*entries))
        with pytest.raises(approvals.ApprovalRequired, match=why):
            gate(
                session,
                release(),
                kind="promote",
                out=quiet(),
                environ=github_env(api.url, sha),
            )
    assert session.ledger.events == []


def test_an_unreachable_github_fails_closed(production: Environment) -> None:
    session = FakeSession(production, FakeLedger())
    with recording_server() as api:
        api.routes[("GET", "/repos/acme/shop/actions/runs/77/approvals")] = (403, {})
        with pytest.raises(approvals.ApprovalRequired, match=r"HTTP 403.*actions: read"):
            gate(
                session,
                release(),
                kind="promote",
                out=quiet(),
                environ=github_env(api.url),
            )


def test_recording_on_a_fresh_environment_first_prepares_its_state_store(
    production: Environment,
) -> None:
    fresh = FakeSession(production, FakeLedger(), FakeStore(present=False))
    approvals.record_approval(cast(Any, fresh), approval_of(release()))
    approvals.record_approval(cast(Any, fresh), approval_of(release()))
    assert fresh.router_images_built == 1
    assert [e["kind"] for e in fresh.ledger.events] == ["approval", "approval"]


# --- the migration SQL an approval binds ----------------------------------------------------

SQL_A = "a" * 64
SQL_B = "b" * 64


def test_an_approval_binds_the_migration_sql_it_was_given_for() -> None:
    rel = release()
    given = approvals.new_approval(
        approvals.candidate_from_release(rel),
        "production",
        "alice",
        STRICT,
        method="ledger",
        migrations={"api": SQL_A},
    )
    same = approvals.evaluate(STRICT, rel.digests(), "bob", [given], migrations={"api": SQL_A})
    assert same.approval == given
    changed = approvals.evaluate(STRICT, rel.digests(), "bob", [given], migrations={"api": SQL_B})
    assert changed.approval is None
    assert changed.rejected == [
        "the migration SQL changed since alice approved it (api: approved aaaaaaaaaaaa, "
        "now bbbbbbbbbbbb)"
    ]
    gone = approvals.evaluate(STRICT, rel.digests(), "bob", [given], migrations={})
    assert gone.approval is None
    # Where dist/<version> is absent the SQL is unknown: the image IDs, which render it, bind.
    unknown = approvals.evaluate(STRICT, rel.digests(), "bob", [given], migrations=None)
    assert unknown.approval == given


def test_approvals_recorded_without_migration_sql_keep_working() -> None:
    rel = release()
    old = approval_of(rel).as_dict()
    del old["migrations"]  # as recorded before approvals bound SQL
    parsed = approvals.ApprovalRecord.from_dict(old)
    assert parsed is not None and parsed.migrations == {}
    verdict = approvals.evaluate(STRICT, rel.digests(), "bob", [parsed], migrations={"api": SQL_B})
    assert verdict.approval == parsed


def released_with_migrations(tmp_path: Path, rel: Release, sql: str) -> Any:
    """dist/<version>/ with a sealed manifest whose api image has a migration preview."""
    folder = tmp_path / "dist" / rel.version
    folder.mkdir(parents=True)
    manifest: dict[str, Any] = {
        "schema": artifacts.MANIFEST_SCHEMA,
        "version": rel.version,
        "files": {},
        "images": {"api": {"id": API}, "web": {"id": WEB}},
    }
    revisions = [migrationsql.Revision("r1", (), migrationsql.EXPAND, "notes", sql)]
    migrationsql.write_preview(folder, manifest, "api", API, revisions)
    artifacts.write_manifest(folder, manifest)
    return SimpleNamespace(root=tmp_path, build=SimpleNamespace(dist_dir="dist"))


def test_a_deploy_is_refused_when_the_migration_sql_changed_since_approval(
    production: Environment, tmp_path: Path
) -> None:
    rel = release()
    config = released_with_migrations(tmp_path, rel, "CREATE TABLE notes (id BIGINT);")
    bound = approvals.migration_digests(config, production, rel)
    assert bound is not None and set(bound) == {"api"}  # web declares no migrations
    given = approvals.new_approval(
        approvals.candidate_from_release(rel),
        "production",
        "alice",
        STRICT,
        method="ledger",
        migrations=bound,
    )
    ledger = FakeLedger([{"kind": "approval", "approval": given.as_dict()}])
    session = FakeSession(production, ledger, config=config)
    used = gate(session, rel, kind="promote", out=quiet())
    assert used is not None and used["migrations"] == bound

    # The same images, but the recorded migration SQL is now another (rewritten and resealed).
    folder = tmp_path / "dist" / rel.version
    revisions = [migrationsql.Revision("r1", (), "expand", "notes", "DROP TABLE notes;")]
    artifacts.update_manifest(
        folder, lambda m: migrationsql.write_preview(folder, m, "api", API, revisions)
    )
    with pytest.raises(approvals.ApprovalRequired) as info:
        gate(session, rel, kind="promote", out=quiet())
    assert "the migration SQL changed since alice approved it (api: approved " in str(info.value)
    assert "\n" not in str(info.value)


def test_migration_sql_of_another_build_of_the_version_is_not_this_releases(
    production: Environment, tmp_path: Path
) -> None:
    rel = release(api=OTHER_API)  # dist/1.4.0 rendered its SQL from API, not OTHER_API
    config = released_with_migrations(tmp_path, rel, "CREATE TABLE notes (id BIGINT);")
    assert approvals.migration_digests(config, production, rel) == {}
