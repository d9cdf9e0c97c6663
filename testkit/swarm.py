"""A real Docker Swarm on one machine: each node a dockerd in its own network namespace.

The nodes are the tests' own hosts (ENVIRONMENT.md's recipe): a namespace per node with one
interface, ``eth0``, on a private switch (a bridge in a namespace of its own), addresses in
198.18.0.0/24, the benchmarking range. Nothing here has a route to or from the machine's own
network, so traffic to a node's address never leaves the machine; the root namespace cannot
reach the nodes either, so whatever talks to a node runs inside a namespace
(:meth:`Cluster.run_in`). Each node's dockerd and containerd run in its namespace, so a
``--network host`` task listens on that node's address, as on a real host.

Swarm mode and ``live-restore`` do not mix (DECISIONS): the nodes run without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors

from testkit.dockerd import Dockerd
from testkit.registry import write_config as registry_config

ROOT = Path(__file__).resolve().parents[1]
SUBNET = "198.18.0"
SWARM_PORT = 2377
# The registry in the switch's namespace: every node reaches it on the switch's address.
REGISTRY_PORT = 5000
# The nodes' heartbeat to the managers (Swarm's default is 5 s): a lost node is marked down
# after about three of them, ~3 s, not ~15 (the main swarm test waits for it).
HEARTBEAT_SECONDS = 1


class SwarmFailed(RuntimeError):
    pass


@dataclass
class Node:
    name: str
    address: str
    netns: str
    daemon: Dockerd

    @property
    def client(self) -> Any:
        return self.daemon.client


@dataclass
class Cluster:
    """``size`` nodes, the first the manager; :meth:`create` makes it, :meth:`remove` undoes
    everything (namespaces, links, daemons, their folders), also after a failed create."""

    size: int
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    nodes: list[Node] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    # What load_images put on every node, in the order asked.
    images: list[str] = field(default_factory=list)
    registry_process: subprocess.Popen[bytes] | None = None
    # The data root every node's daemon starts as a clone of (testkit.dockerd.seed).
    seed: Path | None = None

    @property
    def by_address(self) -> Path:
        """A folder where each node's engine socket is also found by the node's address."""
        return Path(tempfile.gettempdir()) / f"cvs{self.tag}-nodes"

    @property
    def other_nodes_docker(self) -> str:
        """deploy.toml's ``other_nodes.docker`` for these nodes: their sockets by address."""
        return f"unix://{self.by_address}/{{address}}.sock"

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    @property
    def switch(self) -> str:
        return f"cvs{self.tag}-sw"

    @property
    def client_address(self) -> str:
        """The switch's own address: from its namespace every node is one hop away (where
        load and probes that spread across the nodes run)."""
        return f"{SUBNET}.254"

    @property
    def registry(self) -> str:
        """The address of the registry :meth:`start_registry` runs, as the nodes reach it (a
        plain-HTTP one: every node's dockerd is told to trust it)."""
        return f"{self.client_address}:{REGISTRY_PORT}"

    def create(self, *, timeout: float = 60.0) -> Cluster:
        self._make_namespace(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        ip("-n", self.switch, "addr", "add", f"{self.client_address}/24", "dev", "br0")
        for index in range(1, self.size + 1):
            self.nodes.append(self._make_node(index, timeout))
        self._form_swarm()
        self.wait_ready(timeout)
        return self

    def _make_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def _make_node(self, index: int, timeout: float, *, seeded: bool = True) -> Node:
        name = f"n{index}"
        netns = f"cvs{self.tag}-{name}"
        self._make_namespace(netns)
        # Made in the root namespace (short unique names), then moved: one end becomes the
        # node's eth0, the other a port of the switch's bridge.
        inside, port = f"cv{self.tag}{name}a", f"cv{self.tag}{name}b"
        ip("link", "add", inside, "type", "veth", "peer", "name", port)
        ip("link", "set", inside, "netns", netns)
        ip("link", "set", port, "netns", self.switch)
        ip("-n", netns, "link", "set", inside, "name", "eth0")
        address = f"{SUBNET}.{index}"
        ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", netns, "link", "set", "eth0", "up")
        ip("-n", self.switch, "link", "set", port, "master", "br0")
        ip("-n", self.switch, "link", "set", port, "up")
        daemon = Dockerd(
            live_restore=False,
            prefix=f"cvs{self.tag}{name}",
            netns=netns,
            extra_args=("--insecure-registry", self.registry),
            seed=self.seed if seeded else None,
        )
        node = Node(name, address, netns, daemon)
        daemon.start(timeout=timeout)
        self.by_address.mkdir(exist_ok=True)
        (self.by_address / f"{address}.sock").symlink_to(daemon.socket)
        return node

    def _form_swarm(self) -> None:
        manager = self.manager
        manager.client.swarm.init(
            advertise_addr=manager.address,
            listen_addr=f"{manager.address}:{SWARM_PORT}",
            dispatcher_heartbeat_period=HEARTBEAT_SECONDS * 1_000_000_000,
        )
        token = manager.client.swarm.attrs["JoinTokens"]["Worker"]
        for node in self.nodes[1:]:
            node.client.swarm.join(
                remote_addrs=[f"{manager.address}:{SWARM_PORT}"],
                join_token=token,
                advertise_addr=node.address,
                listen_addr=f"{node.address}:{SWARM_PORT}",
            )

    def add_node(
        self, *, timeout: float = 60.0, leave_out: Sequence[str] = (), seeded: bool = True
    ) -> Node:
        """One more node, joined as a worker, with the seed's images (unless not ``seeded``)
        and every image :meth:`load_images` put on the others (it would pull them from a
        registry) but those in ``leave_out``."""
        node = self._make_node(len(self.nodes) + 1, timeout, seeded=seeded)
        self.nodes.append(node)
        self.size += 1
        node.client.swarm.join(
            remote_addrs=[f"{self.manager.address}:{SWARM_PORT}"],
            join_token=self.manager.client.swarm.attrs["JoinTokens"]["Worker"],
            advertise_addr=node.address,
            listen_addr=f"{node.address}:{SWARM_PORT}",
        )
        if loaded := [name for name in self.images if name not in leave_out]:
            self._load(loaded, [node])
        self.wait_ready(timeout)
        return node

    def node_states(self) -> dict[str, tuple[str, str]]:
        """Each node's hostname-independent name (by address) → (state, availability)."""
        by_address = {node.address: node.name for node in self.nodes}
        states = {}
        for entry in self.manager.client.nodes.list():
            address = entry.attrs["Status"].get("Addr", "")
            states[by_address.get(address, address)] = (
                entry.attrs["Status"]["State"],
                entry.attrs["Spec"]["Availability"],
            )
        return states

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = self.node_states()
            if len(states) == self.size and all(s == "ready" for s, _ in states.values()):
                return
            if time.monotonic() > deadline:
                raise SwarmFailed(f"nodes not ready after {timeout:g} s: {states}")
            time.sleep(0.2)

    def load_images(self, names: Sequence[str], *, only: Sequence[Node] = ()) -> None:
        """Copy images from the machine's engine to every node (or ``only`` those, and not to
        a node added later): saved once, loaded on each (the nodes have no registry unless a
        test starts one)."""
        self._load(names, only or self.nodes)
        if not only:
            self.images.extend(names)

    @staticmethod
    def _load(names: Sequence[str], nodes: Sequence[Node]) -> None:
        saved = subprocess.run(["docker", "save", *names], capture_output=True, check=False)
        if saved.returncode != 0:
            raise SwarmFailed(f"docker save {' '.join(names)}: {saved.stderr.decode()[-500:]}")
        for node in nodes:
            node.client.images.load(saved.stdout)

    def run_in(
        self, node: Node, argv: Sequence[str], *, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``node``'s network namespace (how a test reaches its addresses)."""
        return run_in_netns(node.netns, argv, timeout=timeout)

    def start_registry(self, folder: Path, *, timeout: float = 20.0) -> str:
        """Debian's docker-registry in the switch's namespace, its storage in ``folder``,
        stopped by :meth:`remove`; its address."""
        config = registry_config(folder, self.registry)
        self.registry_process = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.switch}", "docker-registry", "serve", config],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while self.get(self.client_address, REGISTRY_PORT, "/v2/", timeout=1).strip() != "{}":
            if self.registry_process.poll() is not None or time.monotonic() > deadline:
                raise SwarmFailed(f"the registry did not start on {self.registry}")
            time.sleep(0.2)
        return self.registry

    def push(self, node: Node, image: str) -> str:
        """Push ``image`` (a tag on ``node``) to the registry from ``node``'s engine; the
        reference by digest that the other nodes pull."""
        repository, tag = image.rsplit(":", 1)
        target = f"{self.registry}/{repository}"
        node.client.images.get(image).tag(target, tag)
        for line in node.client.images.push(target, tag, stream=True, decode=True):
            if "error" in line:
                raise SwarmFailed(f"push {target}:{tag}: {line['error']}")
        digests = node.client.images.get(f"{target}:{tag}").attrs["RepoDigests"]
        return str(next(d for d in digests if d.startswith(f"{target}@")))

    def start_front(
        self, config: Path, port: int, *, timeout: float = 10.0
    ) -> subprocess.Popen[str]:
        """HAProxy with ``config`` (``conveyor front``'s) in the switch's namespace: the front
        load balancer, between clients and every node's router, once it answers on
        127.0.0.1:``port`` there. Stop it with :meth:`stop_front`."""
        checked = subprocess.run(
            ["haproxy", "-c", "-q", "-f", os.fspath(config)],
            capture_output=True,
            text=True,
            check=False,
        )
        if checked.returncode != 0:
            raise SwarmFailed(f"the front's config is refused: {checked.stderr.strip()[-500:]}")
        front = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.switch}", "haproxy", "-db", "-f", config],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + timeout
        while not self.get("127.0.0.1", port, "/api/version", timeout=1).startswith("{"):
            if front.poll() is not None or time.monotonic() > deadline:
                said = self.stop_front(front)
                raise SwarmFailed(f"the front did not answer on port {port}: {said[-500:]}")
            time.sleep(0.2)
        return front

    @staticmethod
    def stop_front(front: subprocess.Popen[str]) -> str:
        """Stop the front; what it said on stderr."""
        front.terminate()
        _out, err = front.communicate(timeout=30)
        return err

    def start_load(
        self,
        port: int,
        path: str,
        *,
        rate: float,
        max_seconds: float = 300,
        targets: Sequence[str] = (),
    ) -> subprocess.Popen[str]:
        """Keep-alive load (``rate`` req/s) on ``port`` of every node (or on ``targets``,
        ``HOST:PORT`` as seen from the switch's namespace), from the switch's namespace, until
        :meth:`stop_load` (or ``max_seconds``)."""
        load = subprocess.Popen(
            [
                "nsenter",
                f"--net=/run/netns/{self.switch}",
                sys.executable,
                "-m",
                "testkit.loadgen",
                *(targets or [f"{node.address}:{port}" for node in self.nodes]),
                f"--path={path}",
                f"--rate={rate}",
                f"--max-seconds={max_seconds}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.fspath(ROOT)},
        )
        if load.stdout is None or load.stdout.readline().strip() != "started":
            load.kill()
            raise SwarmFailed("the load generator did not start")
        return load

    @staticmethod
    def stop_load(load: subprocess.Popen[str]) -> dict[str, Any]:
        """Each target's result (``HOST:PORT`` → testkit.loadgen's JSON)."""
        out, _ = load.communicate(timeout=60)
        return dict(json.loads(out))

    def get(self, address: str, port: int, path: str, *, timeout: float = 3.0) -> str:
        """From the switch's namespace: the body of GET http://address:port/path, or why
        there was none."""
        answer = subprocess.run(
            [
                "nsenter",
                f"--net=/run/netns/{self.switch}",
                sys.executable,
                "-c",
                "import sys, urllib.request; "
                "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))"
                ".read().decode())",
                f"http://{address}:{port}{path}",
                str(timeout),
            ],
            capture_output=True,
            text=True,
            timeout=timeout + 10,
            check=False,
        )
        return answer.stdout if answer.returncode == 0 else answer.stderr.strip()[-200:]

    def versions(self, port: int) -> dict[str, str]:
        """Per node, the version its ``port`` serves on /api/version (or why none)."""
        found = {}
        for node in self.nodes:
            body = self.get(node.address, port, "/api/version")
            try:
                found[node.name] = str(json.loads(body)["version"])
            except (ValueError, KeyError):
                found[node.name] = body[-200:]
        return found

    def remove(self) -> None:
        if self.registry_process is not None:
            self.registry_process.terminate()
            self.registry_process.wait(timeout=10)
        try:
            for node in reversed(self.nodes):
                if node.client is not None:
                    with contextlib.suppress(docker.errors.APIError, OSError):
                        node.client.swarm.leave(force=True)
                node.daemon.remove()
        finally:
            self._remove_namespaces()

    def _remove_namespaces(self) -> None:
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        self.nodes.clear()
        self.namespaces.clear()
        shutil.rmtree(self.by_address, ignore_errors=True)


def run_in_netns(
    netns: str, argv: Sequence[str], *, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in the network namespace ``netns`` (under /run/netns); its output."""
    return subprocess.run(
        ["nsenter", f"--net=/run/netns/{netns}", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SwarmFailed(f"ip {' '.join(args)}: {done.stderr.strip()}")
