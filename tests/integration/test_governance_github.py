"""GitHub Actions reporting from real deploys: deployment statuses sent to a local server that
stands in for the REST API, ``::error`` annotations, the step summary, and a production
promotion gated by the run's environment reviewers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from testkit import sandbox

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_governance_fakes import recording_server

TOKEN = "ghs_" + "R" * 36
RUN = "/repos/acme/shop/actions/runs/4242/approvals"


def actions(api: Any, summary: Path, actor: str = "bob") -> dict[str, str]:
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_API_URL": api.url,
        "GITHUB_REPOSITORY": "acme/shop",
        "GITHUB_RUN_ID": "4242",
        "GITHUB_SHA": "0" * 40,  # the sandbox releases' commit
        "GITHUB_SERVER_URL": "https://github.example",
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_ACTOR": actor,
    }


def test_deploys_report_statuses_annotations_and_a_summary(
    make_environment: Any, tmp_path: Path
) -> None:
    env = make_environment(ready=20)
    summary = tmp_path / "step-summary.md"
    with recording_server() as api:
        good = env.cli("deploy", "--env", env.name, "--version", "1.0.0", env=actions(api, summary))
        assert good.returncode == 0, good.stdout + good.stderr
        env.retime(ready=8)  # 9.0.1+notready fails when the ready timeout ends
        bad = env.cli(
            "deploy", "--env", env.name, "--version", "9.0.1+notready", env=actions(api, summary)
        )
        assert bad.returncode == 1, bad.stdout + bad.stderr
        calls = [(r.method, r.path, r.body) for r in api.requests]
        headers = [r.headers for r in api.requests]

    created = [body for method, path, body in calls if path == "/repos/acme/shop/deployments"]
    assert [(d["environment"], d["ref"], d["payload"]["version"]) for d in created] == [
        (env.name, "0" * 40, "1.0.0"),
        (env.name, "0" * 40, "9.0.1+notready"),
    ]
    assert all(d["production_environment"] is False for d in created)
    statuses = [(path, body["state"]) for method, path, body in calls if path.endswith("/statuses")]
    first, second = (path.split("/")[-2] for path, _ in statuses[::2])
    assert statuses == [
        (f"/repos/acme/shop/deployments/{first}/statuses", "in_progress"),
        (f"/repos/acme/shop/deployments/{first}/statuses", "success"),
        (f"/repos/acme/shop/deployments/{second}/statuses", "in_progress"),
        (f"/repos/acme/shop/deployments/{second}/statuses", "failure"),
    ]
    failure = calls[-1][2]
    assert failure["description"].startswith("failed in ready: ")
    assert failure["log_url"] == "https://github.example/acme/shop/actions/runs/4242"
    assert all(h["Authorization"] == f"Bearer {TOKEN}" for h in headers)

    assert f"::error title={env.name} deploy failed::deploy of 9.0.1+notready" in bad.stdout
    text = summary.read_text()
    assert f"### ✅ deploy 1.0.0 → {env.name}: succeeded" in text
    assert f"### ❌ deploy 9.0.1+notready → {env.name}: failed" in text
    assert "| failed in | ready: " in text and "| verify |" in text
    for output in (good.stdout, good.stderr, bad.stdout, bad.stderr, text):
        assert TOKEN not in output


def test_production_runs_what_its_github_reviewers_approved(
    make_environment: Any, tmp_path: Path
) -> None:
    staging = make_environment(health_interval=2)  # a promote waits for its first check
    prod = make_environment()
    text = prod.config_path.read_text()
    marker = f"[environments.{prod.name}]\n"
    gate = "approval = { required = true }\nrequire_scan = true\n"
    section = text.replace(marker, marker + gate).split("[environments.", 1)[1]
    staging.config_path.write_text(staging.config_path.read_text() + "\n[environments." + section)
    prod.config_path = staging.config_path
    sandbox.record_scan(staging.dist / "1.0.0")
    summary = tmp_path / "summary.md"
    local = {"GITHUB_ACTIONS": "", "GITHUB_ACTOR": "bob"}
    deployed = staging.cli("deploy", "--env", staging.name, "--version", "1.0.0", env=local)
    assert deployed.returncode == 0, deployed.stderr

    promote = ("promote", "--from", staging.name, "--to", prod.name)
    with recording_server() as api:
        api.routes[("GET", RUN)] = (200, [])  # still waiting for a reviewer
        waiting = staging.cli(*promote, env=actions(api, summary))
        api.routes[("GET", RUN)] = (
            200,
            [
                {
                    "state": "approved",
                    "user": {"login": "alice"},
                    "environments": [{"name": prod.name}],
                    "comment": "ship it",
                }
            ],
        )
        approved = staging.cli(*promote, env=actions(api, summary))
        calls = [(r.method, r.path, r.body) for r in api.requests]

    assert waiting.returncode == 4, waiting.stdout + waiting.stderr
    assert f"no reviewer approved GitHub's {prod.name} environment in run 4242" in waiting.stderr
    assert f"::error title={prod.name} approval needed::" in waiting.stdout
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert f"Approved by alice in GitHub's {prod.name} environment" in approved.stdout

    history = json.loads(prod.cli("history", "--env", prod.name, "--json").stdout)
    (record,) = history
    assert record["kind"] == "promote" and record["outcome"] == "succeeded"
    assert record["approval"]["method"] == "github" and record["approval"]["approver"] == "alice"
    created = [b for m, p, b in calls if p == "/repos/acme/shop/deployments"]
    assert [(d["environment"], d["production_environment"]) for d in created] == [(prod.name, True)]
    assert [b["state"] for m, p, b in calls if p.endswith("/statuses")] == [
        "in_progress",
        "success",
    ]
    assert "| approval | alice (github) |" in summary.read_text()
