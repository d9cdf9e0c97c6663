"""check-jsonschema: every GitHub workflow validates against the workflow schema.

The schema is the one vendored inside check-jsonschema (``vendor.github-workflows``), so this
works offline. A schema violation is ``medium`` (GitHub would reject or misread the workflow);
a file that is not even YAML is ``high``.
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
from conveyor.scanners.model import Finding, ScannerRun

NAME = "workflow-schema"
SCHEMA = "vendor.github-workflows"
HELP = "https://json.schemastore.org/github-workflow.json"


def parse(data: dict[str, Any], ctx: ScanContext) -> list[Finding]:
    findings = []
    for error in data.get("errors") or []:
        path = ctx.relative(str(error.get("filename", "?")))
        json_path = str(error.get("path", "$"))
        best = error.get("best_deep_match") or error.get("best_match") or {}
        message = best.get("message") or error.get("message", "does not match the schema")
        findings.append(
            Finding(
                scanner=NAME,
                rule="schema",
                severity="medium",
                location=f"{path} {best.get('path') or json_path}",
                message=str(message)[:500],
                fix="fix the workflow so it matches GitHub's workflow syntax",
                path=path,
                help_uri=HELP,
                title="workflow does not match the GitHub workflow schema",
            )
        )
    for error in data.get("parse_errors") or []:
        path = ctx.relative(str(error.get("filename", "?")))
        findings.append(
            Finding(
                scanner=NAME,
                rule="parse",
                severity="high",
                location=path,
                message=str(error.get("message", "not valid YAML"))[:500],
                fix="fix the YAML syntax",
                path=path,
                help_uri=HELP,
                title="workflow is not valid YAML",
            )
        )
    return findings


def run(ctx: ScanContext) -> ScannerRun:
    files = workflow_files(ctx)
    if not files:
        return ScannerRun.completed(NAME, [], notes=[NO_WORKFLOWS])
    check = find_tool("check-jsonschema")
    if check is None:
        return missing(NAME, "check-jsonschema")
    argv = [check, "--builtin-schema", SCHEMA, "-o", "json", *(ctx.relative(f) for f in files)]
    try:
        result = execute(argv, cwd=ctx.root, timeout=ctx.timeout)
    except ToolTimeout as exc:
        return ScannerRun.error(NAME, str(exc))
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        return ScannerRun.error(NAME, f"exit {result.returncode}: {result.tail()}")
    if result.returncode not in (0, 1) or not isinstance(data, dict):
        return ScannerRun.error(NAME, f"exit {result.returncode}: {result.tail()}")
    return ScannerRun.completed(
        NAME, parse(data, ctx), notes=[f"{len(files)} workflow(s) checked against {SCHEMA}"]
    )


SPEC = ScannerSpec(
    name=NAME,
    description="GitHub workflows validate against the workflow JSON schema (check-jsonschema)",
    run=run,
)
