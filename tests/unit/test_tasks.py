"""tasks.py: the invoke tasks exist, are documented, and hand their options to the library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from invoke.context import MockContext
from invoke.exceptions import Exit
from invoke.parser.context import ParserContext
from invoke.parser.parser import Parser

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import tasks  # noqa: E402

PRODUCT_TASKS = {
    "deploy",
    "rollback",
    "recover",
    "status",
    "history",
    "unlock",
    "promote",
    "approve",
    "report",
    "ci-plan",
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


def test_options_only_the_cli_had_before_reach_it(calls: list[list[str]]) -> None:
    c = MockContext()
    tasks.deploy(c, env="staging", lock_wait="2.5", message="hotfix for #12")
    tasks.promote(c, lock_wait="30")
    tasks.approve(c, env="production", release="3f2a9c1d0b7e", note="ops")
    tasks.history(c, env="staging", limit="5")
    tasks.report(c, env="staging", output="out/report", ledger="history.json")
    assert calls == [
        ["deploy", "--env", "staging", "--lock-wait", "2.5", "--message", "hotfix for #12"],
        ["promote", "--from", "staging", "--to", "production", "--lock-wait", "30"],
        ["approve", "--env", "production", "--release", "3f2a9c1d0b7e", "--note", "ops"],
        ["history", "--env", "staging", "--limit", "5"],
        ["report", "--env", "staging", "--output", "out/report", "--ledger", "history.json"],
    ]


def test_invoke_takes_a_fractional_lock_wait() -> None:
    # With a default of 0, invoke parsed --lock-wait as an int and crashed on 2.5; now it hands
    # the text on and the CLI parses it as the float it declares.
    context = ParserContext(name="deploy", args=tasks.deploy.get_arguments())
    parsed = Parser(contexts=[context]).parse_argv(["deploy", "--env", "qa", "--lock-wait", "2.5"])
    assert parsed[0].args["lock-wait"].value == "2.5"


def test_ci_plan_goes_through_the_cli_edge(calls: list[list[str]]) -> None:
    c = MockContext()
    tasks.ci_plan(c)
    tasks.ci_plan(c, event="pull_request", ref="refs/heads/release", changed=["README.md", "a.py"])
    assert calls == [
        ["ci-plan", "--workflows", str(tasks.WORKFLOWS)],
        [
            "ci-plan",
            *("--event", "pull_request", "--ref", "refs/heads/release"),
            *("--changed", "README.md", "--changed", "a.py"),
            *("--workflows", str(tasks.WORKFLOWS)),
        ],
    ]


def test_ci_plan_prints_the_plan_and_turns_a_typo_into_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tasks.ci_plan(MockContext())
    assert capsys.readouterr().out.startswith("CI plan for push to refs/heads/main, from ")
    with pytest.raises(Exit) as info:
        tasks.ci_plan(MockContext(), event="psuh")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("conveyor: unknown event 'psuh'")
    assert "(did you mean 'push'?)" in err
