"""conveyor on a real two-node Docker Swarm (issue 16): each color a global Swarm service.

The nodes are dockerds in their own network namespaces (testkit.swarm); conveyor reaches each
on its socket, its router and probes through exec (nothing in the machine's namespace can reach
a node's address). Load runs from the switch's namespace on both nodes' routers at once.
"""

from __future__ import annotations

import json
import time
from typing import Any

from testkit.steps import ok
from testkit.swarm import Cluster, Node

VERSIONS = ("1.0.0", "2.0.0", "9.0.1+notready")


def swarm_environment(cluster: Cluster, make_environment: Any, test_releases: Any) -> Any:
    for version in VERSIONS:
        test_releases.make(version)
    # The nodes have no registry here: the releases' images are copied onto each, and the
    # services name them by image ID (a registry digest, where there is one).
    tags = [v.replace("+", "-") for v in VERSIONS]
    cluster.load_images([f"conveyor-test/{name}:{tag}" for tag in tags for name in ("api", "web")])
    return make_environment(
        hosts=[{"name": n.name, "docker": n.daemon.url, "access": "exec"} for n in cluster.nodes],
        engine="swarm",
        # A front load balancer reaches each node's router on the node's address.
        router_bind="0.0.0.0",  # noqa: S104 - inside the node's own namespace
    )


def versions_served(cluster: Cluster, env: Any) -> dict[str, str]:
    """Per node, the version its router serves on /api/version (or why none)."""
    served = {}
    for node in cluster.nodes:
        body = cluster.get(node.address, env.public(), "/api/version")
        try:
            served[node.name] = json.loads(body)["version"]
        except (ValueError, KeyError):
            served[node.name] = body
    return served


def color_services(cluster: Cluster, env: Any) -> dict[str, str]:
    """The environment's Swarm services: name → the version its spec carries."""
    services = cluster.manager.client.services.list(filters={"label": f"conveyor.env={env.name}"})
    return {s.name: s.attrs["Spec"]["Labels"]["conveyor.version"] for s in services}


def set_availability(cluster: Cluster, node: Node, availability: str) -> None:
    entry = next(
        n
        for n in cluster.manager.client.nodes.list()
        if n.attrs["Status"].get("Addr") == node.address
    )
    spec = entry.attrs["Spec"]
    entry.update({**spec, "Availability": availability})


def test_deploys_and_rollbacks_run_every_node_on_swarm_services_without_a_failed_request(
    swarm_cluster: Cluster, make_environment: Any, test_releases: Any
) -> None:
    cluster = swarm_cluster
    env = swarm_environment(cluster, make_environment, test_releases)
    ok(env.cli("deploy", "--env", env.name, "--version", "1.0.0"))
    assert versions_served(cluster, env) == {"n1": "1.0.0", "n2": "1.0.0"}
    assert set(color_services(cluster, env).values()) == {"1.0.0"}

    load = cluster.start_load(env.public(), "/api/version", rate=50, max_seconds=240)
    try:
        new = ok(env.cli("deploy", "--env", env.name, "--version", "2.0.0"))
        assert versions_served(cluster, env) == {"n1": "2.0.0", "n2": "2.0.0"}
        failed = env.cli("deploy", "--env", env.name, "--version", "9.0.1+notready")
        assert failed.returncode != 0, failed.stdout
        assert "Traceback" not in failed.stderr, failed.stderr
        assert versions_served(cluster, env) == {"n1": "2.0.0", "n2": "2.0.0"}
        records = json.loads(ok(env.cli("history", "--env", env.name, "--json")).stdout)
        first = next(r for r in records if r["version"] == "1.0.0")
        back = ok(env.cli("rollback", "--env", env.name, "--to", first["id"]))
    finally:
        results = cluster.stop_load(load)

    assert "n1: api@" in new.stdout and "n2: api@" in new.stdout, new.stdout
    assert "not ready" in failed.stderr or "ready" in failed.stderr, failed.stderr
    assert "switching traffic back" not in failed.stdout, "it never switched"
    assert versions_served(cluster, env) == {"n1": "1.0.0", "n2": "1.0.0"}, back.stdout
    for target, result in results.items():
        assert result["requests"] > 100, (target, result)
        assert result["failures"] == 0, (target, result)
    # Only the live release runs: the old colors' services and the unhealthy one are gone.
    assert set(color_services(cluster, env).values()) == {"1.0.0"}

    status = json.loads(ok(env.cli("status", "--env", env.name, "--json")).stdout)
    assert status["live_version"] == "1.0.0"
    assert {h["name"]: h["live"]["api"] for h in status["hosts"]} == {"n1": "blue", "n2": "blue"}

    assert (
        "swarm manager 198.18.0.1 ready, active — serves"
        in ok(env.cli("status", "--env", env.name)).stdout
    )

    # A drained node runs no task: status says it does not serve, and a deploy is refused
    # before anything changes. Made active again, it gets the live release's tasks from Swarm,
    # and its router, which kept the live color, serves it again.
    n2 = cluster.nodes[1]
    set_availability(cluster, n2, "drain")
    deadline = time.monotonic() + 60
    while versions_served(cluster, env)["n2"] == "1.0.0":  # its router answers 503 then
        assert time.monotonic() < deadline, "n2 still serves after its drain"
        time.sleep(0.5)
    drained = json.loads(ok(env.cli("status", "--env", env.name, "--json")).stdout)
    assert [(h["node"]["availability"], h["serving"]) for h in drained["hosts"]] == [
        ("active", True),
        ("drain", False),
    ]
    refused = env.cli("deploy", "--env", env.name, "--version", "2.0.0")
    assert refused.returncode != 0
    assert "swarm node n2 is ready, drain" in refused.stderr.strip().splitlines()[-1]
    assert versions_served(cluster, env)["n1"] == "1.0.0"
    set_availability(cluster, n2, "active")
    deadline = time.monotonic() + 60
    while versions_served(cluster, env) != {"n1": "1.0.0", "n2": "1.0.0"}:
        assert time.monotonic() < deadline, versions_served(cluster, env)
        time.sleep(0.5)
