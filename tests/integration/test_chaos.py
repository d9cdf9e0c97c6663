"""Chaos under load (issue 13, item 4): the router killed or restarted, the Docker daemon
restarted (with and without live-restore) or killed in every phase of a deploy and a rollback,
and a host lost mid-deploy. Each case is measured with a keep-alive load on 127.0.0.1, and its
figures (failed requests, seconds until served again) are printed at the end of the run.

Daemon chaos runs on the tests' own dockerd (``second_dockerd``), never the user's engine.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from conveyor import images
from conveyor.terms import PHASES
from testkit.dockerd import Dockerd
from testkit.steps import load_on, ok, one_line, served

# The phases a blue-green executor announces (canary steps are test_canary's).
TRACED = tuple(p for p in PHASES[PHASES.index("prepare") :] if p != "canary")


def seconds_until_served(port: int, version: str, since: float, limit: float = 30.0) -> float:
    """Seconds from ``since`` until the public route answers ``version`` (inf past ``limit``)."""
    while time.monotonic() - since < limit:
        if served(port) == version:
            return time.monotonic() - since
        time.sleep(0.05)
    return float("inf")


def process_gone(pid: int, within: float) -> bool:
    """Wait until the host has no process ``pid`` (reaped, not only signalled)."""
    deadline = time.monotonic() + within
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def on_engine(make_environment: Any, daemon: Dockerd, local: Any, **timing: Any) -> Any:
    """An environment whose one host is ``daemon``, with the images of 1.0.0 to 3.0.0 on it (as a
    registry pull would put them there)."""
    env = make_environment(hosts=[{"name": "h1", "docker": daemon.url}], **timing)
    make_environment.clients.append(daemon.client)
    for version in ("1.0.0", "2.0.0", "3.0.0"):
        manifest = json.loads((env.dist / version / "manifest.json").read_text(encoding="utf-8"))
        ids = [entry["id"] for entry in manifest["images"].values()]
        for image_id in [i for i in ids if not images.image_present(daemon.client, i)]:
            daemon.client.images.load(b"".join(local.images.get(image_id).save(named=True)))
    return env


def describe(client: Any, env: str) -> list[str]:
    found = client.containers.list(all=True, filters={"label": f"conveyor.env={env}"})
    return [f"{c.name}: {c.status} {c.attrs['State'].get('Health', {})}" for c in found]


def running_ids(client: Any, env: str) -> dict[str, str]:
    found = client.containers.list(filters={"label": f"conveyor.env={env}"})
    return {c.name: c.id for c in found}


def test_the_router_killed_or_restarted_comes_back_by_itself_on_the_live_color(
    make_environment: Any, docker_client: Any, chaos_figures: Any
) -> None:
    env = make_environment()
    ok(env.cli("deploy", "--env", env.name, "--version", "1.0.0"))
    ok(env.cli("deploy", "--env", env.name, "--version", "2.0.0"))  # live on green now
    router = docker_client.containers.get(f"conveyor-{env.name}-router")
    port = env.public()

    # HAProxy dies (a crash, the OOM killer): the restart policy brings it back, same colors.
    with load_on(port) as load:
        time.sleep(1)
        began = time.monotonic()
        pid = router.attrs["State"]["Pid"]
        os.kill(pid, signal.SIGKILL)
        # Served again counts only once the killed HAProxy is gone: an answer in between
        # came from the dying process (a CI run measured 0.0 s that way).
        gone = process_gone(pid, within=10)
        back = seconds_until_served(port, "2.0.0", began)
        time.sleep(1)
    killed = load.result
    router.reload()
    assert gone and router.attrs["RestartCount"] >= 1
    assert back < 15, "the router did not come back by itself on the live color"
    assert killed.requests - killed.failures > 0
    chaos_figures("router SIGKILL", killed, back_seconds=back)

    # `docker restart` of the router: stopped and started by the engine, same colors.
    with load_on(port) as load:
        time.sleep(1)
        began = time.monotonic()
        router.restart(timeout=5)
        back = seconds_until_served(port, "2.0.0", began)
        time.sleep(1)
    assert back < 15, "a restarted router did not serve the live color again"
    chaos_figures("router docker restart", load.result, back_seconds=back)

    # An operator's `docker stop` is respected: status says "router DOWN" and does not call
    # the live containers leftovers; recover brings it back.
    router.stop()
    text = ok(env.cli("status", "--env", env.name)).stdout
    assert "router DOWN" in text and "LEFTOVER" not in text, text
    assert "invoke recover" in text
    status = json.loads(ok(env.cli("status", "--env", env.name, "--json")).stdout)
    assert status["hosts"][0]["leftovers"] == []
    ok(env.cli("recover", "--env", env.name))
    assert served(port) == "2.0.0"


def test_a_daemon_restart_keeps_serving_with_live_restore_and_without_it_comes_back(
    make_dockerd: Any,  # first: its daemons go after make_environment's teardown used them
    make_environment: Any,
    second_dockerd: Dockerd,
    docker_client: Any,
    chaos_figures: Any,
) -> None:
    daemon = second_dockerd
    env = on_engine(make_environment, daemon, docker_client)
    ok(env.cli("deploy", "--env", env.name, "--version", "1.0.0"))
    port = env.public()
    before = running_ids(daemon.client, env.name)

    # live-restore (what scripts/setup starts dockerd with): the containers never stop.
    with load_on(port) as load:
        time.sleep(1)
        began = time.monotonic()
        daemon.restart()
        restarted = time.monotonic() - began
        time.sleep(1)
    assert load.result.failures == 0, load.result.as_dict()
    assert running_ids(daemon.client, env.name) == before, "the same containers, never stopped"
    chaos_figures("dockerd restart, live-restore", load.result, daemon_seconds=restarted)
    status = json.loads(ok(env.cli("status", "--env", env.name, "--json")).stdout)
    assert status["live_version"] == "1.0.0" and status["disagreements"] == []
    with load_on(port) as load:
        ok(env.cli("deploy", "--env", env.name, "--version", "2.0.0"))
    assert load.result.failures == 0, load.result.as_dict()
    assert served(port) == "2.0.0"

    # Without it, the daemon stops every container on its way down and the restart policy
    # starts them when it is back. What is lost: every request in between.
    bare = make_dockerd(live_restore=False)
    other = on_engine(make_environment, bare, docker_client)
    ok(other.cli("deploy", "--env", other.name, "--version", "1.0.0"))
    with load_on(other.public()) as load:
        time.sleep(1)
        began = time.monotonic()
        bare.restart()
        back = seconds_until_served(other.public(), "1.0.0", began, limit=60)
        time.sleep(1)
    assert back < 60, f"the environment did not come back: {describe(bare.client, other.name)}"
    assert load.result.failures > 0, "without live-restore the containers stop: requests fail"
    chaos_figures("dockerd restart, no live-restore", load.result, back_seconds=back)


# A daemon killed in each phase of a deploy; a rollback (the same executor) before, at and
# after its switch. test_recovery kills the command itself in every phase of both.
DAEMON_KILLS = {"deploy": TRACED, "rollback": ("start", "switch", "verify")}


@pytest.mark.parametrize("command", sorted(DAEMON_KILLS))
def test_the_daemon_killed_in_every_phase_then_the_next_command_converges(
    make_environment: Any,
    second_dockerd: Dockerd,
    docker_client: Any,
    command: str,
    chaos_figures: Any,
    crash: Any,
) -> None:
    """SIGKILL of dockerd (live-restore on) as the command announces each phase: the command
    ends with one line naming the engine, the router keeps serving throughout, and once the
    daemon is back the next command converges and the ledger says what happened."""
    daemon = second_dockerd
    env = on_engine(make_environment, daemon, docker_client, verify=1, drain=0.5)
    port = env.public()
    ok(env.cli("deploy", "--env", env.name, "--version", "1.0.0"))
    live = "1.0.0"
    with load_on(port) as load:
        for phase in DAEMON_KILLS[command]:
            other = next(v for v in ("2.0.0", "3.0.0", "1.0.0") if v != live)
            if command == "rollback":
                ok(env.cli("deploy", "--env", env.name, "--version", other))
                argv: tuple[str, ...] = ("rollback", "--env", env.name)
            else:
                argv = ("deploy", "--env", env.name, "--version", other)
            line = one_line(crash.interrupt_at(env, phase, *argv, act=lambda _: daemon.kill()))
            assert daemon.url in line and "recover" in line, (phase, line)
            daemon.start()
            recovered = ok(env.cli("recover", "--env", env.name))
            status = json.loads(ok(env.cli("status", "--env", env.name, "--json")).stdout)
            assert status["disagreements"] == [] and status["interrupted"] == [], (
                phase,
                recovered.stdout,
            )
            assert status["hosts"][0]["leftovers"] == [], (phase, status)
            live = status["live_version"]
            assert served(port) == live, (phase, status)
    assert load.result.failures == 0, load.result.as_dict()
    # The ledger says what happened to each killed run: closed, never left "running".
    history = json.loads(ok(env.cli("history", "--env", env.name, "--json")).stdout)
    killed = [r for r in history if r["kind"] == command][-len(DAEMON_KILLS[command]) :]
    assert len(killed) == len(DAEMON_KILLS[command]), history
    assert {r["outcome"] for r in killed} <= {"interrupted", "succeeded"}, killed
    chaos_figures(f"dockerd SIGKILL in each {command} phase", load.result)


def test_a_host_lost_mid_deploy_then_both_hosts_end_on_the_same_release(
    make_environment: Any,
    second_dockerd: Dockerd,
    docker_client: Any,
    chaos_figures: Any,
    crash: Any,
) -> None:
    """Two hosts; h2's engine dies during h2's verify, after its router switched. h1 goes
    back at once; h2 (its containers kept by live-restore) is put back by the next command
    once its engine answers. Under load on both hosts, nothing fails."""
    daemon = second_dockerd
    env = make_environment(
        hosts=[
            {"name": "h1", "docker": "local", "port_offset": 0},
            {"name": "h2", "docker": daemon.url, "port_offset": 1000},
        ],
        offsets=(0, 1000),
        verify=2,
        drain=0.5,
    )
    make_environment.clients.append(daemon.client)
    ok(env.cli("deploy", "--env", env.name, "--version", "1.0.0"))
    with load_on(env.public(0)) as load1, load_on(env.public(1000)) as load2:
        argv = ("deploy", "--env", env.name, "--version", "2.0.0")
        line = one_line(
            crash.interrupt_at(env, "verify", *argv, nth=2, act=lambda _: daemon.kill())
        )
        assert "h2" in line and "recover" in line, line
        assert served(env.public(0)) == "1.0.0", "h1 was switched back"
        daemon.start()
        ok(env.cli("recover", "--env", env.name))
        both = (served(env.public(0)), served(env.public(1000)))
    assert both == ("1.0.0", "1.0.0"), both
    assert load1.result.failures == 0, load1.result.as_dict()
    assert load2.result.failures == 0, load2.result.as_dict()
    status = json.loads(ok(env.cli("status", "--env", env.name, "--json")).stdout)
    assert status["disagreements"] == [] and status["interrupted"] == [], status
    assert {h["name"]: h["live"]["api"] for h in status["hosts"]} == {"h1": "blue", "h2": "blue"}
    history = json.loads(ok(env.cli("history", "--env", env.name, "--json")).stdout)
    assert history[-1]["outcome"] == "failed" and "h2" in history[-1]["reason"], history[-1]
    chaos_figures("host h2 lost in its verify", load1.result, h2_failed=load2.result.failures)

    ok(env.cli("deploy", "--env", env.name, "--version", "2.0.0"))
    assert (served(env.public(0)), served(env.public(1000))) == ("2.0.0", "2.0.0")
