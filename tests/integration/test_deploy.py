"""Blue-green deploys against a real dockerd and a real HAProxy router, under real HTTP load."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conveyor import containers, health, locks
from conveyor.operations import Session
from testkit.loadgen import KeepAliveLoad, proof_load
from testkit.steps import ok

ROOT = Path(__file__).resolve().parents[2]
NEVER_READY = "fault injected: not-ready"  # 9.0.1+notready's /readyz, as long as it runs


def deploy(env: Any, version: str, *extra: str, **kwargs: Any) -> Any:
    return env.cli("deploy", "--env", env.name, "--version", version, *extra, **kwargs)


def one_clear_line(result: Any) -> str:
    """A failure ends with one ``conveyor: …`` line and never a traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("conveyor: "), result.stderr
    return last


def version_at(port: int, path: str = "/api/version") -> str | None:
    answer = health.probe("127.0.0.1", port, path)
    return None if answer.body is None else answer.body.get("version")


def status(env: Any) -> dict[str, Any]:
    return json.loads(ok(env.cli("status", "--env", env.name, "--json")).stdout)


def history(env: Any) -> list[dict[str, Any]]:
    return json.loads(ok(env.cli("history", "--env", env.name, "--json")).stdout)


def load_on(port: int, path: str = "/api/version") -> KeepAliveLoad:
    return proof_load(port, path)


