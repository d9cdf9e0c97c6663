"""Reports: the merged SARIF, findings.json, the bounded summary; secrets never leak."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from conveyor.scanners import report
from conveyor.scanners.gate import Verdict, evaluate
from conveyor.scanners.model import Finding, ScannerRun
from conveyor.scanners.policy import parse
from conveyor.scanners.redact import redact
from conveyor.scanners.registry import REGISTRY

# Assembled at run time: a token-shaped literal would trip every secret scanner that reads us.
TOKEN = "ghp_" + "R7x2Kq9LmN4pW8sT1vB6cY3dF5gH0jZ2aQ7e"
TODAY = date(2026, 6, 1)


def scenario() -> tuple[list[ScannerRun], Verdict]:
    rules = parse(
        {"allow": [{"id": "PYSEC-2018-28", "reason": "not reachable", "expires": "2026-12-31"}]},
        Path("/project"),
        "pyproject.toml",
        REGISTRY,
    )
    runs = [
        ScannerRun.completed(
            "bandit",
            [
                Finding("bandit", "B105", "low", "app/jobs.py:5", f"hardcoded password: '{TOKEN}'",
                        path="app/jobs.py", line=5),
                Finding("bandit", "B602", "high", "app/jobs.py:10", "shell=True",
                        path="app/jobs.py", line=10, help_uri="https://bandit.readthedocs.io/b602"),
            ],
        ),
        ScannerRun.completed(
            "pip-audit",
            [Finding("pip-audit", "PYSEC-2018-28", "high", "requests@2.19.0", "leaks auth",
                     fix="upgrade to 2.20.0", path="requirements.txt", line=1)],
        ),
        ScannerRun.completed(
            "trivy-image",
            [Finding("trivy-image", "github-pat", "critical", f"api:/app/settings.py:1 {TOKEN}",
                     f"GitHub token: TOKEN={TOKEN}", component="api")],
        ),
        ScannerRun.unavailable("npm-audit", "405 from the audit endpoint"),
    ]  # fmt: skip
    runs[3].required = False
    return runs, evaluate(runs, rules, "main", TODAY)


def test_sarif_has_one_run_per_scanner_with_distinct_categories() -> None:
    runs, verdict = scenario()
    document = report.sarif(runs, verdict)
    assert document["version"] == "2.1.0"
    assert [r["tool"]["driver"]["name"] for r in document["runs"]] == [
        "bandit", "pip-audit", "trivy-image", "npm-audit",
    ]  # fmt: skip
    categories = [r["automationDetails"]["id"] for r in document["runs"]]
    assert len(set(categories)) == len(categories)


def test_sarif_results_carry_rules_levels_locations_and_suppressions() -> None:
    runs, verdict = scenario()
    bandit, pip_audit, image, npm = report.sarif(runs, verdict)["runs"]
    b602 = next(r for r in bandit["results"] if r["ruleId"] == "B602")
    assert b602["level"] == "error"
    assert b602["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": "app/jobs.py", "uriBaseId": "%SRCROOT%"},
        "region": {"startLine": 10},
    }
    rule = bandit["tool"]["driver"]["rules"][b602["ruleIndex"]]
    assert rule["id"] == "B602"
    assert rule["properties"]["security-severity"] == "8.0"
    assert rule["helpUri"] == "https://bandit.readthedocs.io/b602"
    b105 = next(r for r in bandit["tool"]["driver"]["rules"] if r["id"] == "B105")
    assert "helpUri" not in b105  # no URI rather than an invalid one
    suppressed = pip_audit["results"][0]
    assert suppressed["suppressions"][0]["status"] == "accepted"
    assert "not reachable" in suppressed["suppressions"][0]["justification"]
    assert image["results"][0]["locations"][0]["logicalLocations"]
    assert npm["invocations"][0]["executionSuccessful"] is False
    assert npm["results"] == []
    note = npm["invocations"][0]["toolExecutionNotifications"][0]
    assert note["message"]["text"] == "unavailable (405 from the audit endpoint)"


def test_sarif_refuses_more_runs_than_github_accepts() -> None:
    runs = [ScannerRun.completed(f"s{i}", []) for i in range(21)]
    with pytest.raises(ValueError, match="at most 20"):
        report.sarif(runs, Verdict("pr", "medium", True))


def test_reports_never_contain_the_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs, verdict = scenario()
    paths = report.write(tmp_path, runs, verdict, project="planted")
    for line in report.console_table(runs, verdict):
        print(line)
    printed = capsys.readouterr().out
    for path in paths.values():
        text = path.read_text(encoding="utf-8")
        assert TOKEN not in text
        assert TOKEN[:8] not in text
        assert "[REDACTED]" in text
    assert TOKEN not in printed
    assert "ghp_…[REDACTED]" in printed


def test_findings_json_records_verdict_statuses_and_decisions(tmp_path: Path) -> None:
    runs, verdict = scenario()
    data = json.loads(report.write(tmp_path, runs, verdict, project="p")["findings"].read_text())
    assert data["passed"] is False
    assert data["context"] == "main"
    statuses = {s["name"]: (s["status"], s["required"]) for s in data["scanners"]}
    assert statuses["npm-audit"] == ("unavailable", False)
    by_rule = {f["rule"]: f for f in data["findings"]}
    assert by_rule["B602"]["blocking"] is True
    assert by_rule["B105"]["blocking"] is False
    assert by_rule["PYSEC-2018-28"]["allowlisted"]["expires"] == "2026-12-31"
    assert by_rule["PYSEC-2018-28"]["fix"] == "upgrade to 2.20.0"
    assert by_rule["github-pat"]["component"] == "api"


def test_summary_lists_reasons_and_tables() -> None:
    runs, verdict = scenario()
    text = report.summary_markdown(runs, verdict)
    assert text.startswith("## Security scan ❌ failed")
    assert "### Why the gate failed" in text
    assert "### Blocking findings (2)" in text
    assert "### Allowlisted (1)" in text
    assert "| npm-audit | no | ⛔ unavailable (405 from the audit endpoint) |" in text
    assert "### Images" not in text


def test_summary_lists_the_images_and_their_recorded_result() -> None:
    runs, verdict = scenario()
    images = {
        "api": {"passed": False, "blocking": 1, "findings": {"critical": 1}, "sbom": "i.cdx.json"},
        "web": {"passed": True, "blocking": 0, "findings": {}, "sbom": "w.cdx.json"},
    }
    text = report.summary_markdown(runs, verdict, images=images)
    assert "| api | ❌ failed | 1 | 1 | 0 | 0 | 0 | 0 | i.cdx.json |" in text
    assert "| web | ✅ passed | 0 | 0 | 0 | 0 | 0 | 0 | w.cdx.json |" in text


def test_summary_shrinks_to_fit_its_limit() -> None:
    many = [Finding("bandit", f"B{i}", "high", f"f.py:{i}", "x" * 300) for i in range(500)]
    runs = [ScannerRun.completed("bandit", many)]
    rules = parse({}, Path("/p"), "pyproject.toml", REGISTRY)
    verdict = evaluate(runs, rules, "pr", TODAY)
    text = report.bounded_summary(runs, verdict, 20_000)
    assert len(text.encode()) <= 20_000
    assert "more in findings.json" in text


def test_step_summary_is_appended_and_kept_under_one_mebibyte(tmp_path: Path) -> None:
    target = tmp_path / "summary"
    target.write_text("earlier step\n", encoding="utf-8")
    assert report.append_step_summary("## ours\n", {"GITHUB_STEP_SUMMARY": str(target)}) == target
    assert target.read_text(encoding="utf-8") == "earlier step\n## ours\n"
    huge = "x" * (2 * report.STEP_SUMMARY_LIMIT)
    report.append_step_summary(huge, {"GITHUB_STEP_SUMMARY": str(target)})
    assert target.stat().st_size < report.STEP_SUMMARY_LIMIT
    assert target.read_text(encoding="utf-8").endswith("see reports/scan/summary.md\n")
    assert report.append_step_summary("x", {}) is None


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f'GITHUB_TOKEN = "{TOKEN}"', 'GITHUB_TOKEN = "ghp_…[REDACTED]"'),
        ("Possible hardcoded password: 'correct-horse'", "hardcoded password: 'corr…[REDACTED]'"),
        ("api_key=abcdef123456", "api_key=abcd…[REDACTED]"),
        ("AKIAIOSFODNN7EXAMPLE in env", "AKIA…[REDACTED] in env"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----", "…[REDACTED]"),
        ('GitHub Personal Access Token: GITHUB_TOKEN = "*****"', 'GITHUB_TOKEN = "*****"'),
        ("does not set persist-credentials: false", "persist-credentials: false"),
        ("token: ${{ secrets.GITHUB_TOKEN }}", "${{ secrets.GITHUB_TOKEN }}"),
    ],
)
def test_redact(text: str, kept: str) -> None:
    assert kept in redact(text)
    assert "correct-horse" not in redact(text)
    assert "MIIB" not in redact(text)
