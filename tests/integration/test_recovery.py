"""Rollback and recovery that are always right (issue 10), on a real engine under real load.

Kept containers belong to ledger records; a rollback returns to the last verified release;
after a kill -9 in any phase, ``status`` tells the truth and the next command converges to a
verified release without a failed request.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from conveyor import health
from conveyor.terms import PHASES
from testkit import sandbox
from testkit.loadgen import KeepAliveLoad, proof_load
from testkit.steps import ok

# The phases a blue-green executor announces (the lock is taken before it runs; canary steps
# are test_canary's).
TRACED = tuple(p for p in PHASES[PHASES.index("prepare") :] if p != "canary")


def last_line(result: Any) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    line = str(result.stderr.strip().splitlines()[-1])
    assert line.startswith("conveyor: "), result.stderr
    return line


def deploy(env: Any, version: str) -> Any:
    return env.cli("deploy", "--env", env.name, "--version", version)


def served(env: Any) -> str | None:
    answer = health.probe("127.0.0.1", env.public(), "/api/version")
    return None if answer.body is None else answer.body.get("version")


def load_on(env: Any) -> KeepAliveLoad:
    return proof_load(env.public())


def kill_at(crash: Any, env: Any, phase: str, *argv: str) -> Any:
    """The crash harness's SIGKILL as ``phase`` begins. The killed command alone verifies for
    4 s, so a kill at verify lands inside the window even on a busy machine; the commands
    around it verify for the tests' default."""
    env.retime(verify=4)
    try:
        return crash.kill_at(env, phase, *argv)
    finally:
        env.retime(verify=sandbox.VERIFY_SECONDS)


def set_api_fault(env: Any, fault: str | None) -> None:
    """Put REFAPI_FAULT in (or take it out of) the api's env in the environment's deploy.toml:
    the same images, a different declaration — as a user editing deploy.toml would."""
    text = env.config_path.read_text(encoding="utf-8")
    extra = f', REFAPI_FAULT = "{fault}"' if fault else ""
    text = re.sub(
        r'env = \{ DATABASE_URL = "sqlite:////data/refapi.db"[^}]*\}',
        f'env = {{ DATABASE_URL = "sqlite:////data/refapi.db"{extra} }}',
        text,
    )
    env.config_path.write_text(text, encoding="utf-8")


def running_releases(env: Any) -> set[str]:
    status = json.loads(ok(env.cli("status", "--env", env.name, "--json")).stdout)
    return {c["release"] for c in status["hosts"][0]["containers"] if c["status"] == "running"}


def test_a_rollback_never_restarts_the_containers_of_a_failed_release(
    make_environment: Any,
) -> None:
    """Issue 10, bug 1: live 2.0.0 → a deploy of 1.0.0 with a fault fails and switches back;
    the rollback must restart 1.0.0's own verified containers, never the failed ones."""
    env = make_environment(ready=20)
    ok(deploy(env, "1.0.0"))  # r0001, blue
    ok(deploy(env, "2.0.0"))  # r0002, green
    set_api_fault(env, "fail-after-ready=4")
    env.retime(verify=6)  # the fault begins 4 s after ready: inside this window
    line = last_line(deploy(env, "1.0.0"))  # r0003, blue: the same images, failing for real
    assert "failed in phase 'verify'" in line and "2.0.0 (r0002) is still serving" in line
    set_api_fault(env, None)
    env.retime(verify=sandbox.VERIFY_SECONDS)

    plan = ok(env.cli("rollback", "--env", env.name, "--dry-run")).stdout
    assert "restart kept container" in plan and f"conveyor-{env.name}-api-blue-r0001" in plan
    assert "r0003" not in plan, plan
    with load_on(env) as load:
        ok(env.cli("rollback", "--env", env.name))
    assert load.result.failures == 0, load.result.as_dict()
    assert served(env) == "1.0.0"
    assert running_releases(env) == {"r0001"}

    # --to refuses the live release, and names what it knows by id.
    live = env.cli("rollback", "--env", env.name, "--to", "1.0.0")
    assert "is what" in last_line(live) and "nothing to roll back" in last_line(live)
    missing = last_line(env.cli("rollback", "--env", env.name, "--to", "7.7.7"))
    assert "no verified release '7.7.7'" in missing and "r0002 (2.0.0)" in missing
    assert "r0003" not in missing, "a failed release is never offered"


