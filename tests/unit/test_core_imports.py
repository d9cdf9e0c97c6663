"""The core — records, naming, planning, the gate's checks, metrics — imports without Docker.

Each check runs in a fresh interpreter: a module imported earlier by another test would hide a
docker import in this process.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

CORE = [
    "from conveyor.terms import Color, Phase, RecordKind, RecordOutcome, Role",
    "from conveyor.ledger import ReleaseRecord, current_live, lineage, previous_live",
    "from conveyor.containers import ServiceContainer, container_fingerprint, "
    "service_container_name",
    "from conveyor.lockinfo import LockInfo",
    "from conveyor.observe import EnvironmentState, HostState",
    "from conveyor.plan import DeployPlan, plan_move",
    "from conveyor.releases import Release, release_from_record, release_key",
    "from conveyor.admission import check_release, promotable",
    "from conveyor.metrics import compute",
    "from conveyor.report import render",
]


@pytest.mark.parametrize("statement", CORE)
def test_the_core_imports_without_the_docker_sdk(statement: str) -> None:
    check = f"import sys\n{statement}\nassert 'docker' not in sys.modules, sorted(sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_engine_side_still_needs_docker() -> None:
    """The check above would pass vacuously if nothing ever imported docker."""
    check = "import sys\nimport conveyor.session\nassert 'docker' in sys.modules"
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
