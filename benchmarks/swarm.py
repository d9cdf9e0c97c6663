"""Swarm's own rolling update under load, on a real two-node swarm, then conveyor on the same
nodes with the same releases and load (issue 16), and what a killed task costs.

Two dockerd nodes, each in its own network namespace (:mod:`testkit.swarm`), run the reference
API as a global service on the host network (the only networking here: no overlay), so each
node's task listens on that node's address. Keep-alive load goes to both nodes from the
switch's namespace. Each case is one ``docker service update`` with
``--update-failure-action rollback``, timed from the update to Swarm's last word on it
(``UpdateStatus``: completed, or rolled back), and every failed request counted:

- **stop-first** to a healthy new release. With host networking two tasks of a service cannot
  listen on one node's port at once, so this is the only order an update can finish in: each
  node's old task stops before its new one starts, and that node refuses requests in between.
- **start-first** to the same release: the new task starts beside the old one and cannot bind
  the port; Swarm calls the update failed and rolls back, and nothing changes.
- **stop-first to a release that never gets healthy**: each node's old task stops, the new one
  fails its health check, Swarm rolls the update back (its one-level ``rollback``).

Then conveyor deploys 1.0.0 to a swarm environment on the same nodes (each color a global
service, each node's router in front of it) and, under the same load on the routers: deploys
2.0.0, deploys the never-healthy release (its readiness fails, nothing was switched, its
service is removed), and rolls back to the first record, 1.0.0 (a new service from the
ledger's image: no warm color, keep_warm = 0). Time is the command's wall time. Last, n1's
live api task is killed: Swarm starts a new one, and until it is healthy n1's router has no
server for /api (the other color is not running): the row counts what fails until n1 serves
again.

``python -m benchmarks swarm`` prints the table and writes ``reports/bench/swarm.json``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker.types

from benchmarks import environment, report
from conveyor import images
from testkit import sandbox
from testkit.swarm import Cluster

PORT = 8080  # inside the nodes' namespaces: nothing else listens there
SERVICE = "bench-api"
RATE = 100.0  # requests/s on each node
SETTLE = 2.0  # seconds of load before and after each update
HEALTH = (
    "import socket; s = socket.create_connection(('127.0.0.1', {port}), 2); "
    "s.sendall(b'GET /readyz HTTP/1.0\\r\\n\\r\\n'); "
    "raise SystemExit(s.makefile('rb').readline().split()[1][:1] != b'2')"
)
SECONDS = 1_000_000_000
# A live task killed: no other color runs to route around it (DECISIONS: measure the loss).
KILLED_CASE = "conveyor, n1's api task killed"
# (case, command, its arguments after --env): r0001 is the first deploy, 1.0.0.
CONVEYOR_CASES = [
    ("conveyor → 2.0.0", "deploy", ["--version", "2.0.0"]),
    ("conveyor → never healthy", "deploy", ["--version", "9.0.1+notready"]),
    ("conveyor rollback → 1.0.0 (r0001)", "rollback", ["--to", "r0001"]),
]
CASES = [
    # (case, version, update order)
    ("stop-first → 2.0.0", "2.0.0", "stop-first"),
    ("start-first → 1.0.0", "1.0.0", "start-first"),
    ("stop-first → never healthy", "9.0.1+notready", "stop-first"),
]


def image(version: str, name: str = "api") -> str:
    return f"{sandbox.PREFIX}/{name}:{version.replace('+', '-')}"


def update_config(order: str) -> docker.types.UpdateConfig:
    """One node at a time, rolled back at the first failure; a task that runs 5 s counts."""
    return docker.types.UpdateConfig(
        parallelism=1,
        delay=0,
        order=order,
        failure_action="rollback",
        monitor=5 * SECONDS,
        max_failure_ratio=0,
    )


def create_service(cluster: Cluster, version: str) -> Any:
    return cluster.manager.client.services.create(
        image(version),
        name=SERVICE,
        mode=docker.types.ServiceMode("global"),
        networks=["host"],
        env=[f"PORT={PORT}", "HOST=0.0.0.0", "DATABASE_URL=sqlite:////tmp/refapi.db"],
        healthcheck=docker.types.Healthcheck(
            test=["CMD", "python3", "-S", "-c", HEALTH.format(port=PORT)],
            interval=SECONDS,
            timeout=2 * SECONDS,
            retries=3,
            start_period=10 * SECONDS,
        ),
        update_config=update_config("stop-first"),
        rollback_config=update_config("stop-first"),
    )


def node_names(cluster: Cluster) -> dict[str, str]:
    """Swarm's node ID → the cluster's name for the node (n1, n2)."""
    return {node.client.info()["Swarm"]["NodeID"]: node.name for node in cluster.nodes}


def running_versions(cluster: Cluster) -> dict[str, str]:
    """Per node, the image of its running task."""
    names = node_names(cluster)
    service = cluster.manager.client.services.get(SERVICE)
    found = {}
    for task in service.tasks(filters={"desired-state": "running"}):
        if task["Status"]["State"] == "running":
            spec_image = task["Spec"]["ContainerSpec"]["Image"]
            found[names.get(task["NodeID"], task["NodeID"])] = spec_image.split("@")[0]
    return found


def wait_serving(cluster: Cluster, version: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    want = {node.name: image(version) for node in cluster.nodes}
    while (now := running_versions(cluster)) != want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{SERVICE} not running {version} on every node: {now}")
        time.sleep(0.2)


def task_history(cluster: Cluster) -> list[str]:
    """Every task Swarm keeps for the service, oldest first: node, image, state, error."""
    names = node_names(cluster)
    tasks = sorted(
        cluster.manager.client.services.get(SERVICE).tasks(), key=lambda t: t["CreatedAt"]
    )
    return [
        f"{names.get(t['NodeID'], '?')} "
        f"{t['Spec']['ContainerSpec']['Image'].split('@')[0].rpartition(':')[2]} "
        f"{t['Status']['State']}/{t['DesiredState']} {t['Status'].get('Err', '')}".strip()
        for t in tasks
    ]


def update_state(cluster: Cluster) -> str:
    service = cluster.manager.client.services.get(SERVICE)
    return str((service.attrs.get("UpdateStatus") or {}).get("State", ""))


def conveyor_cases(cluster: Cluster, client: Any, dist: Path, folder: Path) -> list[dict[str, Any]]:
    """The same releases through conveyor on the same nodes: 1.0.0 deployed first, then
    each case under load. The nodes cannot reach a package mirror, so the router image is
    built here and copied to them, as a registry would bring it."""
    bench = environment.write_environment(
        folder,
        dist,
        [{"name": n.name, "docker": n.daemon.url, "access": "exec"} for n in cluster.nodes],
        engine="swarm",
        router_bind="0.0.0.0",  # noqa: S104 - inside the nodes' own namespaces
        ready=30,
        verify=2,
        drain=0.5,
    )
    router_image = images.build_router_image(bench.config, client)
    cluster.load_images([images.resolve_base_image(client, bench.config), router_image])
    first = run_conveyor(bench, ["deploy", "--env", bench.name, "--version", "1.0.0"])
    if first != "succeeded":
        raise RuntimeError(f"conveyor's first deploy on the swarm: {first}")
    rows = [
        run_conveyor_case(cluster, bench, case, [verb, "--env", bench.name, *argv])
        for case, verb, argv in CONVEYOR_CASES
    ]
    killed = measured(cluster, bench.ports[0], KILLED_CASE, lambda: kill_task(cluster, bench))
    return [*rows, {**killed, "serving_after": cluster.versions(bench.ports[0])}]


def kill_task(cluster: Cluster, bench: environment.BenchEnvironment) -> str:
    """SIGKILL n1's live api task; done when n1's router serves 1.0.0 again."""
    n1 = cluster.nodes[0]
    labels = [f"conveyor.env={bench.name}", "conveyor.service=api"]
    (task,) = n1.client.containers.list(filters={"label": labels})
    task.kill()
    deadline = time.monotonic() + 120
    while cluster.versions(bench.ports[0])["n1"] != "1.0.0":
        if time.monotonic() > deadline:
            return "not replaced within 120 s"
        time.sleep(0.1)
    return "replaced by Swarm"


def run_case(cluster: Cluster, case: str, version: str, order: str) -> dict[str, Any]:
    """One ``docker service update`` under load, timed to Swarm's last word on it."""

    def update() -> str:
        service = cluster.manager.client.services.get(SERVICE)
        began = time.monotonic()
        service.update(image=image(version), update_config=update_config(order))
        state = ""
        while state not in ("completed", "rollback_completed", "paused", "rollback_paused"):
            if time.monotonic() - began > 300:
                return f"still {state or 'updating'} after 300 s"
            time.sleep(0.2)
            state = update_state(cluster)
        return state

    row = measured(cluster, PORT, case, update)
    return {
        **row,
        "tasks": task_history(cluster),
        "order": order,
        "to": version,
        "serving_after": running_versions(cluster),
    }


