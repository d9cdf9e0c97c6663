"""An environment on Docker Swarm: each color of a service is a global Swarm service.

The environment's hosts are the swarm's nodes. The first is a manager: conveyor creates and
removes services through it, and keeps the ledger and the lock on its engine, as on a primary
host; every other manager among the hosts keeps a copy of the ledger (:mod:`conveyor.replicas`).
Every node is also reached on its own engine, because Swarm's API cannot exec on other nodes
and each node's router and health probes sit on that node (DECISIONS): a node is a
:class:`~conveyor.hosts.HostTarget` whose color containers Swarm makes and keeps.

- **A color** is the service ``conveyor-<env>-<service>-<color>-<release>``, global, host
  networking, pinned to the release's registry digest (or its image ID when it has none, on a
  swarm whose nodes hold the image). Its task on each node carries the same ``conveyor.*``
  labels as a host's container, so observe, plan and the ledger read it as they read hosts.
  A node's color "container" is named by the service, since Swarm names each task's.
- **Readiness** is Swarm's: a task with a health check stays ``starting`` until Docker finds it
  healthy, and one that turns unhealthy is replaced; conveyor waits for the task on every node,
  then for its /readyz through that node's router, as on hosts.
- **The router** is one global service too (:mod:`conveyor.swarmrouter`): a node's router is
  its task there, reached through the node's engine like a host's router container.
- **Stopping** a color removes its service on every node at once (Swarm stops each task with
  the stop signal and grace period); Swarm's one-level ``rollback`` is never used: a rollback
  creates the recorded release's service again from the ledger's image.
- A task that Swarm shut down stays listed as an exited container (task history): it is
  Swarm's record, not a kept release, so observe never sees it.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import time
from dataclasses import dataclass, field, replace
from typing import Any

import docker.errors
from docker.types import Healthcheck, Mount, RestartPolicy, SecretReference, ServiceMode

from conveyor import engine, images, placement, router, state, swarmflags, swarmrouter
from conveyor.config import Config, Environment, Host, Service
from conveyor.console import Console
from conveyor.containers import (
    ROLE_SERVICE,
    Container,
    ServiceContainer,
    router_container_name,
    service_container_name,
    service_labels,
    swarm_service_name,
)
from conveyor.errors import ConveyorError, EngineUnavailable
from conveyor.flags import FlagError
from conveyor.hosts import ROUTER_DRAIN_SECONDS, HostTarget
from conveyor.secretfiles import file_secrets
from conveyor.terms import node_condition, takes_tasks

SERVICE_LABEL = "com.docker.swarm.service.name"
# How soon Swarm starts a task again after it exited or turned unhealthy.
RESTART_DELAY_NS = 1_000_000_000
RESTART = RestartPolicy(condition="any", delay=RESTART_DELAY_NS)
# Task containers Swarm is starting or runs; an exited one is task history.
LIVE_STATES = ("created", "running", "restarting")
# While waiting for a task, how often to ask the manager whether the node still takes tasks.
NODE_CHECK_EVERY = 1.0
# Beyond the stop timeout (Swarm's grace period), how long a removed service's task may take.
STOP_MARGIN = 10.0


@dataclass
class SwarmNode(HostTarget):
    """A node of a swarm environment: its own engine (router, probes, task containers) and the
    manager's (the services)."""

    manager: Any = None
    node_id: str = ""
    # Whether this node is a manager (its role as the manager saw it when it was connected).
    is_manager: bool = False
    # Every node of the environment, this one included, in deploy.toml's order.
    peers: list[SwarmNode] = field(default_factory=list, repr=False)
    # Where the router image is pushed (None: no registry); services name it by digest there.
    router_repository: str | None = None

    # --- observation ---------------------------------------------------------------------

    def service_containers(self) -> list[ServiceContainer]:
        """Per color service, its newest live task container on this node, named by the
        service."""
        found = self.client.api.containers(
            all=True,
            filters={"label": [f"conveyor.env={self.env.name}", f"conveyor.role={ROLE_SERVICE}"]},
        )
        newest: dict[str, dict[str, Any]] = {}
        for listing in found:
            service = (listing.get("Labels") or {}).get(SERVICE_LABEL)
            if service is None or listing.get("State") not in LIVE_STATES:
                continue
            if service not in newest or listing["Created"] > newest[service]["Created"]:
                newest[service] = listing
        containers = []
        for service, listing in newest.items():
            container = ServiceContainer.from_listing(listing)
            container.name = service
            containers.append(container)
        return sorted(containers, key=lambda c: c.created)

    def node(self) -> dict[str, str] | None:
        """The manager's view of this node: ready or down, active, paused or drained."""
        return describe_node(self.manager.api.inspect_node(self.node_id), self.env)

    def keeps_state_copy(self) -> bool:
        """Every manager keeps a copy of the ledger, so it survives losing one (DECISIONS)."""
        return self.is_manager

    def preflight(self) -> None:
        """A drained, paused or down node would get no task of the new color: refuse before
        anything changes rather than fail halfway."""
        node = self.node() or {}
        if not takes_tasks(node):
            raise ConveyorError(
                f"swarm node {self.name} is {node_condition(node)} — {_remedy(node)} or take "
                f"it out of deploy.toml's hosts, then deploy again"
            )
        if self is self.peers[0]:
            self._refuse_unlisted_nodes()

    def _refuse_unlisted_nodes(self) -> None:
        """A node that runs the environment's tasks (it joined, or was left out of hosts) but
        that deploy.toml does not list: conveyor cannot reach its router to switch it, so it
        would go on serving the old release, then nothing once that release stops. Refuse
        before anything changes."""
        for attrs, node in _unlisted_nodes(self.manager, self.env, self.peers):
            name = attrs.get("Description", {}).get("Hostname", node["id"])
            raise ConveyorError(
                f"swarm node {name} ({node['address']}) runs {self.env.name}'s tasks but is not "
                f"in deploy.toml's hosts, so its router cannot be switched and would keep the "
                f"old release — add it to hosts with its engine endpoint (or set other_nodes), "
                f"drain it, or leave it out with placement; then run the command again"
            )

    def service_container(self, name: str) -> Container:
        """The task container of the color service ``name`` on this node."""
        listing = self._task_listing(name)
        if listing is None:
            raise docker.errors.NotFound(f"no task of service {name} on node {self.name}")
        container: Container = self.client.containers.get(listing["Id"])
        return container

    def _task_listing(self, service: str, *, live: bool = True) -> dict[str, Any] | None:
        return max(
            self._task_listings(service, live=live), key=lambda c: c["Created"], default=None
        )

    def _task_listings(self, service: str, *, live: bool = True) -> list[dict[str, Any]]:
        """The task containers of ``service`` on this node (only live ones, by default)."""
        found: list[dict[str, Any]] = self.client.api.containers(
            all=True, filters={"label": [f"{SERVICE_LABEL}={service}"]}
        )
        if live:
            found = [c for c in found if c.get("State") in LIVE_STATES]
        return found

    # --- the router: a global service (conveyor.swarmrouter) ---------------------------

    def router_container(self) -> Container | None:
        """This node's router: the router service's newest live task here."""
        listing = self._task_listing(swarmrouter.service_name(self.env.name))
        if listing is None:
            return None
        try:
            container: Container = self.client.containers.get(listing["Id"])
        except docker.errors.NotFound:  # Swarm replaced it meanwhile
            return None
        return container

    def ensure_router(self, live_hint: dict[str, str | None], out: Console) -> bool:
        """The router service as it should be (this router image, these routes), and one
        router of it on this node, answering. A node that takes no tasks (drained, down) runs
        no router: nothing to do there. Returns whether this node's router was started anew.

        The live colors are published only with a new service or task template (from the first
        node that answers, ``live_hint`` when none does); otherwise :meth:`publish_router`
        publishes them once the command has moved traffic."""
        return self._ensure_router(live_hint, out, publish_colors=False)

    def publish_router(self, out: Console) -> None:
        """Publish the colors the routers serve now, so a node that joins serves them too:
        once per environment, by the first node with a router. Each command's publication is
        its own, newer than every node's file, even with the same colors: a node whose router
        was gone when the command switched it back starts its next router on these."""
        publisher = next((n for n in self.peers if n.router_container() is not None), None)
        if publisher is self:
            self._ensure_router({}, out, publish_colors=True)

    def _ensure_router(
        self, live_hint: dict[str, str | None], out: Console, *, publish_colors: bool
    ) -> bool:
        if self.router_image is None:
            raise ConveyorError("router image unknown")
        if not takes_tasks(self.node() or {}):
            return False
        before = self.router_container()
        # The task template does not depend on the colors: they are read only to publish.
        wanted = self._published(live_hint)
        found = swarmrouter.find_service(self.manager, self.env.name)
        restarts = swarmrouter.restarts(found, self.env.name, wanted)
        if found is None or restarts or publish_colors:
            serial = swarmrouter.new_serial() if publish_colors else ""
            wanted = self._published(self._reference_colors(live_hint), serial=serial)
            if restarts:
                for node in self.peers:
                    node._keep_own_colors(wanted.colors)
            swarmrouter.apply(self.manager, self.env, wanted, RESTART, out)
            if found is not None and not restarts:
                return False  # the labels alone: every router runs on as it was
        name = swarmrouter.service_name(self.env.name)
        settled = swarmrouter.settle(
            lambda: self._task_listings(name),
            self.client,
            env=self.env,
            node=self.name,
            wanted=wanted,
            why=lambda: self._task_state(name),
        )
        started = before is None or before.id != settled.id
        if started:
            self._wait_router(out)
        self._retire_container_router()
        return started

    def router_change(self) -> str | None:
        if not takes_tasks(self.node() or {}):
            return None
        wanted = self._published(self._reference_colors({}))
        what = swarmrouter.change(self.manager, self.env.name, wanted)
        # The colors are published after a deploy moved traffic, not before (ensure_router).
        return None if what == swarmrouter.PUBLISH_COLORS else what

    def _reference_colors(self, live_hint: dict[str, str | None]) -> dict[str, str | None]:
        """The colors to publish: the first node's with a router that answers (the
        manager's, as a rule), so every node's call in one command publishes the same."""
        for node in self.peers:
            if node.router_container() is None:
                continue
            with contextlib.suppress(router.RouterError, docker.errors.APIError):
                return node.live_colors()
        return live_hint

    def _published(self, live: dict[str, str | None], *, serial: str = "") -> swarmrouter.Published:
        return swarmrouter.published(
            self.env, self.ports, live, self._router_service_image(), serial=serial
        )

    def _router_service_image(self) -> str:
        """The router image as Swarm services name it (the router's, the flags')."""
        assert self.router_image is not None  # noqa: S101 - the callers checked
        image = self.manager.images.get(self.router_image)
        return images.router_reference(image, self.router_repository)

    def flags_stamp(self, images_with_files: list[str], now: int) -> int:
        """Newer than what each image's flag service publishes, whatever the clock of the
        machine that published it said."""
        try:
            return swarmflags.next_stamp(self.manager, self.env, images_with_files, now)
        except docker.errors.APIError as exc:
            raise FlagError(
                f"{self.env.name}: cannot read the flag services on the manager "
                f"({str(exc)[:160]}); nothing was written — run the command again"
            ) from None

    def publish_flags(self, files: dict[str, bytes], stamp: int) -> None:
        """Each image's flag service writes these files on every node, one that joins too."""
        try:
            swarmflags.publish(self.manager, self.env, self._router_service_image(), files, stamp)
        except docker.errors.APIError as exc:
            raise FlagError(
                f"{self.env.name}: the flag services did not take the new flags "
                f"({str(exc)[:160]}); no node's flags were changed — run the command again"
            ) from None

    def _keep_own_colors(self, mark: str) -> None:
        """Before every router restarts: this node's file keeps its own colors, in the new
        routes, marked newer than the colors published with them; its next task starts on
        them."""
        container = self.router_container()
        if container is None:
            return
        try:
            live = self.live_colors()
        except router.RouterError:
            return  # its next task takes the published colors
        self._put_router_files(container, live, mark)

    def write_router_config(self, live: dict[str, str | None]) -> None:
        """As on a host, and marked newer than the colors published now: a task Swarm
        restarts before the next ones are published starts on these."""
        found = swarmrouter.find_service(self.manager, self.env.name)
        mark = swarmrouter.published_colors(found)
        self._put_router_files(self._existing_router(), live, mark)

    def _put_router_files(
        self, container: Container, live: dict[str, str | None], mark: str
    ) -> None:
        """The router config and the mark of the colors it is newer than, in one upload."""
        text = router.render(self.env, self.ports, live)
        files = {
            router.CONFIG_PATH.rpartition("/")[2]: text.encode(),
            swarmrouter.MARK_PATH.rpartition("/")[2]: f"{mark}\n".encode(),
        }
        state.put_files(container, swarmrouter.VOLUME_TARGET, files)

    def _retire_container_router(self) -> None:
        """A router container that conveyor placed on this node before the router was a
        service stops once the service's task serves beside it: softly, as a replaced router
        does."""
        try:
            old = self.client.containers.get(router_container_name(self.env.name))
        except docker.errors.NotFound:
            return
        old.stop(timeout=ROUTER_DRAIN_SECONDS)
        old.remove(force=True)

    # --- the color's service -------------------------------------------------------------

    def create_service_container(
        self,
        service: Service,
        color: str,
        release: str,
        version: str,
        image_id: str,
        *,
        reference: str = "",
    ) -> Container:
        """The color's global service (made by the first node that asks), then this node's
        task container once Swarm has started it."""
        name = swarm_service_name(
            service_container_name(self.env.name, service.name, color, release),
            "the environment's or the service's name",
        )
        if self._service(name) is None:
            labels = service_labels(self.env.name, service, color, release, version)
            image = reference if "@sha256:" in reference else image_id
            self._create_service(name, service, color, labels, image)
        return self._wait_task(name)

    def _service(self, name: str) -> Any | None:
        try:
            return self.manager.services.get(name)
        except docker.errors.NotFound:
            return None

    def _create_service(
        self, name: str, service: Service, color: str, labels: dict[str, str], image: str
    ) -> None:
        # File secrets: Swarm mounts each at /run/secrets/NAME, where NAME_FILE points, before
        # the task starts, so nothing is delivered after start and the spec names no value.
        env = self.container_env(service, color)
        self.manager.services.create(
            image,
            name=name,
            labels=labels,
            container_labels=labels,
            env=[f"{key}={value}" for key, value in env.items()],
            mode=ServiceMode("global"),
            networks=["host"],
            mounts=self._mounts(service),
            secrets=self._secrets(service),
            healthcheck=Healthcheck(**self.healthcheck(service, color)),
            stop_signal="SIGTERM",
            stop_grace_period=int(self.env.timeouts.stop * 1_000_000_000),
            restart_policy=RESTART,
            constraints=list(self.env.placement),
        )

    def _mounts(self, service: Service) -> list[Mount]:
        return [
            Mount(target=spec["bind"], source=volume, type="volume", read_only=spec["mode"] == "ro")
            for volume, spec in self.volumes(service).items()
        ]

    def _secrets(self, service: Service) -> list[SecretReference]:
        """Each file secret as a Swarm secret named by its value's hash: a new value is a new
        secret, an unchanged one is reused; the value itself is never printed."""
        references = []
        for secret in file_secrets(service):
            value = secret.resolve().encode()
            digest = hashlib.sha256(value).hexdigest()[:12]
            name = f"conveyor-{self.env.name}-{secret.name}-{digest}"
            try:
                stored = self.manager.secrets.get(name)
            except docker.errors.NotFound:
                stored = self.manager.secrets.create(
                    name=name, data=value, labels={"conveyor.env": self.env.name}
                )
            # Readable by the container's user whoever it is; Swarm's tmpfs holds it.
            references.append(
                SecretReference(stored.id, name, filename=secret.name, uid="0", gid="0", mode=0o444)
            )
        return references

    def _wait_task(self, name: str) -> Container:
        """This node's task container of service ``name`` once Swarm made it; a node drained
        or lost meanwhile gets none, and is said so at once."""
        deadline = time.monotonic() + self.env.timeouts.ready
        checked = time.monotonic()
        while True:
            listing = self._task_listing(name, live=False)
            if listing is not None:
                if listing.get("State") not in LIVE_STATES:  # shut down: by a drain, say so
                    self._raise_if_not_taking_tasks()
                # Swarm may remove a failed task's container between the list and the get.
                with contextlib.suppress(docker.errors.NotFound):
                    container: Container = self.client.containers.get(listing["Id"])
                    return container
            if time.monotonic() - checked >= NODE_CHECK_EVERY:
                checked = time.monotonic()
                self._raise_if_not_taking_tasks()
            if time.monotonic() > deadline:
                raise ConveyorError(
                    f"Swarm started no task of {name} on node {self.name} within "
                    f"{self.env.timeouts.ready:g} s ({self._task_state(name)})"
                )
            time.sleep(0.1)

    def not_taking_tasks(self) -> str | None:
        node = self.node() or {}
        if takes_tasks(node):
            return None
        return (
            f"swarm node {self.name} became {node_condition(node)} while it was being moved: "
            f"Swarm stops its tasks there — {_remedy(node)} and run the command again"
        )

    def _raise_if_not_taking_tasks(self) -> None:
        why = self.not_taking_tasks()
        if why is not None:
            raise ConveyorError(why)

    def _task_state(self, name: str) -> str:
        """What the manager says of the service's newest task on this node, in words."""
        tasks = self.manager.api.tasks(filters={"service": name, "node": self.node_id})
        if not tasks:
            return "the manager has no task for this node: is it drained or down?"
        status = max(tasks, key=lambda t: t.get("UpdatedAt", ""))["Status"]
        detail = status.get("Err") or status.get("Message") or ""
        return f"task {status.get('State')}: {detail}"[:200]

    def start_service_container(self, container: Container, service: Service) -> None:
        """Swarm started it, its secrets mounted: nothing to do."""

    def stop_service_container(self, name: str) -> None:
        """Remove the color's service, stop this node's task (:meth:`_stop_tasks_now`), and
        wait until it has stopped, as a host's stop returns once its container has: the port
        is free again. A service already gone (another node's call, an undo) is done.

        ``name`` is the service's, or its task container's (``<service>.<node>.<task>``)."""
        name = name.split(".", 1)[0]
        found = self._service(name)
        if found is not None:
            with contextlib.suppress(docker.errors.NotFound):
                found.remove()
            self._prune_secrets()
        self._stop_tasks_now(name)
        deadline = time.monotonic() + self.env.timeouts.stop + STOP_MARGIN
        while self._task_listing(name) is not None:
            if time.monotonic() > deadline:
                raise ConveyorError(
                    f"{self.name}: the task of removed service {name} still runs after "
                    f"{self.env.timeouts.stop + STOP_MARGIN:g} s"
                )
            time.sleep(0.1)

    def _stop_tasks_now(self, service: str) -> None:
        """Stop and remove this node's live tasks of the removed ``service`` ourselves, as
        Swarm would (SIGTERM, the stop timeout, SIGKILL; then the container and its anonymous
        volumes), but without the fixed 2 s that Swarm waits first for every task on a network
        (``host`` included) so that its load balancer's gossip settles: the services publish
        nothing through it. Measured on the test swarm: 0.4 s from the removal to the task
        stopped, against 3.4 s. The service is gone first, so Swarm starts no task in their
        place. A task Swarm's agent is stopping or removing at the same moment is left to it
        (the caller waits for it to stop either way)."""
        for listing in self._task_listings(service):
            with contextlib.suppress(docker.errors.APIError):
                self.client.api.stop(listing["Id"], timeout=int(self.env.timeouts.stop))
                self.client.api.remove_container(listing["Id"], v=True, force=True)

    def _prune_secrets(self) -> None:
        """Remove this environment's Swarm secrets that no service names any more (a value
        replaced since): each value otherwise stays on the managers for good."""
        services = self.manager.services.list(filters={"label": f"conveyor.env={self.env.name}"})
        used = {
            reference["SecretID"]
            for service in services
            for reference in service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"].get(
                "Secrets", []
            )
        }
        for secret in self.manager.secrets.list(filters={"label": f"conveyor.env={self.env.name}"}):
            if secret.id not in used:
                # A service that another command just created may use it: Swarm refuses then.
                with contextlib.suppress(docker.errors.APIError):
                    secret.remove()

    def remove_service_container(self, name: str) -> None:
        self.stop_service_container(name)


