"""tasks.py: the invoke tasks exist, are documented, and hand their options to the library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from invoke.context import MockContext
from invoke.exceptions import Exit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import tasks  # noqa: E402

PRODUCT_TASKS = {
    "deploy",
    "rollback",
    "status",
    "history",
    "unlock",
    "promote",
    "approve",
    "report",
}


def test_invoke_lists_every_product_task_with_a_docstring() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "--list", "--list-format=json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    listed = {t["name"]: t["help"] for t in json.loads(result.stdout)["tasks"]}
    assert set(listed) >= PRODUCT_TASKS
    assert all(listed[name] for name in PRODUCT_TASKS), listed


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 0

    monkeypatch.setattr(tasks.cli, "main", fake_main)
    return seen


def test_options_reach_the_library_unchanged(calls: list[list[str]]) -> None:
    c = MockContext()
    tasks.deploy(c, env="staging", version="1.2.0", dry_run=True)
    tasks.rollback(c, env="staging", to="r0003")
    tasks.status(c, env="staging", json=True)
    tasks.promote(c, dry_run=True)
    assert calls == [
        ["deploy", "--env", "staging", "--version", "1.2.0", "--dry-run"],
        ["rollback", "--env", "staging", "--to", "r0003"],
        ["status", "--env", "staging", "--json"],
        ["promote", "--from", "staging", "--to", "production", "--dry-run"],
    ]


def test_a_library_failure_becomes_a_non_zero_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks.cli, "main", lambda argv: 3)
    with pytest.raises(Exit) as info:
        tasks.report(MockContext(), env="staging")
    assert info.value.code == 3