@pytest.mark.parametrize("phase", TRACED)
def test_sigkill_in_any_deploy_phase_then_recover_serves_a_verified_release(
    make_environment: Any, crash: Any, phase: str
) -> None:
    env = make_environment(drain=0.5)
    ok(deploy(env, "1.0.0"))
    argv = ("deploy", "--env", env.name, "--version", "2.0.0")
    with load_on(env) as load:
        after = kill_at(crash, env, phase, *argv)
        assert after.outcome("r0002") == "running", "nobody closed the dead run's record yet"
        assert after.status["interrupted"] == ["r0002"], after.status_text
        if phase == "drain":
            # Verified on every host before it died: it is the live release already.
            assert after.status["live_version"] == "2.0.0", after.status_text
            assert after.served == "2.0.0"
        else:
            assert after.status["live_version"] == "1.0.0", after.status_text
        if after.served != after.status["live_version"]:
            # Killed after the switch, before verify passed: status says so loudly, and calls
            # neither the served nor the verified release's containers leftovers.
            assert after.status["disagreements"], after.status_text
            assert "DISAGREE" in after.status_text and "invoke recover" in after.status_text
            assert after.status["hosts"][0]["leftovers"] == [], after.status_text
        else:
            assert after.status["disagreements"] == [], after.status_text
        recovered = ok(env.cli("recover", "--env", env.name))
        assert "recovered:" in recovered.stdout, recovered.stdout
        now = served(env)
    assert load.result.failures == 0, load.result.as_dict()
    expected = "2.0.0" if phase == "drain" else "1.0.0"
    assert now == expected
    final = crash.observe(env)
    assert final.outcome("r0002") == ("succeeded" if phase == "drain" else "interrupted")
    assert final.status["disagreements"] == [] and final.status["interrupted"] == []
    assert final.status["hosts"][0]["leftovers"] == []
    assert final.status["live_version"] == expected
    ok(deploy(env, "3.0.0"))
    assert served(env) == "3.0.0"


@pytest.mark.parametrize("phase", TRACED)
def test_sigkill_in_any_rollback_phase_then_deploy_converges(
    make_environment: Any, crash: Any, phase: str
) -> None:
    env = make_environment(drain=0.5)
    ok(deploy(env, "1.0.0"))  # r0001
    ok(deploy(env, "2.0.0"))  # r0002
    with load_on(env) as load:
        after = kill_at(crash, env, phase, "rollback", "--env", env.name)  # r0003
        rolled_back = phase == "drain"
        assert after.status["live_version"] == ("1.0.0" if rolled_back else "2.0.0")
        converged = ok(deploy(env, "3.0.0"))  # r0004
        assert served(env) == "3.0.0"
        # The lineage now: a verified rollback undid r0002, an interrupted one changed nothing.
        back = ok(env.cli("rollback", "--env", env.name))
        now = served(env)
    assert load.result.failures == 0, load.result.as_dict()
    assert now == ("1.0.0" if rolled_back else "2.0.0"), converged.stdout + back.stdout
    final = crash.observe(env)
    assert final.outcome("r0003") == ("succeeded" if rolled_back else "interrupted")
    assert final.status["disagreements"] == [] and final.status["hosts"][0]["leftovers"] == []


def test_a_rollback_after_a_crash_in_verify_never_serves_the_unverified_release(
    make_environment: Any, crash: Any
) -> None:
    """Issue 10, bug 2: kill -9 while 3.0.0 (r0003) is in verify, 2.0.0 (r0002) verified.
    status tells the truth; the next rollback first puts r0002 back, then goes to r0001."""
    env = make_environment(drain=0.5)
    ok(deploy(env, "1.0.0"))
    ok(deploy(env, "2.0.0"))
    with load_on(env) as load:
        after = kill_at(crash, env, "verify", "deploy", "--env", env.name, "--version", "3.0.0")
        assert after.served == "3.0.0", "killed after its switch: the router serves r0003"
        assert after.status["live_version"] == "2.0.0"
        problems = after.status["disagreements"]
        assert len(problems) == 2, problems  # api and web
        assert all("r0003" in p and "never verified" in p for p in problems), problems
        # r0002's running containers are the verified release, not leftovers.
        assert after.status["hosts"][0]["leftovers"] == [], after.status_text
        result = ok(env.cli("rollback", "--env", env.name))
        now = served(env)
    assert load.result.failures == 0, load.result.as_dict()
    assert "recovered:" in result.stdout and "r0003" in result.stdout, result.stdout
    assert now == "1.0.0"
    final = crash.observe(env)
    assert final.outcome("r0003") == "interrupted"
    rollback = final.history[-1]
    assert (rollback["kind"], rollback["outcome"]) == ("rollback", "succeeded")
    assert (rollback["rollback_of"], rollback["rollback_to"]) == ("r0002", "r0001")
    assert final.status["disagreements"] == []
