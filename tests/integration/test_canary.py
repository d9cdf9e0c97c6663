"""Canary releases (issue 14) on a real router and engine, under bounded loopback load.

A good release walks every step to 100% without a failed request. A release failing a share of
requests is aborted within one sample of clear evidence, and the failed requests users saw stay
below weight x interval x rate; a slow one is aborted on latency; too little traffic never
passes; an abort asked for mid-step is answered at once; a killed rollout is undone by the next
command; two hosts step together.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from conveyor import health, router
from testkit.loadgen import KeepAliveLoad
from testkit.steps import ok

RATE = 200.0
# Short windows for tests; the judging is the same as with the defaults.
CANARY = "{ steps = [25, 50, 100], interval = 3 }"
ANALYSIS = "min_requests = 20\nmax_inconclusive = 2\nsample = 0.5"


def failed_line(result: Any) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    return str(result.stderr.strip().splitlines()[-1])


def deploy(env: Any, version: str) -> Any:
    return env.cli("deploy", "--env", env.name, "--version", version)


def served(env: Any, offset: int = 0) -> str | None:
    answer = health.probe("127.0.0.1", env.public(offset), "/api/version")
    return None if answer.body is None else answer.body.get("version")


@contextmanager
def load_on(env: Any, offset: int = 0) -> Iterator[KeepAliveLoad]:
    load = KeepAliveLoad(
        "127.0.0.1",
        env.public(offset),
        "/api/version",
        connections=4,
        rate=RATE,
        max_seconds=120,
        track_versions=True,
    )
    with load:
        yield load


def canary_env(make_environment: Any, canary: str = CANARY, **options: Any) -> Any:
    options.setdefault("ready", 20)
    return make_environment(verify=1, canary=canary, analysis=ANALYSIS, **options)


def last_record(env: Any) -> dict[str, Any]:
    history: list[dict[str, Any]] = json.loads(
        ok(env.cli("history", "--env", env.name, "--json")).stdout
    )
    return history[-1]


def weights(env: Any) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(ok(env.cli("rollout", "--env", env.name, "--json")).stdout)
    return shown["weights"]


def test_a_good_release_walks_every_step_to_100_percent(make_environment: Any) -> None:
    env = canary_env(make_environment)
    first = ok(deploy(env, "1.0.0"))
    assert "nothing serves yet to compare a canary with" in first.stdout, first.stdout
    plan = ok(env.cli("deploy", "--env", env.name, "--version", "2.0.0", "--dry-run")).stdout
    assert "canary steps 25% → 50%" in plan and "rollout-abort" in plan, plan

    with load_on(env) as load:
        deployed = ok(deploy(env, "2.0.0"))
    assert load.result.failures == 0, load.result.as_dict()
    assert served(env) == "2.0.0"
    # Both versions answered users during the steps: a real split, not a switch.
    assert {"1.0.0", "2.0.0"} <= set(load.result.versions), load.result.versions
    assert "canary: 25% of traffic on 2.0.0" in deployed.stdout
    assert "canary 50%: pass [within-thresholds]" in deployed.stdout, deployed.stdout
    record = last_record(env)
    assert record["outcome"] == "succeeded" and record["canary"]["state"] == "promoted"
    windows = record["canary"]["windows"]
    assert [w["percent"] for w in windows if w["outcome"] == "pass"] == [25, 50]
    api = windows[0]["services"]["api"]
    assert api["canary"]["requests"] >= 20 and api["stable"]["requests"] >= 20, api
    assert api["canary"]["errors"] == 0 and api["canary"]["mean_ms"] is not None, api
    # After the rollout the router serves one color at full weight again.
    assert weights(env)["local"]["api"] == {"green": 100}


def test_a_release_failing_a_share_of_requests_is_aborted_at_once(make_environment: Any) -> None:
    env = canary_env(make_environment, canary="{ steps = [25, 100], interval = 20 }")
    ok(deploy(env, "1.0.0"))
    with load_on(env) as load:
        failed = deploy(env, "9.1.0+failshare")
    line = failed_line(failed)
    assert "failed in phase 'canary'" in line and "[fail-fast]" in line, line
    assert "1.0.0 (r0001) is still serving" in line, line
    assert served(env) == "1.0.0"
    # Bounded by weight x interval x rate x failing share, and far below it: the fail-fast
    # rule fired within a sample or two, not at the end of the 20 s window.
    bound = 0.25 * 20 * RATE * 0.3
    assert 0 < load.result.failures < bound / 4, (load.result.as_dict(), bound)
    record = last_record(env)
    assert record["outcome"] == "failed" and record["canary"]["state"] == "aborted"
    verdict = record["canary"]["windows"][-1]
    assert verdict["outcome"] == "fail" and verdict["early"] and verdict["seconds"] < 10
    assert verdict["services"]["api"]["canary"]["errors"] >= 10, verdict
    assert record["logs"], "the canary's logs were not kept"
    assert weights(env)["local"]["api"] == {"blue": 100}


def test_a_slow_release_is_aborted_on_latency(make_environment: Any) -> None:
    env = canary_env(make_environment, canary="{ steps = [50, 100], interval = 20 }")
    ok(deploy(env, "1.0.0"))
    with load_on(env):
        failed = deploy(env, "9.1.1+slow")
    line = failed_line(failed)
    assert "failed in phase 'canary'" in line and "[latency]" in line, line
    verdict = last_record(env)["canary"]["windows"][-1]
    api = verdict["services"]["api"]
    assert api["canary"]["mean_ms"] >= 250 and api["stable"]["mean_ms"] < 100, api
    assert served(env) == "1.0.0"


def test_too_little_traffic_never_passes_a_step(make_environment: Any) -> None:
    env = canary_env(make_environment, canary="{ steps = [25, 100], interval = 1 }")
    ok(deploy(env, "1.0.0"))
    failed = deploy(env, "2.0.0")  # no load at all
    line = failed_line(failed)
    assert "inconclusive window(s)" in line and "too little evidence" in line, line
    windows = last_record(env)["canary"]["windows"]
    assert [w["outcome"] for w in windows] == ["inconclusive", "inconclusive"], windows
    assert served(env) == "1.0.0"


def test_abort_and_promote_answer_within_a_sample(make_environment: Any) -> None:
    env = canary_env(make_environment, canary="{ steps = [25, 100], interval = 60 }")
    ok(deploy(env, "1.0.0"))
    with load_on(env) as load:
        running = env.cli_running("deploy", "--env", env.name, "--version", "2.0.0")
        wait_for_split(env, running)
        assert "stepping" in ok(env.cli("rollout", "--env", env.name)).stdout
        asked = time.monotonic()
        aborting = env.cli_running("rollout-abort", "--env", env.name)
        # The stepper answers between samples: the split is gone well before the canary has
        # stopped and the record is closed (which rollout-abort waits for).
        while len(router_weights(env)["api"]) == 2:
            # Alone this takes ~7 s, mostly rollout-abort's own start (imports, engine, ledger);
            # beside another worker's deploys it took over 15 s. The 60 s window is what a
            # stepper that ignored the request would take.
            assert time.monotonic() - asked < 45, "the abort was not answered"
            time.sleep(0.05)
        took = time.monotonic() - asked
        aborted_out, aborted_err = aborting.communicate(timeout=120)
        out, err = running.communicate(timeout=60)
    assert aborting.returncode == 0, aborted_out + aborted_err
    assert "ended failed" in aborted_out and "rollout-abort" in aborted_out, aborted_out
    assert took < 45, took
    assert running.returncode != 0 and "aborted by" in err, err
    assert load.result.failures == 0, load.result.as_dict()
    assert served(env) == "1.0.0"

    with load_on(env) as load:
        running = env.cli_running("deploy", "--env", env.name, "--version", "2.0.0")
        wait_for_split(env, running)
        ok(env.cli("rollout-promote", "--env", env.name))
        out, err = running.communicate(timeout=60)
    assert running.returncode == 0, err
    assert "promoted at 25%" in out, out
    assert load.result.failures == 0, load.result.as_dict()
    assert served(env) == "2.0.0"


def router_weights(env: Any) -> dict[str, dict[str, int]]:
    """The live weights straight from the router's admin API (no CLI start-up in the way)."""
    return router.parse_weights(router.admin_direct(env.ports[2], "show stat"), ["api", "web"])