def describe_node(attrs: dict[str, Any], env: Environment) -> dict[str, str]:
    """A node as its manager sees it, for the environment: ready or down, active, paused or
    drained, and the placement constraint it misses (none: "")."""
    return {
        "id": str(attrs["ID"])[:12],
        "state": str(attrs["Status"]["State"]),
        "availability": str(attrs["Spec"]["Availability"]),
        "role": str(attrs["Spec"]["Role"]),
        "address": str(attrs["Status"].get("Addr", "")),
        "unmet_placement": placement.unmet(env.placement, attrs) or "",
    }


def _remedy(node: dict[str, str]) -> str:
    """What makes a node that takes no tasks of the environment take them, in words."""
    if node.get("unmet_placement"):
        return "give it what the environment's placement names (docker node update --label-add)"
    return "make it active (docker node update --availability active <node>)"


def connect_nodes(config: Config, env: Environment) -> list[HostTarget]:
    """Every host of a swarm environment as a node of one swarm, the first its manager."""
    first = env.hosts[0]
    manager = engine.connect(first.endpoint())
    cluster = _swarm_of(manager, first.name, env.name)
    if not cluster.get("ControlAvailable"):
        raise EngineUnavailable(
            f"{env.name}: host {first.name} ({engine.describe(first.endpoint())}) is not a Swarm "
            f"manager — the first host of a swarm environment must be one (docker node promote)"
        )
    nodes: list[SwarmNode] = []

    def add(host: Host, client: Any, node_id: str, role: str) -> None:
        nodes.append(
            SwarmNode(
                host=host,
                env=env,
                client=client,
                ports=router.Ports.of(env, 0),
                manager=manager,
                node_id=node_id,
                # The manager's view: a node just promoted keeps a copy at once.
                is_manager=role == "manager",
                router_repository=images.router_repository(config),
            )
        )

    for host in env.hosts:
        client = manager if host is first else engine.connect(host.endpoint())
        joined = cluster if host is first else _swarm_of(client, host.name, env.name)
        seen = _node_spec(manager, joined["NodeID"])
        if seen is None:
            raise EngineUnavailable(
                f"{env.name}: host {host.name} is not a node of the swarm that {first.name} "
                f"manages — join it (docker swarm join-token worker, on {first.name})"
            )
        add(host, client, joined["NodeID"], seen.get("Role", ""))
    for host, attrs in _other_nodes(manager, env, nodes):
        add(host, _connect_other(host, env, attrs["ID"]), attrs["ID"], attrs["Spec"]["Role"])
    for node in nodes:
        node.peers = nodes
    return list(nodes)


