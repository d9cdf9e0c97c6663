"""Feature flags (issue 15) on real containers: changed without a deploy, versioned with releases.

A flag change reaches running containers within the provider's bound with no failed request;
an invalid change is refused before anything is written; a corrupt file on disk leaves services
on their last good values; a rollback restores the flags that went with its release; two
changes at once are serialised by the environment's lock.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from conveyor import flagstate, health
from testkit.loadgen import KeepAliveLoad, proof_load
from testkit.steps import ok

FLAG = "new-notes-view"
# The provider polls every 500 ms; DECISIONS: "within 2 s" is the bound.
BOUND = 2.0


def refused(result: Any) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    return str(result.stderr.strip().splitlines()[-1])


def flag_for(env: Any, user: str) -> bool:
    answer = health.probe("127.0.0.1", env.public(), "/api/flags", headers={"X-User": user})
    assert answer.ok and answer.body is not None, answer.describe()
    return bool(answer.body["flags"][FLAG])


def share_on(env: Any, people: int = 200) -> float:
    return sum(flag_for(env, f"user-{n}") for n in range(people)) / people


def percent_now(env: Any) -> int:
    shown = json.loads(ok(env.cli("flags", "--env", env.name, "--json")).stdout)
    flag = shown["hosts"]["local"]["api"]["flags"][FLAG]
    return int(flag["targeting"]["fractional"][-2][1])


def deploy(env: Any, version: str) -> Any:
    return ok(env.cli("deploy", "--env", env.name, "--version", version))


def test_a_flag_flip_reaches_running_containers_without_a_failed_request(
    make_environment: Any, docker_client: Any
) -> None:
    env = make_environment(ready=20, verify=1, flags=True)
    before = ok(env.cli("status", "--env", env.name)).stdout
    assert "flags (api): none written yet" in before, before
    assert not docker_client.volumes.list(filters={"name": flagstate.volume_name(env.name)})
    deployed = deploy(env, "1.0.0")
    assert f"flags (api): {FLAG}: ENABLED" in deployed.stdout, deployed.stdout
    assert not flag_for(env, "alice")
    assert "0% get 'on'" in ok(env.cli("flags", "--env", env.name)).stdout

    load = proof_load(env.public(), "/api/flags", max_seconds=60, headers={"X-User": "alice"})
    with load:
        began = time.monotonic()
        changed = ok(env.cli("flag-set", "--env", env.name, FLAG, "--on"))
        written = time.monotonic()
        while not flag_for(env, "alice"):
            assert time.monotonic() - written < BOUND, "the running service never saw the flag"
            time.sleep(0.05)
        seen = time.monotonic() - written
        time.sleep(0.5)
    assert load.result.failures == 0, load.result.as_dict()
    assert seen < BOUND, seen
    assert "0% → 100% on" in changed.stdout, changed.stdout
    print(f"flag-set took {written - began:.2f} s; the service saw it {seen:.2f} s later")
    assert percent_now(env) == 100


def test_an_invalid_change_is_refused_and_a_corrupt_file_keeps_the_last_good_values(
    make_environment: Any, docker_client: Any
) -> None:
    env = make_environment(ready=20, verify=1, flags=True)
    deploy(env, "1.0.0")
    ok(env.cli("flag-set", "--env", env.name, FLAG, "--percent", "50"))
    # flag-set returns once the file is written; the services read it within BOUND.
    time.sleep(BOUND)
    before = share_on(env)
    assert 0.3 < before < 0.7, before

    line = refused(env.cli("flag-set", "--env", env.name, FLAG, "--percent", "150"))
    assert "a percentage is 0 to 100" in line, line
    line = refused(env.cli("flag-set", "--env", env.name, "no-such-flag", "--on"))
    assert "no flag named 'no-such-flag'" in line and FLAG in line, line
    assert percent_now(env) == 50

    # Someone breaks the file on disk: the services keep serving their last good values.
    docker_client.containers.run(
        "localhost/conveyor-base:bookworm",
        [
            "sh",
            "-c",
            "echo '{not json' > /flags/api.json.tmp && mv /flags/api.json.tmp /flags/api.json",
        ],
        volumes={flagstate.volume_name(env.name): {"bind": "/flags", "mode": "rw"}},
        network_mode="none",
        remove=True,
        labels={"conveyor.env": env.name},
    )
    time.sleep(BOUND)
    assert share_on(env) == before
    line = refused(env.cli("flags", "--env", env.name))
    assert "not JSON" in line, line
    # A good change writes a whole new file again.
    ok(env.cli("flag-set", "--env", env.name, FLAG, "--off"))
    time.sleep(BOUND)
    assert share_on(env) == 0.0


def test_a_deploy_keeps_the_percentage_and_a_rollback_restores_its_releases_flags(
    make_environment: Any,
) -> None:
    env = make_environment(ready=20, verify=1, flags=True)
    deploy(env, "1.0.0")
    ok(env.cli("flag-set", "--env", env.name, FLAG, "--percent", "25"))
    deploy(env, "2.0.0")
    assert percent_now(env) == 25, "a deploy reset the ramp"
    ok(env.cli("flag-set", "--env", env.name, FLAG, "--percent", "75"))
    rolled = ok(env.cli("rollback", "--env", env.name))
    assert percent_now(env) == 25, rolled.stdout
    time.sleep(BOUND)
    assert 0.1 < share_on(env) < 0.4


def test_two_flag_changes_at_once_are_serialised_by_the_lock(make_environment: Any) -> None:
    env = make_environment(ready=20, verify=1, flags=True)
    deploy(env, "1.0.0")
    first = env.cli_running(
        "flag-set", "--env", env.name, FLAG, "--percent", "10", "--lock-wait", "60"
    )
    second = env.cli_running(
        "flag-set", "--env", env.name, FLAG, "--percent", "90", "--lock-wait", "60"
    )
    outputs = [p.communicate(timeout=120) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    moves = sorted(
        tuple(int(n) for n in re.findall(r"(\d+)% → (\d+)% on", out)[0]) for out, _err in outputs
    )
    # One ran entirely after the other: the second's "old" is the first's "new".
    assert moves in ([(0, 10), (10, 90)], [(0, 90), (90, 10)]), moves
    last = moves[1][1] if moves[0][0] == 0 and moves[1][0] == moves[0][1] else None
    assert percent_now(env) == last


def notes_load(env: Any) -> KeepAliveLoad:
    """Requests from ever new people (no cookie kept): each gets its own bucket of the flag."""
    return KeepAliveLoad(
        "127.0.0.1", env.public(), "/api/notes", connections=4, rate=200, max_seconds=90
    )


RAMP_ANALYSIS = "min_requests = 20\nmax_inconclusive = 2\nsample = 0.5"


def test_a_ramp_whose_on_variant_fails_is_killed_and_a_healthy_one_reaches_100(
    make_environment: Any,
) -> None:
    env = make_environment(ready=20, verify=1, flags=True, analysis=RAMP_ANALYSIS)
    deploy(env, "9.2.0+flagfails")
    ramp = ("flag-ramp", "--env", env.name, FLAG, "--stages", "25,50,100", "--hold", "6")
    with notes_load(env) as load:
        killed = env.cli(*ramp)
    line = refused(killed)
    assert "killed at 0%" in line and "[fail-fast]" in line, line
    assert percent_now(env) == 0
    # Only the on-variant's share failed, and only until the kill.
    assert 0 < load.result.failures < 0.25 * 6 * 200 / 2, load.result.as_dict()
    time.sleep(BOUND)
    with notes_load(env) as load:
        time.sleep(2)
    assert load.result.failures == 0, load.result.as_dict()

    deploy(env, "1.0.0")
    with notes_load(env) as load:
        done = ok(env.cli(*ramp))
    assert "ramp of new-notes-view completed at 100%" in done.stdout, done.stdout
    assert "50%: pass" in done.stdout, done.stdout
    assert load.result.failures == 0, load.result.as_dict()
    assert percent_now(env) == 100
