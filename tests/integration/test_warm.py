"""Instant rollback (issue 17): the previous release kept warm, on a real engine under load.

Inside the keep_warm window a rollback starts no container — asserted from the engine's own
event stream — and outside it, or when the warm container died, it takes the normal path and
says so. A deploy inside the window replaces the warm release.
"""

from __future__ import annotations

import json
import time
from typing import Any

from conveyor import health
from testkit.loadgen import KeepAliveLoad, proof_load
from testkit.steps import ok


def deploy(env: Any, version: str) -> Any:
    return ok(env.cli("deploy", "--env", env.name, "--version", version))


def served(env: Any) -> str | None:
    answer = health.probe("127.0.0.1", env.public(), "/api/version")
    return None if answer.body is None else answer.body.get("version")


def load_on(env: Any) -> KeepAliveLoad:
    return proof_load(env.public(), max_seconds=120)


def starts(docker_client: Any, env: Any, since: float) -> list[str]:
    """Containers of this environment the engine started since ``since`` (its event stream)."""
    events = docker_client.events(
        since=int(since) - 1,
        until=int(time.time()) + 1,
        filters={"type": "container", "event": "start", "label": f"conveyor.env={env.name}"},
        decode=True,
    )
    names = [e["Actor"]["Attributes"]["name"] for e in events if e.get("time", 0) >= int(since)]
    return [name for name in names if "-api-" in name or "-web-" in name]  # not the lock's


def test_a_rollback_inside_the_window_only_switches(
    make_environment: Any, docker_client: Any
) -> None:
    env = make_environment(ready=20, verify=1, keep_warm=120)
    deploy(env, "1.0.0")
    deployed = deploy(env, "2.0.0")
    assert "keeping the old color warm for 120 s" in deployed.stdout, deployed.stdout
    status = ok(env.cli("status", "--env", env.name, "--stats")).stdout
    assert "warm: r0001 (1.0.0) until" in status and "`invoke rollback` only switches" in status
    assert " MB memory" in status, status
    plan = ok(env.cli("rollback", "--env", env.name, "--dry-run")).stdout
    assert f"use warm container conveyor-{env.name}-api-blue-r0001" in plan, plan

    began = time.time()
    with load_on(env) as load:
        rolled = ok(env.cli("rollback", "--env", env.name))
    assert load.result.failures == 0, load.result.as_dict()
    assert served(env) == "1.0.0"
    assert "using warm api@blue" in rolled.stdout, rolled.stdout
    assert starts(docker_client, env, began) == [], "a warm rollback started a container"
    record = json.loads(ok(env.cli("history", "--env", env.name, "--json")).stdout)[-1]
    assert record["kind"] == "rollback" and record["warm"] == {}  # nothing kept warm after it


def test_after_the_window_the_rollback_restarts_the_kept_containers(
    make_environment: Any, docker_client: Any
) -> None:
    env = make_environment(ready=20, verify=1, keep_warm=2)
    deploy(env, "1.0.0")
    deploy(env, "2.0.0")
    time.sleep(3)
    status = ok(env.cli("status", "--env", env.name)).stdout
    assert "its window ended" in status, status
    began = time.time()
    with load_on(env) as load:
        rolled = ok(env.cli("rollback", "--env", env.name))
    assert load.result.failures == 0, load.result.as_dict()
    assert "stopped warm" in rolled.stdout and "keep_warm window ended" in rolled.stdout
    assert "restarting kept api@blue" in rolled.stdout, rolled.stdout
    assert f"conveyor-{env.name}-api-blue-r0001" in starts(docker_client, env, began)
    assert served(env) == "1.0.0"


def test_a_warm_container_that_died_falls_back_to_the_normal_path(
    make_environment: Any, docker_client: Any
) -> None:
    env = make_environment(ready=20, verify=1, keep_warm=120)
    deploy(env, "1.0.0")
    deploy(env, "2.0.0")
    docker_client.containers.get(f"conveyor-{env.name}-api-blue-r0001").kill()
    plan = ok(env.cli("rollback", "--env", env.name, "--dry-run")).stdout
    assert "is no longer running — the normal path" in plan, plan
    with load_on(env) as load:
        rolled = ok(env.cli("rollback", "--env", env.name))
    assert load.result.failures == 0, load.result.as_dict()
    assert "restarting kept api@blue" in rolled.stdout and "using warm web@blue" in rolled.stdout
    assert served(env) == "1.0.0"


def test_a_deploy_inside_the_window_replaces_the_warm_release(make_environment: Any) -> None:
    env = make_environment(ready=20, verify=1, keep_warm=120)
    deploy(env, "1.0.0")
    deploy(env, "2.0.0")
    plan = ok(env.cli("deploy", "--env", env.name, "--version", "3.0.0", "--dry-run")).stdout
    assert f"the warm conveyor-{env.name}-api-blue-r0001 is replaced by this deploy" in plan
    with load_on(env) as load:
        third = ok(env.cli("deploy", "--env", env.name, "--version", "3.0.0"))
    assert load.result.failures == 0, load.result.as_dict()
    assert f"stopping leftover conveyor-{env.name}-api-blue-r0001" in third.stdout, third.stdout
    assert served(env) == "3.0.0"
    status = ok(env.cli("status", "--env", env.name, "--json")).stdout
    assert json.loads(status)["warm"]["record"] == "r0002"
