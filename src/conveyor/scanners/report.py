"""The three reports of a scan and its console table.

- ``results.sarif``: SARIF 2.1.0, one run per scanner (never more than GitHub's 20), each with
  its own ``automationDetails.id`` so code scanning keeps them apart; a scanner that did not run
  is an unsuccessful invocation with the reason, allowlisted findings carry a suppression.
- ``findings.json``: the verdict, every scanner's status and every finding in the one model.
- ``summary.md``: for people, appended to ``$GITHUB_STEP_SUMMARY`` when set, under 1 MiB.

Every string goes through :func:`conveyor.scanners.redact.redact` on the way out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from conveyor.scanners.gate import Decision, Verdict
from conveyor.scanners.model import SEVERITIES, Finding, ScannerRun, Status
from conveyor.scanners.redact import redact

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
MAX_SARIF_RUNS = 20  # GitHub code scanning rejects more runs per file
STEP_SUMMARY_LIMIT = 1024 * 1024  # GitHub's limit for one step's summary
SUMMARY_ROWS = 200
SRCROOT = "%SRCROOT%"
# GitHub reads security-severity as CVSS-like: >=9 critical, >=7 high, >=4 medium, else low.
SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "3.0", "info": "0.0"}
LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
TOOL_URIS = {
    "bandit": "https://bandit.readthedocs.io/",
    "pip-audit": "https://pypi.org/project/pip-audit/",
    "trivy-fs": "https://trivy.dev/",
    "trivy-vuln": "https://trivy.dev/",
    "trivy-image": "https://trivy.dev/",
    "zizmor": "https://docs.zizmor.sh/",
    "workflow-schema": "https://check-jsonschema.readthedocs.io/",
    "actionlint": "https://github.com/rhysd/actionlint",
    "npm-audit": "https://docs.npmjs.com/cli/commands/npm-audit",
}


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _location(finding: Finding) -> dict[str, Any]:
    if finding.path:
        physical: dict[str, Any] = {
            "artifactLocation": {"uri": quote(finding.path), "uriBaseId": SRCROOT}
        }
        if finding.line and finding.line > 0:
            physical["region"] = {"startLine": finding.line}
        return {"physicalLocation": physical}
    return {"logicalLocations": [{"fullyQualifiedName": redact(finding.location)}]}


def _sarif_run(run: ScannerRun, decisions: Sequence[Decision]) -> dict[str, Any]:
    rules: dict[str, dict[str, Any]] = {}
    results = []
    for decision in decisions:
        finding = decision.finding
        if finding.rule not in rules:
            rule: dict[str, Any] = {
                "id": finding.rule,
                "shortDescription": {"text": redact(finding.title or finding.rule)},
                "defaultConfiguration": {"level": LEVEL[finding.severity]},
                "properties": {
                    "security-severity": SECURITY_SEVERITY[finding.severity],
                    "tags": ["security"],
                },
            }
            if finding.help_uri.startswith(("http://", "https://")):
                rule["helpUri"] = finding.help_uri
            rules[finding.rule] = rule
        result: dict[str, Any] = {
            "ruleId": finding.rule,
            "ruleIndex": list(rules).index(finding.rule),
            "level": LEVEL[finding.severity],
            "message": {"text": redact(finding.message or finding.title or finding.rule)},
            "locations": [_location(finding)],
            "partialFingerprints": {"conveyorFinding/v1": finding.fingerprint},
            "properties": {
                "severity": finding.severity,
                "location": redact(finding.location),
                "fix": redact(finding.fix),
                "blocking": decision.blocking,
            },
        }
        if finding.component:
            result["properties"]["component"] = finding.component
        if decision.allowed_by is not None:
            result["suppressions"] = [
                {
                    "kind": "external",
                    "status": "accepted",
                    "justification": redact(
                        f"{decision.allowed_by.reason} (allowlisted until "
                        f"{decision.allowed_by.expires.isoformat()})"
                    ),
                }
            ]
        results.append(result)
    driver: dict[str, Any] = {
        "name": run.scanner,
        "informationUri": TOOL_URIS.get(run.scanner, "https://github.com/conveyor-ci/conveyor"),
        "rules": list(rules.values()),
    }
    if run.version:
        driver["version"] = run.version
    invocation: dict[str, Any] = {"executionSuccessful": run.ran}
    notes = [*(redact(w) for w in run.warnings)]
    if not run.ran:
        notes.insert(0, redact(run.label))
    if notes:
        invocation["toolExecutionNotifications"] = [
            {"level": "error" if not run.ran and i == 0 else "warning", "message": {"text": n}}
            for i, n in enumerate(notes)
        ]
    return {
        "tool": {"driver": driver},
        "automationDetails": {"id": f"conveyor/{run.scanner}/"},
        "invocations": [invocation],
        "results": results,
        "properties": {
            "status": run.status.value,
            "reason": redact(run.reason),
            "required": run.required,
        },
    }


def sarif(runs: Sequence[ScannerRun], verdict: Verdict) -> dict[str, Any]:
    if len(runs) > MAX_SARIF_RUNS:
        raise ValueError(f"{len(runs)} SARIF runs: GitHub accepts at most {MAX_SARIF_RUNS}")
    by_scanner: dict[str, list[Decision]] = {}
    for decision in verdict.decisions:
        by_scanner.setdefault(decision.finding.scanner, []).append(decision)
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [_sarif_run(run, by_scanner.get(run.scanner, [])) for run in runs],
    }


def findings_document(
    runs: Sequence[ScannerRun],
    verdict: Verdict,
    *,
    project: str,
    images: dict[str, Any] | None = None,
) -> dict[str, Any]:
    findings = []
    for decision in verdict.decisions:
        data = {
            k: redact(v) if isinstance(v, str) else v for k, v in decision.finding.as_dict().items()
        }
        data["blocking"] = decision.blocking
        allowed = decision.allowed_by
        data["allowlisted"] = (
            None
            if allowed is None
            else {
                "id": allowed.id,
                "reason": allowed.reason,
                "expires": allowed.expires.isoformat(),
            }
        )
        findings.append(data)
    return {
        "schema": 1,
        "generated_at": _utc_now(),
        "project": project,
        "context": verdict.context,
        "fail_on": verdict.fail_on,
        "passed": verdict.passed,
        "failures": [redact(f) for f in verdict.failures],
        "warnings": [redact(w) for w in verdict.warnings],
        "scanners": [
            {
                "name": run.scanner,
                "status": run.status.value,
                "reason": redact(run.reason),
                "label": redact(run.label),
                "required": run.required,
                "tool": run.tool,
                "version": run.version,
                "duration": round(run.duration, 2),
                "counts": run.counts(),
                "notes": [redact(n) for n in run.notes],
                "warnings": [redact(w) for w in run.warnings],
            }
            for run in runs
        ],
        "findings": findings,
        "images": images or {},
    }


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(redact(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def _status_cell(run: ScannerRun) -> str:
    icon = {Status.OK: "✅", Status.FINDINGS: "⚠️", Status.UNAVAILABLE: "⛔", Status.ERROR: "💥"}
    return f"{icon[run.status]} {_cell(run.label, 120)}"


def summary_markdown(
    runs: Sequence[ScannerRun],
    verdict: Verdict,
    *,
    max_rows: int = SUMMARY_ROWS,
    images: dict[str, Any] | None = None,
) -> str:
    """summary.md: the verdict, one row per scanner, the images, why it failed, the warnings,
    the findings (blocking, allowlisted, below the threshold) and the scanners' notes."""
    others = [d for d in verdict.decisions if not d.blocking and d.allowed_by is None]
    lines = [
        *_summary_head(runs, verdict),
        *_images_table(images or {}),
        *_bullets("Why the gate failed", verdict.failures),
        *_bullets("Warnings", verdict.warnings),
        *_findings_table("Blocking findings", verdict.blocking, "fix", max_rows),
        *_findings_table("Allowlisted", verdict.allowed, "why", max_rows),
        *_findings_table(f"Below {verdict.fail_on}", others, "fix", max_rows),
        *_scanner_notes(runs),
    ]
    return "\n".join(lines) + "\n"