@contextmanager
def stranger_on(port: int) -> Iterator[None]:
    """Another program holding a port conveyor wants."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "8")
            self.end_headers()
            self.wfile.write(b"stranger")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def test_first_deploy_then_a_switch_under_load_loses_no_request(make_environment: Any) -> None:
    env = make_environment()
    first = ok(deploy(env, "1.0.0"))
    assert f"http://127.0.0.1:{env.public()}/" in first.stdout
    assert version_at(env.public()) == "1.0.0"
    assert health.probe("127.0.0.1", env.public(), "/").status == 200  # the web UI

    with load_on(env.public()) as load:
        ok(deploy(env, "2.0.0"))
    result = load.result
    assert result.requests > 200, result.as_dict()
    assert result.failures == 0, result.as_dict()
    assert version_at(env.public()) == "2.0.0"

    state = status(env)
    host = state["hosts"][0]
    assert host["live"] == {"api": "green", "web": "green"}
    kept = [c for c in host["containers"] if c["version"] == "1.0.0"]
    assert {c["status"] for c in kept} == {"exited"}, "the old color is stopped but kept"
    assert host["leftovers"] == []
    records = history(env)
    assert [(r["version"], r["outcome"]) for r in records] == [
        ("1.0.0", "succeeded"),
        ("2.0.0", "succeeded"),
    ]
    second = records[1]
    assert second["previous"] == records[0]["id"]
    assert set(second["phases"]) >= {"start", "ready", "smoke", "switch", "verify", "drain"}
    assert second["who"] and second["ended"] > second["started"]
    assert second["services"]["api"]["image_id"].startswith("sha256:")


def test_a_new_route_reloads_the_router_under_load_and_loses_no_request(
    make_environment: Any,
) -> None:
    """deploy.toml moves the web UI from "/" to "/ui": the next deploy reloads HAProxy (a new
    worker takes the sockets) while keep-alive clients keep sending. The old worker answers
    what it was asked and closes each idle connection only with its next answer
    (``idle-close-on-response``): closing it while a request is on the way would fail it."""
    env = make_environment()
    ok(deploy(env, "1.0.0"))
    text = env.config_path.read_text(encoding="utf-8")
    web = f'[environments.{env.name}.services.web]\nimage = "web"\nroute = "/"\n'
    assert web in text
    env.config_path.write_text(text.replace(web, web.replace('"/"', '"/ui"')), encoding="utf-8")
    planned = ok(deploy(env, "2.0.0", "--dry-run"))
    assert "[local] routes or ports changed: reload the router" in planned.stdout, planned.stdout
    with load_on(env.public()) as load:
        done = ok(deploy(env, "2.0.0"))
    assert "routes or ports changed; reloading the router" in done.stdout, done.stdout
    assert load.result.failures == 0, load.result.as_dict()
    assert version_at(env.public()) == "2.0.0", "the api keeps its route"
    # Nothing is at "/" any more: the router itself answers there (it used to answer every
    # route that way once no service was at "/").
    nothing = health.probe("127.0.0.1", env.public(), "/")
    assert (nothing.status, nothing.text) == (404, "no route\n")


def test_a_new_router_image_takes_over_under_load_and_loses_no_request(
    make_environment: Any, docker_client: Any
) -> None:
    """A conveyor upgrade that changes the router image: the next deploy starts the new router
    beside the running one (both bind with SO_REUSEPORT), waits until it listens on every
    port, then soft-stops the old one (SIGUSR1). Keep-alive clients lose nothing."""
    env = make_environment()
    ok(deploy(env, "1.0.0"))
    name = containers.router_container_name(env.name)
    old = docker_client.containers.get(name)
    shipped = ROOT / "docker" / "Dockerfile.router"
    newer = env.config_path.parent / "Dockerfile.router"
    newer.write_text(shipped.read_text() + 'LABEL conveyor.test="a newer router"\n')
    text = env.config_path.read_text(encoding="utf-8")
    assert f'"{shipped}"' in text
    env.config_path.write_text(text.replace(f'"{shipped}"', f'"{newer}"'), encoding="utf-8")
    planned = ok(deploy(env, "2.0.0", "--dry-run"))
    # "build the new router image, start it …" (or, built by an earlier run, "new router image")
    assert "start it beside the running router, then soft-stop the old one" in planned.stdout
    assert docker_client.containers.get(name).id == old.id
    with load_on(env.public()) as load:
        done = ok(deploy(env, "2.0.0"))
    assert "new router image; start it beside the running router" in done.stdout, done.stdout
    assert load.result.failures == 0, load.result.as_dict()
    new = docker_client.containers.get(name)
    assert new.id != old.id and new.image.id != old.image.id
    assert new.image.labels.get("conveyor.test") == "a newer router"
    routers = docker_client.containers.list(
        all=True, filters={"label": [f"conveyor.env={env.name}", "conveyor.role=router"]}
    )
    assert [c.name for c in routers] == [name], "the old router is gone, the new one renamed"
    assert version_at(env.public()) == "2.0.0"

    # Killed after the old router was gone, before the rename: the next command names the new
    # one the router. Killed before the new one started: the next command drops it, softly.
    new.rename(containers.next_router_container_name(env.name))
    ok(deploy(env, "3.0.0"))
    assert docker_client.containers.get(name).id == new.id
    stray = docker_client.containers.create(
        old.image.id,
        name=containers.next_router_container_name(env.name),
        labels={"conveyor.env": env.name, "conveyor.role": "router"},
    )
    env.config_path.write_text(text, encoding="utf-8")  # the shipped router image again
    with load_on(env.public()) as load:
        ok(deploy(env, "1.0.0"))
    assert load.result.failures == 0, load.result.as_dict()
    routers = docker_client.containers.list(
        all=True, filters={"label": [f"conveyor.env={env.name}", "conveyor.role=router"]}
    )
    assert [c.image.id for c in routers] == [old.image.id]
    assert stray.id not in {c.id for c in routers} and routers[0].name == name


def test_manual_rollback_restarts_the_kept_release(make_environment: Any) -> None:
    env = make_environment()
    ok(deploy(env, "1.0.0"))
    ok(deploy(env, "2.0.0"))
    with load_on(env.public()) as load:
        ok(env.cli("rollback", "--env", env.name))
    assert load.result.failures == 0, load.result.as_dict()
    assert version_at(env.public()) == "1.0.0"
    records = history(env)
    rollback = records[-1]
    assert rollback["kind"] == "rollback" and rollback["outcome"] == "succeeded"
    assert rollback["rollback_of"] == records[1]["id"]
    # The kept container of the first release was restarted, not recreated.
    live = [c for c in status(env)["hosts"][0]["containers"] if c["status"] == "running"]
    assert {c["release"] for c in live} == {records[0]["id"]}

    ok(env.cli("rollback", "--env", env.name, "--to", "2.0.0"))
    assert version_at(env.public()) == "2.0.0"
    missing = env.cli("rollback", "--env", env.name, "--to", "7.7.7")
    assert "no verified release '7.7.7'" in one_clear_line(missing)


@pytest.mark.parametrize(
    ("version", "phase", "why"),
    [
        ("9.0.1+notready", "ready", NEVER_READY),
        ("9.0.2+crash", "ready", "exited with code 3"),
        ("9.0.3+failsoon", "verify", "checks failed in the verify window"),
    ],
)
def test_an_unhealthy_release_is_rolled_back_automatically(
    make_environment: Any, version: str, phase: str, why: str
) -> None:
    env = make_environment(ready=20)
    ok(deploy(env, "1.0.0"))
    # 9.0.3+failsoon fails 4 s after it got ready: a 6 s window catches it. 9.0.1+notready
    # fails when the ready timeout ends: 8 s, not 20.
    env.retime(ready=8 if why == NEVER_READY else 20, verify=6)
    with load_on(env.public()) as load:
        failed = deploy(env, version)
    line = one_clear_line(failed)
    assert f"failed in phase '{phase}'" in line and why in line, line
    assert "1.0.0" in line and "still serving" in line
    if phase == "verify":
        # The release failed while live: users saw errors until the verify window caught it.
        # The switch back must come at the first failed check, not at the window's end.
        times = load.result.failure_times
        assert times, "the fault never reached the live route: the test proves nothing"
        assert max(times) - min(times) < 2.0, load.result.as_dict()
    else:
        assert load.result.failures == 0, load.result.as_dict()
    assert version_at(env.public()) == "1.0.0"

    record = history(env)[-1]
    assert record["version"] == version
    assert record["outcome"] == "failed" and record["failed_phase"] == phase
    assert why in record["reason"]
    assert record["logs"], "the new containers' logs are saved"
    assert all(Path(p).is_file() for p in record["logs"])
    state = status(env)
    assert state["hosts"][0]["leftovers"] == [], "the failed color was stopped"
    assert state["live_version"] == "1.0.0"


def test_a_failed_release_after_switch_puts_traffic_back(make_environment: Any) -> None:
    env = make_environment(ready=20)
    ok(deploy(env, "1.0.0"))
    env.retime(verify=6)  # 9.0.3+failsoon fails 4 s after it got ready
    failed = deploy(env, "9.0.3+failsoon")
    one_clear_line(failed)
    assert "switching traffic back" in failed.stdout
    assert status(env)["hosts"][0]["live"] == {"api": "blue", "web": "blue"}


def test_lock_contention_waits_or_says_who_holds_it(make_environment: Any) -> None:
    env = make_environment()
    ok(deploy(env, "1.0.0"))
    session = Session(env.config, env.name)
    holder = locks.EnvironmentLock(
        session.primary.client, env.name, session.router_image or "", stale_after=30
    )
    holder.acquire("alice@example.com", "2.0.0", "hotfix in progress")
    try:
        refused = deploy(env, "2.0.0")
        line = one_clear_line(refused)
        assert "is locked by alice@example.com" in line and "hotfix in progress" in line
        assert "invoke unlock" in line
        waiting = env.cli_running(
            "deploy", "--env", env.name, "--version", "2.0.0", "--lock-wait", "60"
        )
        assert waiting.poll() is None
    finally:
        holder.release()
    _out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert version_at(env.public()) == "2.0.0"


def test_a_dead_holders_lock_is_broken_and_audited(
    make_environment: Any, docker_client: Any
) -> None:
    env = make_environment()
    ok(deploy(env, "1.0.0"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    session = Session(env.config, env.name)
    docker_client.containers.create(
        session.router_image,
        ["true"],
        name=locks.lock_name(env.name),
        labels={
            "conveyor.env": env.name,
            "conveyor.role": "lock",
            "conveyor.lock.owner": "crashed-ci",
            "conveyor.lock.host": os.uname().nodename,
            "conveyor.lock.pid": str(dead.pid),
            "conveyor.lock.since": "1",
            "conveyor.lock.version": "1.5.0",
        },
    )
    result = ok(deploy(env, "2.0.0"))
    assert "breaking the stale lock of crashed-ci" in result.stderr
    events = session.ledger.audit_events()
    assert [e["kind"] for e in events] == ["lock-broken"]
    assert "is gone" in events[0]["why"]


def test_unlock_removes_a_lock_and_records_it(make_environment: Any) -> None:
    env = make_environment()
    ok(deploy(env, "1.0.0"))
    session = Session(env.config, env.name)
    holder = locks.EnvironmentLock(
        session.primary.client, env.name, session.router_image or "", stale_after=30
    )
    holder.acquire("bob", "2.0.0", "stuck")
    holder._stop.set()  # a holder that stopped beating; its heartbeat is still fresh
    assert "held by bob" in ok(env.cli("status", "--env", env.name)).stdout
    # Its process (this one) is alive, so only --force removes it (test_locks_and_secrets.py).
    result = ok(env.cli("unlock", "--env", env.name, "--force"))
    assert "held by bob" in result.stdout
    assert session.read_lock() is None
    assert [e["kind"] for e in session.ledger.audit_events()] == ["unlock"]
    assert "is not locked" in ok(env.cli("unlock", "--env", env.name)).stdout


def test_two_hosts_a_failure_on_the_second_switches_the_first_back(
    make_environment: Any, second_engine: tuple[str, Any], docker_client: Any
) -> None:
    socket_url, client2 = second_engine
    env = make_environment(
        hosts=[
            {"name": "h1", "docker": "local", "port_offset": 0},
            {"name": "h2", "docker": socket_url, "port_offset": 1000},
        ],
        offsets=(0, 1000),
    )
    make_environment.clients.append(client2)
    ok(deploy(env, "1.0.0"))
    assert version_at(env.public(0)) == "1.0.0"
    assert version_at(env.public(1000)) == "1.0.0"

    with stranger_on(env.service_port("api", "green", 1000)), load_on(env.public(0)) as load:
        failed = deploy(env, "2.0.0")
    line = one_clear_line(failed)
    assert "failed in phase 'start'" in line and "h2" in line and "in use" in line
    assert "h1: switching traffic back" in failed.stdout
    assert load.result.failures == 0, load.result.as_dict()
    assert version_at(env.public(0)) == "1.0.0", "h1 was switched back"
    assert version_at(env.public(1000)) == "1.0.0"

    ok(deploy(env, "2.0.0"))
    assert version_at(env.public(0)) == "2.0.0"
    assert version_at(env.public(1000)) == "2.0.0"
    assert {h["name"]: h["live"]["api"] for h in status(env)["hosts"]} == {
        "h1": "green",
        "h2": "green",
    }


def test_status_and_history_read_from_a_second_checkout(
    make_environment: Any, tmp_path: Path
) -> None:
    env = make_environment()
    ok(deploy(env, "1.0.0"))
    clone = tmp_path / "second-checkout"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    (clone / "deploy.toml").write_text(env.config_path.read_text())
    result = subprocess.run(
        ["python", "-m", "conveyor", "history", "--env", env.name, "--json"],
        cwd=clone,
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "CONVEYOR_CONFIG"},
    )
    records = json.loads(result.stdout)
    assert [(r["version"], r["outcome"]) for r in records] == [("1.0.0", "succeeded")]
    result = subprocess.run(
        ["python", "-m", "conveyor", "status", "--env", env.name, "--json"],
        cwd=clone,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout)["live_version"] == "1.0.0"


def test_bad_input_gets_one_line_and_nothing_changes(make_environment: Any, tmp_path: Path) -> None:
    env = make_environment()
    ok(deploy(env, "1.0.0"))
    before = history(env)

    typo = env.cli("deploy", "--env", env.name[:-1] + "x", "--version", "2.0.0")
    assert f"did you mean '{env.name}'" in one_clear_line(typo)
    assert "no artifacts for 4.0.4" in one_clear_line(deploy(env, "4.0.4"))

    tampered = env.dist / "2.0.0" / "NOTES.txt"
    original = tampered.read_bytes()
    tampered.write_bytes(bytes([original[0] ^ 0x01]) + original[1:])
    try:
        assert "NOTES.txt: sha256" in one_clear_line(deploy(env, "2.0.0"))
    finally:
        tampered.write_bytes(original)

    with stranger_on(env.service_port("api", "green")):
        line = one_clear_line(deploy(env, "2.0.0"))
    assert "port" in line and "in use by another process" in line

    plan = ok(deploy(env, "2.0.0", "--dry-run"))
    assert "Dry run" in plan.stdout and f":{env.service_port('api', 'green')}" in plan.stdout
    assert "switch traffic: api blue → green" in plan.stdout

    assert version_at(env.public()) == "1.0.0"
    after = history(env)
    assert [r["id"] for r in after[: len(before)]] == [r["id"] for r in before]
    assert [r["outcome"] for r in after[len(before) :]] == ["failed"], "only the port clash ran"

    dead = env.config_path.read_text().replace(
        'docker = "local"', 'docker = "unix:///nonexistent.sock"'
    )
    broken = tmp_path / "dead.toml"
    broken.write_text(dead)
    result = subprocess.run(
        ["python", "-m", "conveyor", "--config", str(broken), "status", "--env", env.name],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "no Docker engine at unix:///nonexistent.sock" in one_clear_line(result)