def _unlisted_nodes(
    manager: Any, env: Environment, listed: list[SwarmNode]
) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """Each node that runs the environment's tasks and is none of ``listed``: the manager's
    inspect of it, and :func:`describe_node`'s view."""
    ids = {node.node_id for node in listed}
    described = ((attrs, describe_node(attrs, env)) for attrs in manager.api.nodes())
    return [(a, n) for a, n in described if a["ID"] not in ids and takes_tasks(n)]


def _other_nodes(
    manager: Any, env: Environment, listed: list[SwarmNode]
) -> list[tuple[Host, dict[str, Any]]]:
    """With ``other_nodes``: each node that runs the environment's tasks and that hosts does
    not list, as a host named by its address, in the order of their addresses."""
    if env.other_nodes is None:
        return []
    found = []
    for attrs, node in _unlisted_nodes(manager, env, listed):
        if not node["address"]:
            continue
        docker = env.other_nodes.docker.format(address=node["address"])
        found.append((replace(env.other_nodes, name=node["address"], docker=docker), attrs))
    return sorted(found, key=lambda pair: _address_order(pair[0].name))


def _address_order(address: str) -> tuple[int, int, str]:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return (9, 0, address)
    return (parsed.version, int(parsed), address)


def _connect_other(host: Host, env: Environment, node_id: str) -> Any:
    """A node's engine reached through ``other_nodes``, once it is that node's: when it does
    not answer, or is another engine, one line that says how conveyor tried."""
    why = f"{env.name}: swarm node {host.name} runs the environment's tasks and hosts does not "
    try:
        client = engine.connect(host.endpoint())
    except EngineUnavailable as exc:
        raise EngineUnavailable(
            f"{why}list it; other_nodes reaches it at {host.docker}: {exc}"
        ) from None
    reached = (client.info().get("Swarm") or {}).get("NodeID")
    if reached != node_id:
        raise EngineUnavailable(
            f"{why}list it; other_nodes reaches it at {host.docker}, which is the engine of "
            f"another node ({reached or 'none'}) — fix other_nodes.docker or list the node in hosts"
        )
    return client


def _node_spec(manager: Any, node_id: str) -> dict[str, Any] | None:
    """The node's spec (role, availability) as the manager holds it; None if not its node."""
    try:
        spec: dict[str, Any] = manager.api.inspect_node(node_id)["Spec"]
    except docker.errors.NotFound:
        return None
    return spec


def _swarm_of(client: Any, host: str, env: str) -> dict[str, Any]:
    swarm: dict[str, Any] = client.info().get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active" or not swarm.get("NodeID"):
        raise EngineUnavailable(
            f"{env}: host {host} is not in a swarm (its state: "
            f"{swarm.get('LocalNodeState') or 'unknown'}) — run docker swarm init on the "
            f"manager, or scripts/setup --swarm for a local one"
        )
    return swarm
