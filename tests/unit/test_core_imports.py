"""The core — records, naming, planning, the gate's checks, metrics — imports without Docker.

Each check runs in a fresh interpreter: a module imported earlier by another test would hide a
docker import in this process.
"""

from __future__ import annotations

import os
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


def run_fresh(check: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``check`` in a fresh interpreter (with ``env`` added to the environment)."""
    return subprocess.run(
        [sys.executable, "-c", check],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize("statement", CORE)
def test_the_core_imports_without_the_docker_sdk(statement: str) -> None:
    check = f"import sys\n{statement}\nassert 'docker' not in sys.modules, sorted(sys.modules)"
    result = run_fresh(check)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_engine_side_still_needs_docker() -> None:
    """The check above would pass vacuously if nothing ever imported docker."""
    check = "import sys\nimport conveyor.session\nassert 'docker' in sys.modules"
    result = run_fresh(check)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_command_pays_for_paramiko_only_when_an_engine_is_ssh() -> None:
    """paramiko is most of a command's start; local and unix engines never load it."""
    check = (
        "import sys\nimport conveyor.operations, conveyor.engine\n"
        "assert 'paramiko' not in sys.modules\n"
        "from conveyor.errors import EngineUnavailable\n"
        "try:\n    conveyor.engine.connect('unix:///nonexistent.sock', timeout=2)\n"
        "except EngineUnavailable:\n    pass\n"
        "assert 'paramiko' not in sys.modules"
    )
    result = run_fresh(check)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("through", ["endpoint", "DOCKER_HOST"])
def test_an_ssh_engine_gets_the_transport_that_was_held_back(through: str) -> None:
    """An ssh:// endpoint (or DOCKER_HOST) is tried over ssh, not refused as 'install paramiko':
    nothing listens on port 1, so the line says the engine cannot be reached."""
    url = "ssh://nobody@127.0.0.1:1"
    endpoint = repr(url) if through == "endpoint" else "None"
    check = (
        "import sys\nfrom conveyor import engine\nfrom conveyor.errors import EngineUnavailable\n"
        f"try:\n    engine.connect({endpoint}, timeout=5)\n"
        "except EngineUnavailable as exc:\n    print(exc)\n"
        "assert 'paramiko' in sys.modules"
    )
    result = run_fresh(check, **({"DOCKER_HOST": url} if through == "DOCKER_HOST" else {}))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("cannot reach the Docker engine at ssh://"), result.stdout
    assert "paramiko" not in result.stdout and "port 1 on 127.0.0.1" in result.stdout
