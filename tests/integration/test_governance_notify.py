"""Notifications from real deploys, delivered by apprise (``json://``) to a local server that
records them: every event's payload, the approval request, and no secret anywhere."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from testkit import sandbox

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_governance_fakes import recording_server

HOOK_TOKEN = "hook-9dK2pQ7vX1mZ4rT8"  # noqa: S105 - a fake, to prove it never leaks
SERVICE_SECRET = "svc-secret-Lw3Jt6Hn0Bq5"  # noqa: S105 - ditto


def with_notifications(env: Any, *, gated: bool = False) -> Any:
    text = env.config_path.read_text()
    marker = f"[environments.{env.name}]\n"
    head, sep, rest = text.partition(marker)
    extra = 'notify = ["env:T_NOTIFY_URL", "env:T_DEAD_URL"]\n'
    if gated:
        extra += "approval = { required = true }\nrequire_scan = true\n"
    rest = rest.replace(
        f"[environments.{env.name}.services.api]\n",
        f'[environments.{env.name}.services.api]\nsecrets = {{ API_TOKEN = "env:T_API_TOKEN" }}\n',
    )
    notifications = "[notifications]\nurls = []\ntimeout = 3\n\n"
    env.config_path.write_text(notifications + head + sep + extra + rest)
    return env


def run(env: Any, hook: Any, dead_port: int, *args: str) -> Any:
    return env.cli(
        *args,
        env={
            "GITHUB_ACTOR": "bob",
            "GITHUB_ACTIONS": "",
            "T_NOTIFY_URL": f"json://127.0.0.1:{hook.port}/hooks/{HOOK_TOKEN}",
            "T_DEAD_URL": f"json://127.0.0.1:{dead_port}/hooks/{HOOK_TOKEN}",
            "T_API_TOKEN": SERVICE_SECRET,
        },
    )


def payloads(hook: Any) -> list[dict[str, Any]]:
    return [r.body for r in hook.requests]


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert HOOK_TOKEN not in text
        assert SERVICE_SECRET not in text


def test_each_deploy_event_is_delivered_and_no_secret_leaks(
    make_environment: Any, free_port: Any
) -> None:
    env = with_notifications(make_environment(ready=20))
    dead = free_port()
    outputs = []
    with recording_server() as hook:
        for args, code in [
            (("deploy", "--env", env.name, "--version", "1.0.0"), 0),
            (("deploy", "--env", env.name, "--version", "2.0.0"), 0),
            (("deploy", "--env", env.name, "--version", "9.0.1+notready"), 1),
            (("rollback", "--env", env.name), 0),
        ]:
            env.retime(ready=8 if code else 20)  # 9.0.1+notready fails when ready ends
            result = run(env, hook, dead, *args)
            assert result.returncode == code, result.stdout + result.stderr
            outputs += [result.stdout, result.stderr]
            # The dead target is reported, by its reference, and never stops a deploy.
            assert "could not be delivered to target 2 (env:T_DEAD_URL" in result.stderr
            assert str(dead) not in result.stderr
        sent = payloads(hook)
        raw = b"".join(r.raw for r in hook.requests).decode()
    assert [(p["type"], p["title"]) for p in sent] == [
        ("info", f"{env.name}: deploy of 1.0.0 started"),
        ("success", f"{env.name}: deploy of 1.0.0 succeeded"),
        ("info", f"{env.name}: deploy of 2.0.0 started"),
        ("success", f"{env.name}: deploy of 2.0.0 succeeded"),
        ("info", f"{env.name}: deploy of 9.0.1+notready started"),
        ("failure", f"{env.name}: deploy of 9.0.1+notready failed in ready"),
        ("info", f"{env.name}: rollback of 1.0.0 started"),
        ("warning", f"{env.name}: rollback of 1.0.0 rolled back"),
    ]
    failed = sent[5]["message"]
    assert "failed phase: ready" in failed and "fault injected: not-ready" in failed
    assert "serving: 2.0.0 (r0002) is still serving" in failed
    assert "rollback of: r0002" in sent[7]["message"]  # what was live: r0003 never was
    assert f"url: http://127.0.0.1:{env.public()}/" in sent[1]["message"]
    assert all(p["version"] == "1.0" and p["attachments"] == [] for p in sent)
    assert_no_secret(raw, json.dumps(sent), *outputs)


def test_a_refused_gated_deploy_asks_for_approval(make_environment: Any, free_port: Any) -> None:
    env = with_notifications(make_environment(), gated=True)
    folder = env.dist / "1.0.0"
    sandbox.record_scan(folder)
    with recording_server() as hook:
        result = run(env, hook, free_port(), "deploy", "--env", env.name, "--version", "1.0.0")
        sent = payloads(hook)
    assert result.returncode == 4, result.stdout + result.stderr
    (asked,) = sent
    assert asked["type"] == "warning"
    assert asked["title"] == f"{env.name}: 1.0.0 needs an approval"
    assert f"approve with: invoke approve --env {env.name} --release " in asked["message"]
    assert "requested by: bob" in asked["message"]
    assert_no_secret(json.dumps(sent), result.stdout, result.stderr)
