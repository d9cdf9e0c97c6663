"""Promotion's checks, from an observed source environment: what passes and every refusal."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from conveyor import admission, config, releases
from conveyor.containers import ServiceContainer
from conveyor.ledger import ReleaseRecord
from conveyor.observe import EnvironmentState, HostState
from conveyor.releases import Release

ROOT = Path(__file__).resolve().parents[2]
API = "sha256:" + "a" * 64
WEB = "sha256:" + "b" * 64
SERVICES = {"api", "web"}


def record(id: str = "r0002", **changes: Any) -> ReleaseRecord:
    base = ReleaseRecord(
        id=id,
        environment="staging",
        kind="deploy",
        version="2.0.0",
        commit="c" * 40,
        services={
            "api": {"image_id": API, "reference": "reg/api@sha256:" + "1" * 64, "version": "2.0.0"},
            "web": {"image_id": WEB, "reference": WEB, "version": "2.0.0"},
        },
        who="bob",
        started=float(int(id[1:])),
        ended=float(int(id[1:])) + 0.5,
        outcome="succeeded",
        scan={"passed": True, "why": "scan gate passed"},
        commit_time=1,
    )
    return dataclasses.replace(base, **changes)


def container(service: str, image_id: str, *, health: str | None = "healthy") -> ServiceContainer:
    return ServiceContainer(
        name=f"conveyor-staging-{service}-green-r0002",
        id=service,
        service=service,
        color="green",
        release="r0002",
        version="2.0.0",
        image_id=image_id,
        status="running",
        health=health,
        created="2026-01-01T00:00:00Z",
    )


def state(records: list[ReleaseRecord], **containers: ServiceContainer) -> EnvironmentState:
    running = containers or {"api": container("api", API), "web": container("web", WEB)}
    host = HostState(
        name="local",
        router="running",
        live=dict.fromkeys(running, "green"),
        containers=list(running.values()),
    )
    return EnvironmentState(env="staging", hosts=[host], records=records, lock=None)


def test_the_live_healthy_release_is_promotable_with_its_exact_images() -> None:
    older = record("r0001", version="1.0.0")
    live = record("r0002")
    chosen, checks = admission.promotable(state([older, live]), SERVICES)
    assert chosen is live
    assert checks[-1] == "running containers on local match its image IDs and are healthy"
    release = admission.promoted_release(chosen, "staging")
    assert release.digests() == {"api": API, "web": WEB}
    assert release.images["api"].reference == "reg/api@sha256:" + "1" * 64
    assert release.source == "staging r0002 (promoted)"
    assert release.scan == live.scan and release.commit_time == 1


@pytest.mark.parametrize(
    ("records", "why"),
    [
        ([], "staging has no releases to promote"),
        ([record("r0001"), record("r0002", outcome="running")], "is still running"),
        (
            [record("r0001"), record("r0002", outcome="failed", failed_phase="ready", reason="x")],
            "current release r0002 \\(2.0.0\\) failed in ready: x",
        ),
        ([record("r0001"), record("r0002", outcome="interrupted")], "was interrupted"),
        (
            [
                record("r0001"),
                record("r0002", version="3.0.0"),
                record("r0003", kind="rollback", rollback_of="r0002"),
            ],
            "staging was rolled back \\(r0003 returned to 2.0.0, rolling back r0002\\)",
        ),
    ],
)
def test_refusals(records: list[ReleaseRecord], why: str) -> None:
    with pytest.raises(admission.PromotionRefused, match=why):
        admission.promotable(state(records), SERVICES)


def test_refused_when_the_running_image_is_not_the_ledgers() -> None:
    tampered = state(
        [record()], api=container("api", "sha256:" + "9" * 64), web=container("web", WEB)
    )
    with pytest.raises(admission.PromotionRefused, match="live api runs image sha256:999"):
        admission.promotable(tampered, SERVICES)


def test_refused_when_nothing_takes_live_traffic() -> None:
    observed = state([record()])
    observed.hosts[0].live["web"] = None
    with pytest.raises(admission.PromotionRefused, match="no running container takes web's live"):
        admission.promotable(observed, SERVICES)


def test_refused_when_the_live_container_is_unhealthy() -> None:
    sick = state(
        [record()], api=container("api", API, health="unhealthy"), web=container("web", WEB)
    )
    with pytest.raises(admission.PromotionRefused, match="is unhealthy"):
        admission.promotable(sick, SERVICES)


def test_a_promote_waits_only_for_a_live_container_whose_first_check_is_pending() -> None:
    """Right after a deploy, Docker may not have run a live container's first health check:
    the promote waits for it, then judges (a starting one is still refused)."""
    starting = state(
        [record()], api=container("api", API, health="starting"), web=container("web", WEB)
    )
    assert admission.first_check_pending(starting)
    assert not admission.first_check_pending(state([record()]))
    unhealthy = state(
        [record()], api=container("api", API, health="unhealthy"), web=container("web", WEB)
    )
    assert not admission.first_check_pending(unhealthy)
    with pytest.raises(admission.PromotionRefused, match="is starting"):
        admission.promotable(starting, SERVICES)


def test_refused_when_the_target_runs_a_service_the_source_lacks() -> None:
    with pytest.raises(admission.PromotionRefused, match="no image for worker"):
        admission.promotable(state([record()]), SERVICES | {"worker"})


def test_a_router_that_cannot_be_read_is_refused() -> None:
    observed = state([record()])
    observed.hosts[0].error = "admin socket closed"
    with pytest.raises(admission.PromotionRefused, match="cannot read its router"):
        admission.promotable(observed, SERVICES)


# --- the gate: one set of checks for promote, deploy --version and approve -------------------

SCANNED = {
    "passed": True,
    "why": "scan gate passed for these image IDs",
    "images": {"api": {"image_id": API}, "web": {"image_id": WEB}},
}


def production(**changes: Any) -> Any:
    env = config.parse(
        tomllib.loads((ROOT / "deploy.toml").read_text()), ROOT / "deploy.toml"
    ).environment("production")
    return dataclasses.replace(env, **changes)


def release(**changes: Any) -> Release:
    base = releases.release_from_record(record(), source="dist/2.0.0")
    return dataclasses.replace(base, **{"scan": SCANNED, **changes})


def test_a_release_that_ran_in_staging_clean_and_scanned_is_admitted() -> None:
    staging = [record("r0001", version="1.0.0", services={}), record("r0002")]
    admitted = admission.check_release(
        production(), release(), source="staging", source_records=staging
    )
    assert admitted.checks == (
        "succeeded in staging as r0002 and no rollback undid it (live there now)",
        "built from a clean tree",
        "scan passed for these image IDs (api aaaaaaaaaaaa, web bbbbbbbbbbbb)",
    )
    assert admitted.where() == "staging r0002 (live there now)"
    # Superseded there since, but never rolled back: still admitted, and said so.
    later = [*staging, record("r0003", version="3.0.0", services={"api": {"image_id": "x"}})]
    admitted = admission.check_release(
        production(), release(), source="staging", source_records=later
    )
    assert admitted.where() == "staging r0002 (no longer live there)"


@pytest.mark.parametrize(
    ("records", "changes", "why"),
    [
        ([], {}, r"2.0.0 \(api aaaaaaaaaaaa, web bbbbbbbbbbbb\) never succeeded in staging"),
        (
            [record("r0002", outcome="failed", failed_phase="verify", reason="500s")],
            {},
            "never succeeded in staging",
        ),
        (
            [
                record("r0001", version="1.0.0", services={"api": {"image_id": "x"}}),
                record("r0002"),
                record(
                    "r0003",
                    kind="rollback",
                    version="1.0.0",
                    services={"api": {"image_id": "x"}},
                    rollback_of="r0002",
                    rollback_to="r0001",
                ),
            ],
            {},
            r"2.0.0 was rolled back in staging \(r0002 undone by r0003\)",
        ),
        ([record("r0002")], {"dirty": True}, "built from a dirty tree, and production takes"),
        (
            [record("r0002")],
            {"scan": {"passed": True}},
            r"scan gate did not pass for these image IDs \(no scan for these images: the "
            r"recorded verdict does not name the image IDs of api, web\)",
        ),
        (
            [record("r0002")],
            {"scan": {**SCANNED, "images": {"api": {"image_id": API}, "web": {"image_id": "o"}}}},
            "does not name the image IDs of web",
        ),
        ([record("r0002")], {"scan": None}, r"did not pass for these image IDs \(no scan recorded"),
        (
            [record("r0002")],
            {"scan": {"passed": False, "why": "image api of 2.0.0 did not pass its scan"}},
            "image api of 2.0.0 did not pass its scan",
        ),
    ],
)
def test_the_gate_refuses(records: list[ReleaseRecord], changes: dict[str, Any], why: str) -> None:
    with pytest.raises(admission.PromotionRefused, match=why):
        admission.check_release(
            production(), release(**changes), source="staging", source_records=records
        )


def test_a_release_rolled_back_once_and_deployed_again_is_admitted() -> None:
    records = [
        record("r0001", version="1.0.0", services={"api": {"image_id": "x"}}),
        record("r0002"),
        record(
            "r0003",
            kind="rollback",
            version="1.0.0",
            services={"api": {"image_id": "x"}},
            rollback_of="r0002",
            rollback_to="r0001",
        ),
        record("r0004"),
    ]
    admitted = admission.check_release(
        production(), release(), source="staging", source_records=records
    )
    assert admitted.source_record is not None and admitted.source_record.id == "r0004"


def test_without_promote_from_the_gate_checks_the_release_alone() -> None:
    env = production(promote_from=None)
    admitted = admission.check_release(env, release(), source=None)
    assert admitted.checks[0] == "built from a clean tree"
    assert admitted.where() == "not required to have run anywhere first"
    with pytest.raises(admission.PromotionRefused, match="has no image for web"):
        admission.check_release(env, releases.for_services(release(), {"api"}), source=None)
