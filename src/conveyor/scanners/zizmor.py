"""zizmor: security audit of GitHub workflows (template injection, dangerous triggers, …).

Always ``--offline``: no GitHub API calls, so no token is needed and nothing leaves the machine.
No workflows yet is ``ok`` with a note, not an error.
"""

from __future__ import annotations

import json
from typing import Any

from conveyor.errors import ToolTimeout
from conveyor.scanners.base import (
    NO_WORKFLOWS,
    ScanContext,
    ScannerSpec,
    execute,
    find_tool,
    missing,
    workflow_files,
)
from conveyor.scanners.model import Finding, ScannerRun, normalize_severity
from conveyor.scanners.redact import redact

NAME = "zizmor"
# zizmor exits 0 when clean, 10-14 with findings of rising severity, anything else on failure.
FINDINGS_EXIT = range(10, 15)


def _primary(locations: list[dict[str, Any]]) -> dict[str, Any]:
    for location in locations:
        if (location.get("symbolic") or {}).get("kind") == "Primary":
            return location
    return locations[0] if locations else {}


def parse(data: list[dict[str, Any]], ctx: ScanContext) -> list[Finding]:
    findings = []
    for item in data:
        if item.get("ignored"):
            continue  # suppressed by a zizmor ignore comment or config, like bandit's nosec
        location = _primary(item.get("locations") or [])
        symbolic = location.get("symbolic") or {}
        key = (symbolic.get("key") or {}).get("Local") or {}
        path = ctx.relative(str(key.get("verbatim_path") or key.get("given_path") or "?"))
        start = ((location.get("concrete") or {}).get("location") or {}).get("start_point") or {}
        line = int(start["row"]) + 1 if "row" in start else None
        determinations = item.get("determinations") or {}
        fixes = item.get("fixes") or []
        findings.append(
            Finding(
                scanner=NAME,
                rule=str(item.get("ident")),
                severity=normalize_severity(determinations.get("severity")),
                location=f"{path}:{line}" if line else path,
                message=redact(
                    f"{item.get('desc', '')}: {symbolic.get('annotation', '')} "
                    f"(confidence {str(determinations.get('confidence', '?')).lower()})"
                ),
                fix=str(fixes[0].get("title"))
                if fixes
                else f"see {item.get('url', 'zizmor docs')}",
                path=path,
                line=line,
                help_uri=str(item.get("url", "")),
                title=str(item.get("desc", "")),
            )
        )
    return findings


def run(ctx: ScanContext) -> ScannerRun:
    files = workflow_files(ctx)
    if not files:
        return ScannerRun.completed(NAME, [], notes=[NO_WORKFLOWS])
    zizmor = find_tool("zizmor")
    if zizmor is None:
        return missing(NAME, "zizmor")
    argv = [
        zizmor, "--offline", "--format", "json", "--persona", ctx.option("persona"),
        *(ctx.relative(f) for f in files),
    ]  # fmt: skip
    try:
        result = execute(argv, cwd=ctx.root, timeout=ctx.timeout)
    except ToolTimeout as exc:
        return ScannerRun.error(NAME, str(exc))
    if result.returncode != 0 and result.returncode not in FINDINGS_EXIT:
        return ScannerRun.error(NAME, f"exit {result.returncode}: {result.tail(2)}")
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        return ScannerRun.error(NAME, f"unreadable output: {result.tail()}")
    if not isinstance(data, list):
        return ScannerRun.error(NAME, "unexpected output: not a list of findings")
    return ScannerRun.completed(
        NAME, parse(data, ctx), notes=[f"{len(files)} workflow(s) audited offline"]
    )


SPEC = ScannerSpec(
    name=NAME,
    description="GitHub workflow security audit (zizmor --offline)",
    run=run,
    options={"persona": "regular"},
    choices={"persona": ("regular", "pedantic", "auditor")},
)
