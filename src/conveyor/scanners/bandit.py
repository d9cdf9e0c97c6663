"""bandit: Python source security lint, configured from the project's ``[tool.bandit]``."""

from __future__ import annotations

import json
import tomllib
from typing import Any

from conveyor.errors import ToolTimeout
from conveyor.scanners.base import (
    ScanContext,
    ScannerSpec,
    execute,
    find_tool,
    missing,
)
from conveyor.scanners.model import Finding, ScannerRun, normalize_severity
from conveyor.scanners.redact import redact

NAME = "bandit"


def _has_bandit_table(ctx: ScanContext) -> bool:
    try:
        with (ctx.root / "pyproject.toml").open("rb") as handle:
            return "bandit" in tomllib.load(handle).get("tool", {})
    except (OSError, tomllib.TOMLDecodeError):
        return False


def parse(data: dict[str, Any], ctx: ScanContext) -> list[Finding]:
    findings = []
    for item in data.get("results") or []:
        path = ctx.relative(item["filename"])
        line = int(item.get("line_number") or 0) or None
        test = str(item.get("test_name", "")).replace("_", " ")
        confidence = str(item.get("issue_confidence", "")).lower()
        findings.append(
            Finding(
                scanner=NAME,
                rule=str(item["test_id"]),
                severity=normalize_severity(item.get("issue_severity"), unknown="low"),
                location=f"{path}:{line}" if line else path,
                message=redact(f"{item.get('issue_text', '')} (confidence {confidence})"),
                fix=f"{test}: see {item.get('more_info', 'the bandit docs')}",
                path=path,
                line=line,
                help_uri=str(item.get("more_info", "")),
                title=test,
            )
        )
    return findings


def run(ctx: ScanContext) -> ScannerRun:
    bandit = find_tool("bandit")
    if bandit is None:
        return missing(NAME, "bandit")
    paths = [p for p in ctx.option("paths") if (ctx.root / p).exists()]
    absent = sorted(set(ctx.option("paths")) - set(paths))
    if not paths:
        return ScannerRun.error(
            NAME, f"none of the configured paths exist: {', '.join(ctx.option('paths'))}"
        )
    argv = [bandit, "-r", *paths, "-f", "json", "-q"]
    if _has_bandit_table(ctx):
        argv += ["-c", "pyproject.toml"]
    if ctx.exclude:
        argv += ["-x", ",".join(ctx.exclude)]
    try:
        result = execute(argv, cwd=ctx.root, timeout=ctx.timeout)
    except ToolTimeout as exc:
        return ScannerRun.error(NAME, str(exc))
    if result.returncode not in (0, 1):
        return ScannerRun.error(NAME, f"exit {result.returncode}: {result.tail()}")
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        return ScannerRun.error(NAME, f"unreadable output: {result.tail()}")
    errors = data.get("errors") or []
    if errors:
        first = errors[0]
        where = ctx.relative(first.get("filename", "?"))
        return ScannerRun.error(
            NAME,
            f"could not scan {len(errors)} file(s), e.g. {where}: "
            f"{first.get('reason', 'unknown reason')}",
        )
    notes = [f"configured path(s) missing: {', '.join(absent)}"] if absent else []
    return ScannerRun.completed(NAME, parse(data, ctx), notes=notes)


SPEC = ScannerSpec(
    name=NAME,
    description="Python source security lint (bandit, [tool.bandit] from pyproject.toml)",
    run=run,
    options={"paths": ["src", "backend"]},
)
