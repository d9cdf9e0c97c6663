"""Promotion and the approval gate against real engines: two sandbox environments, one
playing staging and one playing a gated production, on the real dockerd and router."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time
from typing import Any

from conveyor import approvals, health
from conveyor.operations import Session
from testkit import sandbox
from testkit.steps import ok

GATE = "approval = {{ required = true, allow_self_approval = {self_ok}, expires_hours = 24 }}\n"


def gated(env: Any, *, self_ok: bool = False) -> Any:
    """Make a sandbox environment a production: approvals required, scans required."""
    text = env.config_path.read_text()
    marker = f"[environments.{env.name}]\n"
    head, sep, rest = text.partition(marker)
    gate = GATE.format(self_ok=str(self_ok).lower()) + "require_scan = true\n"
    env.config_path.write_text(head + sep + gate + rest)
    return env


def pair(make_environment: Any, *, gate: bool = True, self_ok: bool = False, **timing: Any) -> Any:
    """A staging and a production-like environment, both in one deploy.toml as for real."""
    # A promote waits for the first health check of staging's live containers.
    staging = make_environment(**{"health_interval": 2, **timing})
    prod = make_environment()
    if gate:
        gated(prod, self_ok=self_ok)
    section = prod.config_path.read_text().split("[environments.", 1)[1]
    staging.config_path.write_text(staging.config_path.read_text() + "\n[environments." + section)
    prod.config_path = staging.config_path
    return staging, prod


def scanned(env: Any, version: str, *, passed: bool = True, dirty: bool = False) -> str:
    """Record, as `nox -s scan -- --artifacts` does, each image's verdict bound to its image
    ID (and the tree state) in dist/<version>/manifest.json."""
    sandbox.record_scan(env.dist / version, passed=passed, dirty=dirty)
    return version


def run(env: Any, user: str, *args: str, **extra: str) -> Any:
    return env.cli(*args, env={"GITHUB_ACTOR": user, "GITHUB_ACTIONS": "", **extra})


def refused(result: Any, code: int = 1) -> str:
    assert result.returncode == code, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    last: str = result.stderr.strip().splitlines()[-1]
    assert last.startswith("conveyor: "), result.stderr
    return last


def history(env: Any) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(
        ok(env.cli("history", "--env", env.name, "--json")).stdout
    )
    return records


def containers(client: Any, env: Any) -> list[Any]:
    found: list[Any] = client.containers.list(
        all=True, filters={"label": f"conveyor.env={env.name}"}
    )
    return found


def live_images(client: Any, env: Any) -> dict[str, str]:
    found = {}
    for c in client.containers.list(filters={"label": f"conveyor.env={env.name}"}):
        service = c.labels.get("conveyor.service")
        if service:
            found[service] = c.attrs["Image"]
    return found


def version_at(port: int) -> str | None:
    answer = health.probe("127.0.0.1", port, "/api/version")
    return None if answer.body is None else answer.body.get("version")


def promote(staging: Any, prod: Any, user: str, *extra: str, **env: str) -> Any:
    return run(staging, user, "promote", "--from", staging.name, "--to", prod.name, *extra, **env)


def test_promotion_deploys_the_approved_staging_images_and_nothing_else(
    make_environment: Any, docker_client: Any
) -> None:
    staging, prod = pair(make_environment)
    ok(run(staging, "bob", "deploy", "--env", staging.name, "--version", scanned(staging, "1.0.0")))
    source = history(staging)[-1]

    dry = ok(promote(staging, prod, "bob", "--dry-run"))
    key = re.search(r"release key ([0-9a-f]{16})", dry.stdout)
    assert key, dry.stdout
    expected = approvals.release_key({s: v["image_id"] for s, v in source["services"].items()})
    assert key.group(1) == expected[:16]
    assert "approval: required, none valid yet" in dry.stdout
    assert f"invoke approve --env {prod.name} --release {key.group(1)}" in dry.stdout
    assert containers(docker_client, prod) == [], "a dry run changes nothing"

    # Non-interactive, no approval: exit non-zero, and nothing exists in production.
    line = refused(promote(staging, prod, "bob"), code=4)
    assert f"needs an approval of 1.0.0 with release key {key.group(1)}" in line
    assert "nothing was changed" in line
    assert containers(docker_client, prod) == []

    # An expired approval and a self-approval are both refused, each with its reason.
    session = Session(staging.config, prod.name)
    candidate = approvals.Candidate(
        key=expected,
        version="1.0.0",
        commit=source["commit"],
        digests={s: v["image_id"] for s, v in source["services"].items()},
        source="planted",
    )
    stale = approvals.new_approval(
        candidate,
        prod.name,
        "carol",
        session.env.approval,
        method="ledger",
        now=time.time() - 25 * 3600,
    )
    session.ledger.audit("approval", approval=stale.as_dict())
    ok(run(staging, "bob", "approve", "--env", prod.name, "--release", key.group(1)))
    line = refused(promote(staging, prod, "bob"), code=4)
    assert "the approval by carol expired 60 min ago" in line
    assert "bob approved it but is also deploying it" in line
    assert [c for c in containers(docker_client, prod) if c.labels.get("conveyor.service")] == []

    approve = ok(run(staging, "alice", "approve", "--env", prod.name, "--release", key.group(1)))
    assert "✓ alice approved 1.0.0" in approve.stdout
    done = ok(promote(staging, prod, "bob"))
    assert "✓ running containers on local match its image IDs and are healthy" in done.stdout
    assert "Approved by alice" in done.stdout

    record = history(prod)[-1]
    assert record["kind"] == "promote" and record["outcome"] == "succeeded"
    assert record["services"] == source["services"], "the exact images, never a rebuild"
    assert record["commit"] == source["commit"] and record["scan"] == source["scan"]
    assert record["approval"]["approver"] == "alice" and record["approval"]["deployer"] == "bob"
    assert record["approval"]["digests"] == {
        s: v["image_id"] for s, v in source["services"].items()
    }
    assert live_images(docker_client, prod) == live_images(docker_client, staging)
    assert version_at(prod.public()) == "1.0.0"
    events = session.ledger.audit_events()
    assert [e["approval"]["approver"] for e in events if e["kind"] == "approval"] == [
        "carol",
        "bob",
        "alice",
    ]

    # The approval covers those images only: staging's next release needs its own.
    ok(run(staging, "bob", "deploy", "--env", staging.name, "--version", scanned(staging, "2.0.0")))
    line = refused(promote(staging, prod, "bob"), code=4)
    assert "needs an approval of 2.0.0" in line
    assert version_at(prod.public()) == "1.0.0"
    assert len(history(prod)) == 1


def test_promotion_refuses_what_must_not_reach_production(
    make_environment: Any, docker_client: Any
) -> None:
    staging, prod = pair(make_environment, gate=False, ready=20)

    def why() -> str:
        return refused(promote(staging, prod, "bob"))

    assert "has no releases to promote" in why()

    ok(run(staging, "bob", "deploy", "--env", staging.name, "--version", "1.0.0"))
    assert "the scan gate did not pass for these image IDs (no scan for these images: " in why()

    failing = scanned(staging, "9.0.1+notready")
    staging.retime(ready=8)  # it fails when the ready timeout ends
    refused(run(staging, "bob", "deploy", "--env", staging.name, "--version", failing))
    staging.retime(ready=20)
    assert "9.0.1+notready) failed in ready" in why()

    dirty = scanned(staging, "3.0.0", dirty=True)
    ok(run(staging, "bob", "deploy", "--env", staging.name, "--version", dirty))
    assert "was built from a dirty tree" in why()

    ok(run(staging, "bob", "deploy", "--env", staging.name, "--version", scanned(staging, "2.0.0")))
    live = [
        c
        for c in docker_client.containers.list(filters={"label": f"conveyor.env={staging.name}"})
        if c.labels.get("conveyor.service") == "api"
    ]
    live[0].stop(timeout=1)
    assert "no running container takes api's live traffic" in why()
    live[0].start()

    ok(run(staging, "bob", "rollback", "--env", staging.name))
    assert f"{staging.name} was rolled back" in why()

    assert history(prod) == [] and containers(docker_client, prod) == []


def test_a_terminal_may_approve_by_typing_the_version_where_self_approval_is_allowed(
    make_environment: Any, docker_client: Any
) -> None:
    staging, prod = pair(make_environment, self_ok=True)
    ok(run(staging, "bob", "deploy", "--env", staging.name, "--version", scanned(staging, "1.0.0")))

    transcript = in_terminal(
        staging,
        ["promote", "--from", staging.name, "--to", prod.name],
        answers={"Type the version (1.0.0)": "1.0.0"},
    )
    assert f"{prod.name} needs an approval of 1.0.0" in transcript
    assert f"✓ {prod.name} serves 1.0.0" in transcript, transcript
    record = history(prod)[-1]
    assert record["approval"]["method"] == "terminal"
    assert record["approval"]["approver"] == "bob"


def in_terminal(env: Any, args: list[str], answers: dict[str, str], timeout: float = 180) -> str:
    """Run the CLI with a pseudo-terminal as stdin and stdout, answering prompts."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        ["python", "-m", "conveyor", "--config", str(env.config_path), *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "GITHUB_ACTOR": "bob", "GITHUB_ACTIONS": "", "CI": ""},
        close_fds=True,
    )
    os.close(follower)
    seen = b""
    pending = dict(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
                for prompt, answer in list(pending.items()):
                    if prompt.encode() in seen:
                        os.write(leader, answer.encode() + b"\n")
                        del pending[prompt]
            elif process.poll() is not None:
                break
    finally:
        process.wait(timeout=30)
        os.close(leader)
    text = seen.decode(errors="replace")
    assert process.returncode == 0, text
    return text
