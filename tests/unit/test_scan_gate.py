"""The gate: thresholds, expiring allowlists, unavailable and crashed scanners per context."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from conveyor.scanners.gate import (
    ScanNotPassed,
    evaluate,
    release_scan,
    require_passed_scan,
    scan_covers,
)
from conveyor.scanners.model import Finding, ScannerRun
from conveyor.scanners.policy import parse
from conveyor.scanners.registry import REGISTRY

TODAY = date(2026, 6, 1)


def rules(**data: Any) -> Any:
    return parse(data, Path("/project"), "pyproject.toml", REGISTRY)


def finding(severity: str = "high", rule: str = "B602", scanner: str = "bandit") -> Finding:
    return Finding(scanner, rule, severity, f"app/jobs.py:{len(rule)}", "message")


def ran(scanner: str, *findings: Finding) -> ScannerRun:
    return ScannerRun.completed(scanner, list(findings))


def test_clean_runs_pass() -> None:
    verdict = evaluate([ran("bandit"), ran("zizmor")], rules(), "main", TODAY)
    assert verdict.passed
    assert verdict.failures == verdict.warnings == []


def test_findings_at_or_above_the_threshold_block() -> None:
    runs = [ran("bandit", finding("medium", "B1"), finding("low", "B22"), finding("info", "B333"))]
    verdict = evaluate(runs, rules(), "pr", TODAY)
    assert not verdict.passed
    assert [d.finding.rule for d in verdict.blocking] == ["B1"]
    assert verdict.failures == ["1 finding(s) at medium or above not allowlisted (bandit 1)"]
    assert evaluate(runs, rules(fail_on="high"), "pr", TODAY).passed
    assert len(evaluate(runs, rules(fail_on="info"), "pr", TODAY).blocking) == 3


def test_a_live_allowlist_entry_passes_the_finding_until_it_expires() -> None:
    allow = [{"id": "B602", "reason": "fixture", "expires": date(2026, 6, 30)}]
    runs = [ran("bandit", finding())]
    before = evaluate(runs, rules(allow=allow), "main", TODAY)
    assert before.passed
    assert before.allowed[0].allowed_by is not None
    assert before.blocking == []

    after = evaluate(runs, rules(allow=allow), "main", date(2026, 7, 1))
    assert not after.passed
    assert [d.finding.rule for d in after.blocking] == ["B602"]
    expired = [f for f in after.failures if "expired" in f]
    assert expired == [
        "allowlist entry B602 (expires 2026-06-30: fixture) has expired — fix the finding or "
        "renew the entry with a new reason"
    ]


def test_an_expired_entry_fails_even_when_nothing_matches_it_any_more() -> None:
    allow = [{"id": "B999", "reason": "old", "expires": date(2026, 1, 1)}]
    verdict = evaluate([ran("bandit")], rules(allow=allow), "pr", TODAY)
    assert not verdict.passed
    assert "B999" in verdict.failures[0]


def test_an_unused_live_entry_only_warns() -> None:
    allow = [{"id": "B999", "reason": "gone?", "expires": date(2027, 1, 1)}]
    verdict = evaluate([ran("bandit")], rules(allow=allow), "main", TODAY)
    assert verdict.passed
    assert verdict.warnings == [
        "allowlist entry B999 (expires 2027-01-01: gone?) matched no finding"
    ]


@pytest.mark.parametrize(
    ("context", "passes"), [("pr", True), ("main", False), ("production", False)]
)
def test_an_unavailable_required_scanner_fails_closed_outside_pull_requests(
    context: str, passes: bool
) -> None:
    run = ScannerRun.unavailable("pip-audit", "cannot reach the advisory source 127.0.0.1:9")
    verdict = evaluate([run], rules(), context, TODAY)
    assert verdict.passed is passes
    text = " ".join(verdict.failures + verdict.warnings)
    assert "required scanner pip-audit is unavailable (cannot reach the advisory source" in text


def test_the_policy_decides_what_unavailable_means_per_context() -> None:
    run = ScannerRun.unavailable("pip-audit", "offline")
    assert not evaluate([run], rules(unavailable={"pr": "fail"}), "pr", TODAY).passed
    assert evaluate([run], rules(unavailable={"main": "warn"}), "main", TODAY).passed


def test_a_crashed_required_scanner_fails_in_every_context() -> None:
    run = ScannerRun.error("bandit", "exit 2: boom")
    verdict = evaluate([run], rules(), "pr", TODAY)
    assert not verdict.passed
    assert verdict.failures == ["required scanner bandit is error (exit 2: boom)"]


def test_optional_scanners_only_warn() -> None:
    runs = [ScannerRun.unavailable("npm-audit", "405"), ScannerRun.error("actionlint", "abort")]
    runs[0].required = runs[1].required = False
    verdict = evaluate(runs, rules(), "production", TODAY)
    assert verdict.passed
    assert len(verdict.warnings) == 2


def test_partial_analysis_is_a_warning() -> None:
    run = ran("trivy-fs")
    run.warnings = ["trivy: could not parse Dockerfile.x"]
    verdict = evaluate([run], rules(), "main", TODAY)
    assert verdict.passed
    assert verdict.warnings == ["trivy-fs: trivy: could not parse Dockerfile.x"]


def test_a_narrowed_selection_is_not_the_full_gate_in_main() -> None:
    assert not evaluate([ran("bandit")], rules(), "main", TODAY, left_out=["zizmor"]).passed
    verdict = evaluate([ran("bandit")], rules(), "pr", TODAY, left_out=["zizmor"])
    assert verdict.passed
    assert verdict.warnings == ["required scanner(s) not run in this selection: zizmor"]


def manifest(scan: dict[str, Any] | None, image_id: str = "sha256:aaa") -> dict[str, Any]:
    entry: dict[str, Any] = {"image": "conveyor/api:1.0.0", "id": image_id}
    if scan is not None:
        entry["scan"] = scan
    return {"version": "1.0.0", "images": {"api": entry}}


def test_require_passed_scan() -> None:
    good = {"passed": True, "image_id": "sha256:aaa"}
    assert require_passed_scan(manifest(good), "api") == good
    with pytest.raises(ScanNotPassed, match="no image 'web'"):
        require_passed_scan(manifest(good), "web")
    with pytest.raises(ScanNotPassed, match=r"never scanned — run `nox -s scan -- --artifacts"):
        require_passed_scan(manifest(None), "api")
    with pytest.raises(ScanNotPassed, match="changed since its scan, so there is no scan of it"):
        require_passed_scan(manifest(good, image_id="sha256:bbb"), "api")
    bad = {"passed": False, "image_id": "sha256:aaa", "failures": ["1 finding(s) at medium"]}
    with pytest.raises(ScanNotPassed, match=r"did not pass its scan: 1 finding\(s\) at medium"):
        require_passed_scan(manifest(bad), "api")


def test_a_scan_names_the_registry_digest_too() -> None:
    pushed = manifest({"passed": True, "image_id": "sha256:aaa", "digest": "sha256:d1"})
    pushed["images"]["api"]["digest"] = "sha256:d1"
    assert require_passed_scan(pushed, "api")["digest"] == "sha256:d1"
    pushed["images"]["api"]["digest"] = "sha256:d2"
    with pytest.raises(ScanNotPassed, match="the registry digest changed since its scan"):
        require_passed_scan(pushed, "api")


def two_images(api: dict[str, Any] | None, web: dict[str, Any] | None) -> dict[str, Any]:
    release = manifest(api)
    release["images"]["web"] = {"id": "sha256:bbb", **({"scan": web} if web else {})}
    return release


def test_a_release_verdict_names_every_image_id_it_covers() -> None:
    ok_api = {"passed": True, "image_id": "sha256:aaa"}
    ok_web = {"passed": True, "image_id": "sha256:bbb", "digest": "sha256:d"}
    services = {"api": "api", "web": "web"}
    verdict = release_scan(two_images(ok_api, ok_web), services)
    assert verdict == {
        "passed": True,
        "why": "scan gate passed for these image IDs",
        "images": {
            "api": {"image_id": "sha256:aaa"},
            "web": {"image_id": "sha256:bbb", "digest": "sha256:d"},
        },
    }
    assert scan_covers(verdict, {"api": "sha256:aaa", "web": "sha256:bbb"}) is None
    assert scan_covers(verdict, {"api": "sha256:aaa"}) is None, "a subset of services"
    assert scan_covers(verdict, {"api": "sha256:zzz"}) == (
        "no scan for these images: the recorded verdict does not name the image IDs of api"
    )

    missing = release_scan(two_images(ok_api, None), services)
    assert missing["passed"] is None
    assert missing["why"].startswith("no scan for these images: image web of 1.0.0 was never")
    failed = release_scan(two_images(ok_api, {**ok_web, "passed": False}), services)
    assert failed["passed"] is False and "image web of 1.0.0 did not pass" in failed["why"]
    assert scan_covers(failed, {"api": "sha256:aaa"}) == failed["why"]


def test_a_verdict_without_image_ids_is_no_scan_at_all() -> None:
    # What a hand edit or an old ledger record holds: a bare "passed".
    assert scan_covers({"passed": True}, {"api": "sha256:aaa"}) == (
        "no scan for these images: the recorded verdict does not name the image IDs of api"
    )
    assert scan_covers(None, {"api": "sha256:aaa"}) == "no scan recorded"
    assert scan_covers({"passed": None, "why": "no scan"}, {"api": "x"}) == "no scan"
