"""The soak benchmark's 10-cycle variant, as a test: deploy + rollback under load, ten times."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ten_deploy_and_rollback_cycles_lose_nothing_and_leave_nothing(tmp_path: Path) -> None:
    out = tmp_path / "soak"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "soak", "--cycles", "10", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        },
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads((out / "soak.json").read_text())
    assert data["load"]["requests"] > 500, data["load"]
    assert data["load"]["failures"] == 0, data["load"]
    assert data["leftovers_seen_after_cycles"] == 0
    assert data["engine_after_cleanup"] == {"containers": 0, "service_containers": 0, "volumes": 0}
    ledger = data["ledger"]
    assert ledger["records"] == 1 + 2 * 10
    assert ledger["unreadable"] == [] and ledger["forged"] == []
    assert ledger["outcomes"] == ["succeeded"]
    # Kept containers stay bounded by keep_releases, however many cycles ran.
    assert data["engine_before_cleanup"]["service_containers"] <= 2 * (3 + 2)
    assert "Soak: 10 deploy + rollback cycles" in result.stdout