def run_conveyor_case(
    cluster: Cluster, bench: environment.BenchEnvironment, case: str, argv: list[str]
) -> dict[str, Any]:
    """One conveyor command on the swarm environment under the same load, on its routers."""
    port = bench.ports[0]
    row = measured(cluster, port, case, lambda: run_conveyor(bench, argv))
    return {**row, "command": " ".join(argv), "serving_after": cluster.versions(port)}


def run_conveyor(bench: environment.BenchEnvironment, argv: list[str]) -> str:
    """``python -m conveyor --config … ARGV``: "succeeded", or its last line."""
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "--config", str(bench.path), *argv],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode == 0:
        return "succeeded"
    last = (done.stderr.strip().splitlines() or ["?"])[-1]
    phase = re.search(r"failed in phase '(\w+)'", last)
    return f"failed in {phase.group(1)}" if phase else f"failed: {last[:200]}"


def measured(cluster: Cluster, port: int, case: str, act: Callable[[], str]) -> dict[str, Any]:
    """Load on every node's ``port``, SETTLE seconds before and after ``act``; what failed,
    when, and how long ``act`` took (its return value is the outcome)."""
    load = cluster.start_load(port, "/api/version", rate=RATE, max_seconds=600)
    time.sleep(SETTLE)
    began = time.monotonic()
    outcome = act()
    seconds = time.monotonic() - began
    time.sleep(SETTLE)
    results = cluster.stop_load(load)
    errors: dict[str, int] = {}
    for result in results.values():
        for error, count in result["errors"].items():
            errors[error] = errors.get(error, 0) + count
    node_of = {f"{node.address}:{port}": node.name for node in cluster.nodes}
    return {
        "case": case,
        "requests": sum(r["requests"] for r in results.values()),
        "failed": sum(r["failures"] for r in results.values()),
        "errors": errors,
        "failing_from_to_seconds": {
            node_of[target]: [
                round(result["failure_times"][0] + result["started"] - began, 2),
                round(result["failure_times"][-1] + result["started"] - began, 2),
            ]
            for target, result in results.items()
            if result["failure_times"]
        },
        "update_seconds": round(seconds, 2),
        "outcome": outcome,
    }


