"""Test ports: two test processes on one machine never get the same port, even one that is
free at the time (an environment's idle color is bound only during a deploy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testkit import sandbox

ROOT = Path(__file__).resolve().parents[2]
RANGES = 500


def test_a_range_held_by_another_live_process_is_never_handed_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "PORT_HOLDS", tmp_path / "conveyor-test-ports.json")
    other = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import json, sys; from testkit import sandbox; "
            f"print(json.dumps([sandbox.allocate_ports(7) for _ in range({RANGES})]), flush=True); "
            "sys.stdin.read()",
        ],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None
        theirs = {p for ports in json.loads(other.stdout.readline()) for p in ports}
        # A fifth of the slots are theirs: without the holds, about a hundred would collide.
        mine = {p for _ in range(RANGES) for p in sandbox.allocate_ports(7)}
    finally:
        other.communicate("")
    assert len(theirs) == len(mine) == RANGES * 7
    assert theirs.isdisjoint(mine)
    assert all(10000 <= p < sandbox.ephemeral_start() for p in theirs | mine)


def test_the_holds_of_a_process_that_ended_are_free_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holds = tmp_path / "conveyor-test-ports.json"
    monkeypatch.setattr(sandbox, "PORT_HOLDS", holds)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holds.write_text(json.dumps({str(dead.pid): list(range(10000, 40000))}))
    ports = sandbox.allocate_ports(7)
    assert json.loads(holds.read_text()) == {str(os.getpid()): ports}
