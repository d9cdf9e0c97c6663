"""One host of an environment: its engine, its ports, its router, its service containers.

This is the engine side; the names and labels it gives containers, and how it reads them back,
live in :mod:`conveyor.containers`, which needs no engine.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import docker.errors
from docker.types import LogConfig

from conveyor import engine, flagstate, health, images, router, secretfiles, state
from conveyor.config import Config, Environment, Host, Service
from conveyor.console import Console
from conveyor.containers import (
    ROLE_ROUTER,
    ROLE_SERVICE,
    Container,
    ServiceContainer,
    next_router_container_name,
    router_container_name,
    service_container_name,
    service_labels,
)
from conveyor.errors import ConveyorError, ImageError
from conveyor.health import Probe

ROUTER_LOG_LIMITS = {"max-size": "10m", "max-file": "2"}
# How long a router being replaced may take to finish what it serves after its soft stop: the
# config's `timeout client`, after which HAProxy itself would close an idle connection.
ROUTER_DRAIN_SECONDS = 30
REPLACE_ROUTER = "start it beside the running router, then soft-stop the old one"


@dataclass
class HostTarget:
    """A connected host of one environment."""

    host: Host
    env: Environment
    client: Any
    ports: router.Ports
    router_image: str | None = None
    _router: Container | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.host.name

    # --- observation ---------------------------------------------------------------------

    def service_containers(self) -> list[ServiceContainer]:
        found = self.client.api.containers(
            all=True,
            filters={"label": [f"conveyor.env={self.env.name}", f"conveyor.role={ROLE_SERVICE}"]},
        )
        return sorted((ServiceContainer.from_listing(c) for c in found), key=lambda c: c.created)

    def router_container(self) -> Container | None:
        if self._router is not None:
            return self._router
        try:
            self._router = self.client.containers.get(router_container_name(self.env.name))
        except docker.errors.NotFound:
            return None
        return self._router

    def _existing_router(self) -> Container:
        """The router container, which the caller knows was created."""
        container = self.router_container()
        if container is None:
            raise router.RouterError(f"{self.name}: no router container")
        return container

    def router_status(self) -> str:
        container = self.router_container()
        if container is None:
            return "missing"
        container.reload()
        return str(container.status)

    def node(self) -> dict[str, str] | None:
        """A swarm node's state as its manager sees it; None for a host."""
        return None

    def keeps_state_copy(self) -> bool:
        """Whether this host keeps a copy of the environment's state beside the primary's (a
        swarm's other managers do, :mod:`conveyor.replicas`)."""
        return False

    def not_taking_tasks(self) -> str | None:
        """Why this host stopped taking the release's containers during a run (a swarm node
        drained or lost), in one line with what to do; None while it takes them."""
        return None

    def preflight(self) -> None:
        """Raise a ConveyorError when this host cannot take a release now (a swarm node
        drained or down); a host that answers always can."""

    def admin(self, command: str) -> str:
        if self.host.reaches_directly():
            return router.admin_direct(self.ports.admin, command)
        container = self.router_container()
        if container is None:
            raise router.RouterError(f"{self.name}: no router container")
        return router.admin_via_exec(container, self.ports.admin, command)

    def live_colors(self) -> dict[str, str | None]:
        """Which color each service's live backend serves, from the running router."""
        return router.parse_live_colors(self.admin("show stat"), self.env.services)

    def weights(self) -> dict[str, dict[str, int]]:
        """Per service, the live backend's colors in service and their weights."""
        return router.parse_weights(self.admin("show stat"), self.env.services)

    def router_log(self, since: float, until: float) -> str:
        """What the router wrote on stdout between two moments (its per-request log under a
        canary strategy), read through the engine like any container's logs."""
        data = self._existing_router().logs(stdout=True, stderr=False, since=since, until=until)
        return bytes(data).decode(errors="replace")

    def probe(
        self, port: int, path: str, *, timeout: float = 5.0, headers: dict[str, str] | None = None
    ) -> Probe:
        if self.host.reaches_directly():
            return health.probe("127.0.0.1", port, path, timeout=timeout, headers=headers)
        container = self.router_container()
        if container is None:
            return Probe(None, None, f"{self.name}: no router container to probe from")
        return health.probe_via_exec(container, port, path, timeout=timeout, headers=headers)

    def port_taken_by_stranger(self, port: int) -> bool:
        """Something answers on ``port`` and it is none of our running containers."""
        if not self.host.reaches_directly():
            return False
        answer = health.probe("127.0.0.1", port, "/", timeout=1.0)
        if answer.error and "refused" in answer.error.lower():
            return False
        ours = {
            self.ports.services[c.service][c.color]
            for c in self.service_containers()
            if c.running and c.service in self.ports.services
        }
        return port not in ours

    # --- images --------------------------------------------------------------------------

    def ensure_image(self, image_id: str, reference: str, local: Any | None) -> None:
        """Make ``image_id`` present: pull by digest, or copy from this machine's engine."""
        if images.image_present(self.client, image_id):
            return
        if "@sha256:" in reference:
            try:
                self.client.images.pull(reference)
            except docker.errors.APIError as exc:
                raise ImageError(
                    f"{self.name}: cannot pull {reference}: {str(exc)[:160]} — is the registry "
                    f"reachable from this host?"
                ) from None
            if images.image_present(self.client, image_id):
                return
            raise ImageError(f"{self.name}: pulled {reference} but it is not image {image_id[:19]}")
        if local is not None and local is not self.client and images.image_present(local, image_id):
            data = local.images.get(image_id).save(named=True)
            self.client.images.load(b"".join(data))
            return
        raise ImageError(
            f"image {reference[:80]} is not on host {self.name} and has no registry digest — "
            f"push it (set CONVEYOR_REGISTRY and run nox -s image) or build it there"
        )

    # --- router --------------------------------------------------------------------------

    def ensure_router(self, live_hint: dict[str, str | None], out: Console) -> bool:
        """A running router whose config has the current structure; never a needless reload.

        Returns whether the router was created, replaced or reloaded.
        """
        if self.router_image is None:
            raise ConveyorError("router image unknown")
        # Always, even when the router looks right: a replacement's new router left running
        # beside it would answer half of the admin API's connections with its own state.
        self._settle_replacement()
        container = self._current_router()
        if container is not None and container.status == "running":
            if not self._serves_wanted_image(container):
                return self._replace_router(container, out)
        elif container is not None:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
            self._router = None
            container = None
        if container is None:
            self._create_router(live_hint, out)
            return True
        if self._loaded_structure() == router.structure(self.env, self.ports):
            return False
        # Ports or routes changed: rewrite with the colors that are live now, then reload.
        out.say(f"  {self.name}: routes or ports changed; reloading the router")
        live = self.live_colors()
        self.write_router_config(live)
        container.kill(signal="SIGUSR2")
        self._wait_router(out)
        return True

    def publish_router(self, out: Console) -> None:
        """At the end of a locked command, record what the router serves where a router that
        starts anew reads it (a swarm's router service). A host's router keeps its own file,
        written at every switch: nothing to do."""

    def flags_stamp(self, images_with_files: list[str], now: int) -> int:
        """The stamp for flag files written now (ns): ``now`` on hosts, where only conveyor
        writes them; on a swarm, also newer than what its flag services publish."""
        del images_with_files
        return now

    def publish_flags(self, files: dict[str, bytes], stamp: int) -> None:
        """Before every listed host gets these flag files (by image), make them reach hosts
        that are not listed (a swarm's nodes that join: conveyor.swarmflags). A host has none."""

    def router_change(self) -> str | None:
        """What :meth:`ensure_router` would do to this host's router, in words, read only
        (``--dry-run`` prints it); None when it would leave the router as it is."""
        container = self._current_router()
        if container is None or container.status != "running":
            return "start the router"
        if self.router_image is None or not images.image_present(self.client, self.router_image):
            return "build the new router image, " + REPLACE_ROUTER
        if not self._serves_wanted_image(container):
            return "new router image: " + REPLACE_ROUTER
        if self._loaded_structure() != router.structure(self.env, self.ports):
            return "routes or ports changed: reload the router"
        return None

    def _current_router(self) -> Container | None:
        container = self.router_container()
        if container is not None:
            container.reload()
        return container

    def _serves_wanted_image(self, container: Container) -> bool:
        # The inspect already names its image's id: `container.image` would ask again.
        image = container.attrs.get("ImageID", container.attrs.get("Image"))
        return container.status == "running" and image == self._image_id()

    def _image_id(self) -> str:
        return str(self.client.images.get(self.router_image).id)

    def _replace_router(self, old: Container, out: Console) -> bool:
        """A new router image (a conveyor upgrade) without a lost request.

        The new router starts beside the running one: HAProxy binds with SO_REUSEPORT, so both
        accept. Once the new one listens on every port, the old one gets its stop signal,
        SIGUSR1, a soft stop: it closes its listeners at once, answers what it was asked, and
        closes each keep-alive connection with its next answer. Then the new one takes the
        router's name. If the new router does not come up, the old one keeps serving.
        """
        try:
            live = self.live_colors()
        except router.RouterError:  # the old one does not answer: nothing to hand over
            with contextlib.suppress(docker.errors.NotFound):
                old.remove(force=True)
            self._router = None
            self._create_router({}, out)
            return True
        out.say(f"  {self.name}: new router image; {REPLACE_ROUTER}")
        new = self._start_router(next_router_container_name(self.env.name), live)
        try:
            self._wait_listening(new)
        except ConveyorError:
            with contextlib.suppress(docker.errors.APIError):
                new.remove(force=True)
            raise
        old.stop(timeout=ROUTER_DRAIN_SECONDS)
        old.remove(force=True)
        new.rename(router_container_name(self.env.name))
        self._router = new
        self._wait_router(out)
        return True

    def _settle_replacement(self) -> None:
        """Finish or undo a router replacement that a crash interrupted: the new router takes
        the name if it alone runs; otherwise it stops, softly, as the old one would have."""
        try:
            new = self.client.containers.get(next_router_container_name(self.env.name))
        except docker.errors.NotFound:
            return
        current = self._current_router()
        if new.status == "running" and (current is None or current.status != "running"):
            if current is not None:
                current.remove(force=True)
            new.rename(router_container_name(self.env.name))
        else:
            new.stop(timeout=ROUTER_DRAIN_SECONDS)
            new.remove(force=True)
        self._router = None

    def _wait_listening(self, container: Container) -> None:
        ports = (self.ports.public, self.ports.preview, self.ports.admin)
        deadline = time.monotonic() + 15
        while not router.listens(container, ports):
            container.reload()
            if container.status == "exited" or time.monotonic() > deadline:
                logs = container.logs(tail=5).decode(errors="replace").strip().replace("\n", " | ")
                raise ConveyorError(
                    f"{self.name}: the new router image does not serve (the running router "
                    f"keeps serving) [{logs[-300:]}]"
                )
            time.sleep(0.05)

    def _create_router(self, live: dict[str, str | None], out: Console) -> None:
        name = router_container_name(self.env.name)
        with contextlib.suppress(docker.errors.NotFound):
            self.client.containers.get(name).remove(force=True)
        out.say(f"  {self.name}: starting router {name} on {self.ports.bind}:{self.ports.public}")
        self._router = self._start_router(name, live)
        self._wait_router(out)

    def _start_router(self, name: str, live: dict[str, str | None]) -> Container:
        """Create the router container ``name``, write its config, start it."""
        container: Container = self.client.containers.create(
            self.router_image,
            name=name,
            network_mode="host",
            labels={"conveyor.env": self.env.name, "conveyor.role": ROLE_ROUTER},
            restart_policy={"Name": "unless-stopped"},
            # Under a canary strategy HAProxy logs every request on stdout: bounded on disk,
            # and bounded for the analysis, which reads the log since its last sample.
            log_config=LogConfig(type="json-file", config=ROUTER_LOG_LIMITS),
        )
        self._put_router_config(container, live)
        container.start()
        return container

    def _wait_router(self, out: Console) -> None:
        deadline = time.monotonic() + 15
        last = ""
        while time.monotonic() < deadline:
            try:
                self.admin("show info")
                return
            except router.RouterError as exc:
                last = str(exc)
            container = self._existing_router()
            container.reload()
            if container.status == "exited":
                logs = container.logs(tail=5).decode(errors="replace").strip().replace("\n", " | ")
                raise ConveyorError(
                    f"{self.name}: the router exited — is port {self.ports.public}, "
                    f"{self.ports.preview} or {self.ports.admin} in use? [{logs[-300:]}]"
                )
            time.sleep(0.05)
        raise ConveyorError(f"{self.name}: the router did not answer within 15 s ({last})")

    def _loaded_structure(self) -> str | None:
        """The structure the running HAProxy loaded, from its runtime API (``show info``).

        Copying the config file out of the container costs one archive call (about 90 ms on
        Docker 20.10); the admin API answers in a millisecond and tells what the process
        really runs, even if a crash came between a rewrite and its reload. A router rendered
        before its description carried the hash (or one not answering yet) is read from its
        file, as before.
        """
        with contextlib.suppress(router.RouterError):
            loaded = router.loaded_structure(self.admin("show info"))
            if loaded is not None:
                return loaded
        return router.structure_of(self._read_router_config() or "")

    def _read_router_config(self) -> str | None:
        data = state.get_file(self._existing_router(), router.CONFIG_PATH)
        return None if data is None else data.decode()

    def write_router_config(self, live: dict[str, str | None]) -> None:
        """Persist the live colors so a restarted router serves the right release."""
        self._put_router_config(self._existing_router(), live)

    def _put_router_config(self, container: Container, live: dict[str, str | None]) -> None:
        folder, _, name = router.CONFIG_PATH.rpartition("/")
        text = router.render(self.env, self.ports, live).encode()
        state.put_file(container, folder, name, text)

    # --- service containers --------------------------------------------------------------
    # Everything that finds, starts, stops or removes a color's container goes through these,
    # by the name observe reports (a Swarm node answers them with the color's service).

    def service_container(self, name: str) -> Container:
        """The service container ``name``; docker.errors.NotFound when it is gone."""
        container: Container = self.client.containers.get(name)
        return container

    def start_service_container(self, container: Container, service: Service) -> None:
        """Start a created or kept container and deliver its file secrets."""
        secretfiles.start(container, service)

    def stop_service_container(self, name: str) -> None:
        """Stop ``name``, kept for a rollback; docker.errors.NotFound when it is gone."""
        self.client.containers.get(name).stop(timeout=int(self.env.timeouts.stop))

    def remove_service_container(self, name: str) -> None:
        """Remove the stopped container ``name`` (its volumes stay)."""
        self.client.containers.get(name).remove(v=False)

    def container_env(self, service: Service, color: str) -> dict[str, str]:
        env = service_env(service)
        env.update({"PORT": str(self.ports.services[service.name][color]), "HOST": "127.0.0.1"})
        if service.migrations is not None:
            # The release's migration phase ran them once; a starting color must not race it.
            env["MIGRATE_ON_START"] = "0"
        if service.flags:
            env["FLAGS_FILE"] = flagstate.container_file(service.image)
        return env

    def healthcheck(self, service: Service, color: str) -> dict[str, Any]:
        port = self.ports.services[service.name][color]
        # Docker runs this every interval in every container: a bare socket under ``-S`` (no
        # site) starts in about half the CPU time urllib.request's imports take.
        request = f"GET {service.health.path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode()
        script = (
            "import socket; "
            f"s = socket.create_connection(('127.0.0.1', {port}), {service.health.timeout}); "
            f"s.sendall({request!r}); "
            "status = (s.makefile('rb').readline().split() + [b'', b''])[1]; "
            "raise SystemExit(None if status[:1] == b'2' else 'answered ' + repr(status))"
        )
        seconds = 1_000_000_000
        start_period = service.health.start_period
        if start_period is None:
            start_period = self.env.timeouts.ready
        return {
            "test": ["CMD", "python3", "-S", "-c", script],
            "interval": int(service.health.interval * seconds),
            "timeout": int(service.health.timeout * seconds),
            "retries": service.health.retries,
            "start_period": int(start_period * seconds),
        }

    def volumes(self, service: Service) -> dict[str, dict[str, str]]:
        """The service's own volumes, and the environment's flags read-only when it has any."""
        mounts = {vol: {"bind": path, "mode": "rw"} for vol, path in service.volumes.items()}
        if service.flags:
            mounts[flagstate.volume_name(self.env.name)] = {"bind": flagstate.MOUNT, "mode": "ro"}
        return mounts

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
        """The color's container, created, not started (``reference``: the image's name,
        which a host's container does not need: the image is here by its ID)."""
        del reference
        name = service_container_name(self.env.name, service.name, color, release)
        with contextlib.suppress(docker.errors.NotFound):
            self.client.containers.get(name).remove(force=True)  # a leftover of a crashed run
        container: Container = self.client.containers.create(
            image_id,
            name=name,
            network_mode="host",
            environment=self.container_env(service, color),
            labels=service_labels(self.env.name, service, color, release, version),
            volumes=self.volumes(service),
            healthcheck=self.healthcheck(service, color),
            restart_policy={"Name": "unless-stopped"},
            stop_signal="SIGTERM",
            tmpfs=secretfiles.tmpfs(service),
        )
        return container


def service_env(service: Service) -> dict[str, str]:
    """What every container of ``service`` gets, a color's or a one-off's: its env, its env
    secrets' values and, for file secrets, only where the file will be (written after start)."""
    env = dict(service.env)
    for secret in service.secrets:
        if secret.delivery == "env":
            env[secret.name] = secret.resolve()
    env.update(secretfiles.environment(service))
    return env


def connect_hosts(config: Config, env: Environment) -> list[HostTarget]:
    targets = []
    for host in env.hosts:
        client = engine.connect(host.endpoint())
        targets.append(
            HostTarget(
                host=host, env=env, client=client, ports=router.Ports.of(env, host.port_offset)
            )
        )
    return targets