def main(argv: list[str] | None = None) -> None:
    client = docker.from_env()
    cluster = Cluster(2)
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-swarm-") as tmp:
        releases = environment.build(client, Path(tmp))
        try:
            for version in ("1.0.0", "2.0.0"):
                releases.derive(version)
            releases.derive("9.0.1+notready", fault="not-ready")
            cluster.create()
            versions = ("1.0.0", "2.0.0", "9.0.1+notready")
            cluster.load_images([image(v, name) for v in versions for name in ("api", "web")])
            create_service(cluster, "1.0.0")
            wait_serving(cluster, "1.0.0")
            rows = [run_case(cluster, *case) for case in CASES]
            cluster.manager.client.services.get(SERVICE).remove()
            rows += conveyor_cases(cluster, client, releases.dist, Path(tmp))
        finally:
            cluster.remove()
            releases.remove()
    print_and_write(rows)


def print_and_write(rows: list[dict[str, Any]]) -> None:
    columns = ["case", "requests", "failed", "update s", "outcome", "serving after"]
    table = [
        [
            row["case"],
            row["requests"],
            row["failed"],
            row["update_seconds"],
            row["outcome"][:40],
            ", ".join(
                f"{n} {v.rpartition(':')[2]}" for n, v in sorted(row["serving_after"].items())
            ),
        ]
        for row in rows
    ]
    title = (
        f"Swarm's own rolling update, then conveyor on Swarm: 2 nodes, global host-network "
        f"services, {RATE:.0f} req/s keep-alive per node"
    )
    print(report.table(title, columns, table))
    path = report.write("swarm", {"rate_per_node": RATE, "cases": rows})
    print(f"wrote {path}")
