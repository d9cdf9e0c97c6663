"""Swarm's own rolling update under load, on a real two-node swarm: the baseline that conveyor
on Swarm (issue 16) is to beat.

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

``python -m benchmarks swarm`` prints the table and writes ``reports/bench/swarm.json``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import docker.types

from benchmarks import environment, report
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
CASES = [
    # (case, version, update order)
    ("stop-first → 2.0.0", "2.0.0", "stop-first"),
    ("start-first → 1.0.0", "1.0.0", "start-first"),
    ("stop-first → never healthy", "9.0.1+notready", "stop-first"),
]


def image(version: str) -> str:
    return f"{sandbox.PREFIX}/api:{version.replace('+', '-')}"


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


def run_case(cluster: Cluster, case: str, version: str, order: str) -> dict[str, Any]:
    load = cluster.start_load(PORT, "/api/version", rate=RATE, max_seconds=600)
    time.sleep(SETTLE)
    service = cluster.manager.client.services.get(SERVICE)
    began = time.monotonic()
    service.update(image=image(version), update_config=update_config(order))
    state = ""
    while state not in ("completed", "rollback_completed", "paused", "rollback_paused"):
        if time.monotonic() - began > 300:
            state = f"still {state or 'updating'} after 300 s"
            break
        time.sleep(0.2)
        state = update_state(cluster)
    seconds = time.monotonic() - began
    time.sleep(SETTLE)
    results = cluster.stop_load(load)
    requests = sum(r["requests"] for r in results.values())
    failed = sum(r["failures"] for r in results.values())
    errors: dict[str, int] = {}
    for result in results.values():
        for error, count in result["errors"].items():
            errors[error] = errors.get(error, 0) + count
    node_of = {f"{node.address}:{PORT}": node.name for node in cluster.nodes}
    windows = {
        node_of[target]: [
            round(result["failure_times"][0] + result["started"] - began, 2),
            round(result["failure_times"][-1] + result["started"] - began, 2),
        ]
        for target, result in results.items()
        if result["failure_times"]
    }
    return {
        "case": case,
        "failing_from_to_seconds": windows,
        "tasks": task_history(cluster),
        "order": order,
        "to": version,
        "requests": requests,
        "failed": failed,
        "errors": errors,
        "update_seconds": round(seconds, 2),
        "outcome": state,
        "serving_after": running_versions(cluster),
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
            cluster.load_images([image(v) for v in ("1.0.0", "2.0.0", "9.0.1+notready")])
            create_service(cluster, "1.0.0")
            wait_serving(cluster, "1.0.0")
            rows = [run_case(cluster, *case) for case in CASES]
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
            row["outcome"],
            ", ".join(
                f"{n} {v.rpartition(':')[2]}" for n, v in sorted(row["serving_after"].items())
            ),
        ]
        for row in rows
    ]
    title = (
        f"Swarm's own rolling update, 2 nodes, global host-network service, "
        f"{RATE:.0f} req/s keep-alive per node"
    )
    print(report.table(title, columns, table))
    path = report.write("swarm", {"rate_per_node": RATE, "cases": rows})
    print(f"wrote {path}")