def _summary_head(runs: Sequence[ScannerRun], verdict: Verdict) -> list[str]:
    head = "✅ passed" if verdict.passed else "❌ failed"
    lines = [
        f"## Security scan {head}",
        "",
        f"Context **{verdict.context}**; the gate fails on **{verdict.fail_on}** or above.",
        "",
        "| scanner | required | status | " + " | ".join(SEVERITIES) + " | time |",
        "|---|---|---|" + "---:|" * len(SEVERITIES) + "---:|",
    ]
    for run in runs:
        counts = run.counts()
        lines.append(
            f"| {run.scanner} | {'yes' if run.required else 'no'} | {_status_cell(run)} | "
            + " | ".join(str(counts[s]) for s in SEVERITIES)
            + f" | {run.duration:.1f} s |"
        )
    return lines


def _images_table(images: dict[str, Any]) -> list[str]:
    if not images:
        return []
    lines = [
        "",
        "### Images (recorded in the release manifest)",
        "",
        "| image | scan | blocking | " + " | ".join(SEVERITIES) + " | SBOM |",
        "|---|---|---:|" + "---:|" * len(SEVERITIES) + "---|",
    ]
    for name, entry in sorted(images.items()):
        found = entry.get("findings", {})
        lines.append(
            f"| {name} | {'✅ passed' if entry.get('passed') else '❌ failed'} | "
            f"{entry.get('blocking', 0)} | "
            + " | ".join(str(found.get(s, 0)) for s in SEVERITIES)
            + f" | {_cell(str(entry.get('sbom', '—')), 80)} |"
        )
    return lines