def wait_for_split(env: Any, deploying: Any, timeout: float = 60) -> None:
    """Until the router splits the api's traffic; if the deploy ends first or never gets
    there, fail with what it printed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and deploying.poll() is None:
        if len(router_weights(env)["api"]) == 2:
            return
        time.sleep(0.1)
    if deploying.poll() is None:
        deploying.kill()
    out, err = deploying.communicate(timeout=30)
    raise AssertionError(f"the rollout never split the traffic:\n{out}\n{err}")


def test_a_rollout_killed_mid_step_is_undone_by_the_next_command(
    make_environment: Any, crash: Any
) -> None:
    env = canary_env(make_environment, canary="{ steps = [25, 100], interval = 60 }")
    ok(deploy(env, "1.0.0"))
    with load_on(env) as load:
        after = crash.kill_at(
            env, "canary", "deploy", "--env", env.name, "--version", "2.0.0", after=2
        )
        # Nobody steers the routers now: the split stays until a command converges.
        assert "its process died" in ok(env.cli("rollout", "--env", env.name)).stdout
        assert any(c["role"] == "canary" for c in after.status["hosts"][0]["containers"])
        aborted = ok(env.cli("rollout-abort", "--env", env.name))
    assert "aborted the interrupted rollout" in aborted.stdout, aborted.stdout
    assert load.result.failures == 0, load.result.as_dict()
    assert served(env) == "1.0.0"
    assert weights(env)["local"]["api"] == {"blue": 100}
    record = last_record(env)
    assert record["outcome"] == "interrupted", record
    status = json.loads(ok(env.cli("status", "--env", env.name, "--json")).stdout)
    running = [c for c in status["hosts"][0]["containers"] if c["status"] == "running"]
    assert {c["release"] for c in running} == {"r0001"}, running


def test_two_hosts_step_together_and_abort_together(
    make_environment: Any, second_engine: tuple[str, Any]
) -> None:
    socket_url, client2 = second_engine
    env = canary_env(
        make_environment,
        canary="{ steps = [25, 100], interval = 20 }",
        hosts=[
            {"name": "h1", "docker": "local", "port_offset": 0},
            {"name": "h2", "docker": socket_url, "port_offset": 1000},
        ],
        offsets=(0, 1000),
        # Services start on two engines under load: in CI one took 20 s to listen.
        ready=60,
    )
    make_environment.clients.append(client2)
    ok(deploy(env, "1.0.0"))
    # Load on h2 only: the errors that abort the rollout are seen there, and h1 goes back too.
    with load_on(env, 1000) as load:
        failed = deploy(env, "9.1.0+failshare")
    line = failed_line(failed)
    assert "[fail-fast]" in line, line
    assert "on h1, h2" in failed.stdout, failed.stdout
    assert load.result.failures > 0
    for offset in (0, 1000):
        assert served(env, offset) == "1.0.0"
    shown = weights(env)
    assert shown["h1"]["api"] == {"blue": 100} and shown["h2"]["api"] == {"blue": 100}, shown
    assert set(last_record(env)["switched"]) == {"h1", "h2"}


def test_a_sticky_user_stays_on_the_color_they_first_got(make_environment: Any) -> None:
    env = canary_env(make_environment, canary="{ steps = [50, 100], interval = 60, sticky = true }")
    ok(deploy(env, "1.0.0"))
    running = env.cli_running("deploy", "--env", env.name, "--version", "2.0.0")
    try:
        wait_for_split(env, running)
        seen = {version_with_cookie(env) for _ in range(40)}
        assert seen == {"1.0.0", "2.0.0"}, "a 50% split sent every new user to one color"
        for _ in range(5):
            cookie, first = first_visit(env)
            assert {version_with_cookie(env, cookie) for _ in range(10)} == {first}
    finally:
        ok(env.cli("rollout-abort", "--env", env.name))
        running.communicate(timeout=60)


def first_visit(env: Any) -> tuple[str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", env.public(), timeout=5)
    connection.request("GET", "/api/version")
    response = connection.getresponse()
    body = json.loads(response.read())
    # The app sets its own session cookie too: keep the router's.
    cookies = [c.split(";")[0] for c in response.msg.get_all("Set-Cookie") or []]
    connection.close()
    cookie = next((c for c in cookies if c.startswith("conveyor_color=")), "")
    assert cookie, cookies
    return cookie, str(body["version"])


def version_with_cookie(env: Any, cookie: str | None = None) -> str:
    answer = health.probe(
        "127.0.0.1", env.public(), "/api/version", headers={"Cookie": cookie} if cookie else None
    )
    assert answer.body is not None, answer.describe()
    return str(answer.body["version"])
