"""conveyor's edges: a closed pipe is not a traceback; `unlock --force` reaches the library."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from invoke.context import MockContext

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import tasks  # noqa: E402


def run_into_a_closed_pipe(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Like `… | head -0`: the reader is gone before the first line is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            argv,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)


def test_a_reader_that_went_away_ends_conveyor_quietly() -> None:
    result = run_into_a_closed_pipe(
        [sys.executable, "-m", "conveyor", "--config", str(ROOT / "deploy.toml"), "config-check"]
    )
    assert result.stderr == ""
    assert result.returncode == 141  # what a shell reports for SIGPIPE


def test_unlock_force_reaches_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(tasks.cli, "main", lambda argv: seen.append(argv) or 0)
    tasks.unlock(MockContext(), env="qa")
    tasks.unlock(MockContext(), env="qa", force=True)
    assert seen == [["unlock", "--env", "qa"], ["unlock", "--env", "qa", "--force"]]


def test_an_engine_that_stops_answering_mid_command_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A daemon killed (or a host lost) under a command: which engine, and what to run."""
    import requests

    from conveyor import cli, operations

    dead = tmp_path / "gone.sock"
    monkeypatch.setenv("CONVEYOR_STAGING_DOCKER_HOST", f"unix://{dead}")

    def lost(*_args: object, **_kwargs: object) -> None:
        raise requests.exceptions.ConnectionError("('Connection aborted.', FileNotFoundError)")

    monkeypatch.setattr(operations, "show_status", lost)
    code = cli.main(["--config", str(ROOT / "deploy.toml"), "status", "--env", "staging"])
    line = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in line and "Traceback" not in line
    assert f"unix://{dead}" in line and "stopped answering" in line, line
    assert line.endswith("run: invoke recover --env staging"), line