def _bullets(title: str, items: Sequence[str]) -> list[str]:
    if not items:
        return []
    return ["", f"### {title}", "", *(f"- {_cell(item, 400)}" for item in items)]


def _findings_table(
    title: str, decisions: Sequence[Decision], extra: str, max_rows: int
) -> list[str]:
    """A table of findings; ``extra`` names the last column (the fix, or the allowlist's why)."""
    if not decisions:
        return []
    out = [
        "",
        f"### {title} ({len(decisions)})",
        "",
        f"| severity | scanner | rule | location | message | {extra} |",
        "|---|---|---|---|---|---|",
    ]
    for decision in decisions[:max_rows]:
        f = decision.finding
        last = (
            f"{decision.allowed_by.reason} (until {decision.allowed_by.expires})"
            if decision.allowed_by is not None
            else f.fix
        )
        out.append(
            f"| {f.severity} | {f.scanner} | {_cell(f.rule, 60)} | {_cell(f.location, 80)} | "
            f"{_cell(f.message)} | {_cell(last, 100)} |"
        )
    if len(decisions) > max_rows:
        out.append(f"\n…and {len(decisions) - max_rows} more in findings.json.")
    return out


def _scanner_notes(runs: Sequence[ScannerRun]) -> list[str]:
    notes = [(run.scanner, note) for run in runs for note in run.notes]
    if not notes:
        return []
    return [
        "",
        "<details><summary>Scanner notes</summary>",
        "",
        *(f"- **{name}**: {_cell(note, 300)}" for name, note in notes),
        "",
        "</details>",
    ]


def bounded_summary(
    runs: Sequence[ScannerRun],
    verdict: Verdict,
    limit: int,
    *,
    images: dict[str, Any] | None = None,
) -> str:
    """The summary, with fewer table rows until it fits in ``limit`` bytes."""
    rows = SUMMARY_ROWS
    text = summary_markdown(runs, verdict, max_rows=rows, images=images)
    while len(text.encode()) > limit and rows > 0:
        rows //= 2
        text = summary_markdown(runs, verdict, max_rows=rows, images=images)
    if len(text.encode()) > limit:
        text = text.encode()[: max(0, limit - 64)].decode(errors="ignore")
        text += "\n\n…truncated: see findings.json\n"
    return text


def append_step_summary(text: str, environ: dict[str, str] | None = None) -> Path | None:
    """Append to ``$GITHUB_STEP_SUMMARY`` without taking it past GitHub's 1 MiB."""
    from conveyor import github  # noqa: PLC0415

    return github.append_summary(text, environ, where_else="reports/scan/summary.md")


def console_table(runs: Sequence[ScannerRun], verdict: Verdict) -> list[str]:
    """Plain aligned lines: one per scanner, then the verdict and its reasons."""
    rows: list[tuple[str, ...]] = [
        ("scanner", "req", "status", "crit", "high", "med", "low", "info", "time")
    ]
    for run in runs:
        counts = run.counts()
        rows.append(
            (
                run.scanner,
                "yes" if run.required else "no",
                redact(run.label)[:70],
                *(str(counts[s]) for s in SEVERITIES),
                f"{run.duration:.1f}s",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    for decision in verdict.blocking[:20]:
        f = decision.finding
        lines.append(
            f"  ✗ {f.severity:<8} {f.scanner}: {f.rule} at {redact(f.location)} — "
            f"{_cell(f.message, 100)}"
        )
    if len(verdict.blocking) > 20:
        lines.append(f"  … {len(verdict.blocking) - 20} more blocking findings in findings.json")
    for warning in verdict.warnings:
        lines.append(f"  ! {redact(warning)}")
    for failure in verdict.failures:
        lines.append(f"  ✗ {redact(failure)}")
    state = "PASSED" if verdict.passed else "FAILED"
    lines.append(f"Security gate {state} (context {verdict.context}, fail on {verdict.fail_on}+)")
    return lines


def write(
    folder: Path,
    runs: Sequence[ScannerRun],
    verdict: Verdict,
    *,
    project: str,
    images: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write results.sarif, findings.json and summary.md into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "sarif": folder / "results.sarif",
        "findings": folder / "findings.json",
        "summary": folder / "summary.md",
    }
    paths["sarif"].write_text(json.dumps(sarif(runs, verdict), indent=2) + "\n", encoding="utf-8")
    document = findings_document(runs, verdict, project=project, images=images)
    paths["findings"].write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    paths["summary"].write_text(
        bounded_summary(runs, verdict, STEP_SUMMARY_LIMIT - 1, images=images), encoding="utf-8"
    )
    return paths
