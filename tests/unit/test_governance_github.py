"""GitHub reporting: annotations, step summaries, and deployment statuses sent to a local
server standing in for the REST API."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from conveyor import github, notify
from conveyor.config import Config
from conveyor.console import Console
from conveyor.ledger import ReleaseRecord

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_governance_fakes import recording_server

TOKEN = "ghs_" + "T" * 36


def record(**changes: object) -> ReleaseRecord:
    base = ReleaseRecord(
        id="r0003",
        environment="production",
        kind="promote",
        version="2.0.0",
        commit="c" * 40,
        services={"api": {"image_id": "sha256:" + "a" * 64}},
        who="bob",
        started=100.0,
        ended=112.0,
        phases={"start": 1.5, "ready": 4.25},
        approval={"approver": "alice", "method": "ledger"},
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def actions_env(api: str, summary: Path) -> dict[str, str]:
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_API_URL": api,
        "GITHUB_REPOSITORY": "acme/shop",
        "GITHUB_RUN_ID": "77",
        "GITHUB_SHA": "d" * 40,
        "GITHUB_SERVER_URL": "https://github.example",
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_STEP_SUMMARY": str(summary),
    }


def test_annotations_escape_what_github_would_misread() -> None:
    line = github.annotation("error", "50% failed\nsee: logs", title="deploy: prod, 2.0")
    assert line == "::error title=deploy%3A prod%2C 2.0::50%25 failed%0Asee: logs"
    with pytest.raises(ValueError, match="unknown annotation level"):
        github.annotation("fatal", "x")


def test_annotate_prints_only_in_actions(capsys: pytest.CaptureFixture[str]) -> None:
    github.annotate("warning", "quiet", environ={})
    github.annotate("warning", "loud", environ={"GITHUB_ACTIONS": "true"})
    assert capsys.readouterr().out == "::warning::loud\n"


def test_the_step_summary_never_grows_past_one_mebibyte(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_bytes(b"x" * (github.SUMMARY_LIMIT - 1000))
    env = {"GITHUB_STEP_SUMMARY": str(summary)}
    assert github.append_summary("y" * 5000, env) == summary
    assert summary.stat().st_size < github.SUMMARY_LIMIT
    assert summary.read_text().endswith("truncated to fit GitHub's 1 MiB step summary\n")
    assert github.append_summary("z", {}) is None


def test_deploy_and_build_summaries_show_the_release() -> None:
    text = github.deploy_summary(
        record(outcome="failed", failed_phase="verify", reason="5xx | spike"),
        serving="1.9.0 (r0002) is still serving",
    )
    assert "### ❌ promote 2.0.0 → production: failed" in text
    assert "| failed in | verify: 5xx \\| spike |" in text
    assert f"| api | `sha256:{'a' * 64}` |" in text
    assert "| ready | 4.25 |" in text and "| approval | alice (ledger) |" in text
    build = github.build_summary(
        {
            "version": "2.0.0",
            "commit": "c" * 40,
            "dirty": True,
            "files": {"refapi.whl": {"size": 10, "sha256": "e" * 64}},
            "images": {"api": {"id": "sha256:" + "a" * 64}},
        }
    )
    assert "### 📦 build 2.0.0" in build and "(dirty tree)" in build
    assert f"| refapi.whl | 10 | `{'e' * 16}` |" in build


def test_a_deployment_and_its_statuses_reach_the_api(tmp_path: Path) -> None:
    out = io.StringIO()
    with recording_server() as api:
        reporter = github.DeploymentReporter(
            "production", Console(out), actions_env(api.url, tmp_path / "s.md")
        )
        reporter.started(record(ended=None), production=True)
        reporter.status("success", "2.0.0 is live (r0003)", environment_url="https://shop.example")
    create, progress, success = api.requests
    assert (create.method, create.path) == ("POST", "/repos/acme/shop/deployments")
    assert create.body["ref"] == "d" * 40 and create.body["environment"] == "production"
    assert create.body["production_environment"] is True and create.body["auto_merge"] is False
    assert create.body["payload"]["images"] == {"api": "sha256:" + "a" * 64}
    assert create.headers["Authorization"] == f"Bearer {TOKEN}"
    assert progress.path == "/repos/acme/shop/deployments/101/statuses"
    assert progress.body["state"] == "in_progress"
    assert success.body == {
        "state": "success",
        "description": "2.0.0 is live (r0003)",
        "environment": "production",
        "log_url": "https://github.example/acme/shop/actions/runs/77",
        "environment_url": "https://shop.example",
    }
    assert TOKEN not in out.getvalue()


def test_a_github_that_fails_is_a_warning_not_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with recording_server() as api:
        api.routes[("POST", "/repos/acme/shop/deployments")] = (500, {"message": "boom"})
        reporter = github.DeploymentReporter(
            "production", Console(io.StringIO()), actions_env(api.url, tmp_path / "s.md")
        )
        reporter.started(record(), production=True)
        reporter.status("success", "never sent")
    assert len(api.requests) == 1 and reporter.requests_failed == 1
    err = capsys.readouterr().err
    assert "GitHub deployment status not reported: POST /deployments: HTTP 500" in err
    assert TOKEN not in err


def test_the_announcer_reports_a_failed_deploy_to_github(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    repo_config: Config,
) -> None:
    summary = tmp_path / "summary.md"
    with recording_server() as api:
        for name, value in actions_env(api.url, summary).items():
            monkeypatch.setenv(name, value)
        announce = notify.Announcer(
            repo_config, repo_config.environments["production"], Console(io.StringIO())
        )
        failing = record(ended=None)
        announce.started(failing)
        failing.outcome, failing.failed_phase, failing.reason = "failed", "ready", "no /readyz"
        failing.ended = 130.0
        announce.failed(failing, "1.9.0 (r0002) is still serving")
        announce.close()
    states = [r.body.get("state") for r in api.requests if r.path.endswith("/statuses")]
    assert states == ["in_progress", "failure"]
    assert api.requests[-1].body["description"].startswith("failed in ready: no /readyz;")
    out = capsys.readouterr().out
    assert "::error title=production promote failed::promote of 2.0.0 to production" in out
    assert "| failed in | ready: no /readyz |" in summary.read_text()


def test_the_announcer_reports_an_interrupted_deploy_on_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo_config: Config
) -> None:
    with recording_server() as api:
        for name, value in actions_env(api.url, tmp_path / "s.md").items():
            monkeypatch.setenv(name, value)
        announce = notify.Announcer(
            repo_config, repo_config.environments["staging"], Console(io.StringIO())
        )
        announce.started(record(environment="staging", ended=None))
        announce.close()  # the deploy raised something other than a failed phase
    assert [r.body.get("state") for r in api.requests[1:]] == ["in_progress", "error"]
    assert api.requests[0].body["production_environment"] is False
