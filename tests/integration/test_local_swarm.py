"""``scripts/setup --swarm`` (conveyor.localswarm) and the one-node swarm it makes, deployed to.

The quickstart's swarm is the user's (/run/conveyor-swarm, advertised on 127.0.0.1:2377), so
the test makes its own with the same code: its folders under /tmp, its own containerd
namespaces on the machine's containerd, and its dockerd in a network namespace the test made
(where 127.0.0.1 and port 2377 are the namespace's own). The single-node variant of the swarm
tests: the release's images reach the node from this machine's engine, as in the quickstart.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import docker
import pytest

from conveyor import config as config_mod
from conveyor import images
from conveyor.localswarm import Place
from testkit.steps import ok
from testkit.swarm import run_in_netns

# What scripts/setup --swarm runs (machine.run), with the test's place, in the namespace.
SETUP = """
import json, sys
from pathlib import Path
from conveyor import engine, localswarm, machine
fields = json.loads(sys.argv[1])
paths = ("run", "data", "log")
place = localswarm.Place(**{k: Path(v) if k in paths else v for k, v in fields.items()})
localswarm.ensure(machine.Report(say=print), engine.connect(), json.loads(sys.argv[2]), place=place)
"""


def set_up(netns: str, place: Place, wanted: list[str]) -> str:
    """Run localswarm.ensure as setup does; what it reported."""
    fields = {k: os.fspath(v) if isinstance(v, Path) else v for k, v in asdict(place).items()}
    done = run_in_netns(
        netns, [sys.executable, "-c", SETUP, json.dumps(fields), json.dumps(wanted)], timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def version_at(netns: str, port: int) -> str:
    fetch = (
        "import sys, urllib.request; "
        "print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())"
    )
    answer = run_in_netns(
        netns, [sys.executable, "-c", fetch, f"http://127.0.0.1:{port}/api/version"]
    )
    assert answer.returncode == 0, answer.stderr[-300:]
    return str(json.loads(answer.stdout)["version"])


@pytest.fixture
def local_place() -> Iterator[tuple[str, Place]]:
    """A network namespace and a Place in a short /tmp folder (a socket path must fit in 108
    bytes); afterwards its services removed, its dockerd stopped, everything deleted."""
    tag = secrets.token_hex(3)
    netns = f"cvl{tag}"
    folder = Path(tempfile.mkdtemp(prefix=f"cvl{tag}-"))
    place = Place(
        run=folder / "run",
        data=folder / "data",
        log=folder / "dockerd.log",
        containerd_namespace=f"conveyor-test-swarm-{tag}",
    )
    try:
        subprocess.run(["ip", "netns", "add", netns], check=True)
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        yield netns, place
    finally:
        remove(netns, place, folder)


def remove(netns: str, place: Place, folder: Path) -> None:
    with contextlib.suppress(Exception):
        client = docker.DockerClient(base_url=place.endpoint, timeout=30)
        for service in client.services.list():
            service.remove()
        client.swarm.leave(force=True)
    # Its dockerd, found by its socket (a pid file may not have been written yet).
    found = subprocess.run(
        ["pgrep", "-f", f"dockerd -H {place.endpoint} "],
        check=False,
        capture_output=True,
        text=True,
    )
    for pid in map(int, found.stdout.split()):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    for namespace in (place.containerd_namespace, f"{place.containerd_namespace}-plugins"):
        subprocess.run(["ctr", "namespaces", "remove", namespace], check=False, capture_output=True)
    mounts = Path("/proc/mounts").read_text().split("\n")
    for mount in sorted({m.split()[1] for m in mounts if f" {folder}/" in m}, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
    subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


def test_setup_swarm_makes_a_one_node_swarm_that_a_deploy_serves_on(
    local_place: tuple[str, Place], make_environment: Any, docker_client: Any
) -> None:
    netns, place = local_place
    env = make_environment(
        hosts=[{"name": "local1", "docker": place.endpoint, "access": "exec"}],
        engine="swarm",
        ready=30,
        verify=1,
    )
    config = config_mod.load(env.config_path)
    base = images.resolve_base_image(docker_client, config)
    images.build_router_image(config, docker_client)  # as the staging deploy left it

    first = set_up(netns, place, [base])
    assert f"started the swarm's dockerd at {place.endpoint}" in first, first
    assert "made " in first and "a one-node swarm (advertising 127.0.0.1)" in first, first
    assert f"copied {base} to the local swarm" in first, first
    again = set_up(netns, place, [base])
    assert "did " not in again and again.count("skipped") == 3, again

    deployed = ok(env.cli("deploy", "--env", env.name, "--version", "1.0.0"))
    assert "local1: copying the router image from this machine" in deployed.stdout
    assert version_at(netns, env.public()) == "1.0.0", deployed.stdout
    ok(env.cli("deploy", "--env", env.name, "--version", "2.0.0"))
    assert version_at(netns, env.public()) == "2.0.0"
    status = json.loads(ok(env.cli("status", "--env", env.name, "--json")).stdout)
    assert status["live_version"] == "2.0.0"
    assert [(h["node"]["role"], h["serving"]) for h in status["hosts"]] == [("manager", True)]
