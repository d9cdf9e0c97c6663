"""The multi-node swarm that issue 16's tests run on: real nodes on one machine.

Each node is a dockerd in its own network namespace, on a private switch (testkit.swarm).
These checks hold what those tests will stand on: the nodes form one swarm, a global
``--network host`` service answers on every node's own address (and one node reaches
another, as a front load balancer will), and removing the cluster leaves nothing behind on
the machine — no namespace, link, daemon or mount.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import docker.types

from conveyor import images
from conveyor.config import Config
from testkit.swarm import Cluster, Node

PORT = 8080  # inside the nodes' own namespaces: nothing on the machine uses it there


def fetch(cluster: Cluster, node: Node, address: str) -> str:
    """From inside ``node``: the status of GET http://address:PORT/, or why there was none."""
    answer = cluster.run_in(
        node,
        [
            "python3",
            "-c",
            "import urllib.request; "
            f"print(urllib.request.urlopen('http://{address}:{PORT}/', timeout=2).status)",
        ],
    )
    return answer.stdout.strip() or answer.stderr.strip().splitlines()[-1]


def output(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def served_everywhere(cluster: Cluster, within: float) -> dict[str, str]:
    deadline = time.monotonic() + within
    while True:
        answers = {node.name: fetch(cluster, node, node.address) for node in cluster.nodes}
        if set(answers.values()) == {"200"} or time.monotonic() > deadline:
            return answers
        time.sleep(0.5)


def test_two_nodes_form_a_swarm_and_a_global_host_service_answers_on_each(
    swarm_cluster: Cluster, docker_client: Any, repo_config: Config
) -> None:
    cluster = swarm_cluster
    assert cluster.node_states() == {"n1": ("ready", "active"), "n2": ("ready", "active")}
    base = images.resolve_base_image(docker_client, repo_config)  # every node has it (the seed)
    cluster.manager.client.services.create(
        base,
        ["python3", "-m", "http.server", str(PORT)],  # every address of the node's namespace
        name="answer",
        mode=docker.types.ServiceMode("global"),
        networks=["host"],
    )
    assert served_everywhere(cluster, within=60) == {"n1": "200", "n2": "200"}
    n1, n2 = cluster.nodes
    assert fetch(cluster, n1, n2.address) == "200", "node to node, as a front balancer goes"

    tag, folders = cluster.tag, [node.daemon.folder for node in cluster.nodes]
    cluster.remove()
    assert f"cvs{tag}" not in output("ip", "netns", "list")
    assert f"cv{tag}" not in output("ip", "-o", "link")
    assert output("pgrep", "-af", f"cvs{tag}") == "", "a node's dockerd or containerd is left"
    mounts = Path("/proc/mounts").read_text()
    assert not any(str(folder) in mounts for folder in folders)
    assert not any(folder.exists() for folder in folders)
