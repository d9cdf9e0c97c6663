"""An environment's session: connections to its hosts and its state on the primary host.

Every command that reads or changes an environment opens one (deploy, rollback, promote's
source, approve, status); it is the one place that connects to the engines, and the first
module in the import chain that needs the docker SDK.
"""

from __future__ import annotations

import contextlib
from typing import Any

from conveyor import engine, images, swarm
from conveyor.config import Config
from conveyor.console import Console, console
from conveyor.errors import ConveyorError, EngineUnavailable
from conveyor.hosts import HostTarget, connect_hosts
from conveyor.ledger import Ledger, ReleaseRecord
from conveyor.lockinfo import LockInfo
from conveyor.locks import EnvironmentLock
from conveyor.observe import EnvironmentState, observe
from conveyor.replicas import ReplicatedStore
from conveyor.state import StateStore


class Session:
    """Connections to an environment's hosts and its state on the primary host."""

    def __init__(self, config: Config, env_name: str, out: Console = console) -> None:
        self.config = config
        self.env = config.environment(env_name)
        self.out = out
        connect = swarm.connect_nodes if self.env.engine == "swarm" else connect_hosts
        self.targets = connect(config, self.env)
        self.primary = self.targets[0]
        self.router_image: str | None = self._existing_router_image()
        for target in self.targets:  # read-only commands' helpers (flags) need it too
            target.router_image = target.router_image or self.router_image
        self.store = self._state_store()
        self.ledger = Ledger(self.store)
        self._image_source: Any = None

    def _state_store(self) -> StateStore:
        """The state on the primary host, copied to every other host that keeps a copy (a
        swarm's managers)."""
        copies = [
            StateStore(target.client, self.env.name, self.router_image, host=target.name)
            for target in self.targets[1:]
            if target.keeps_state_copy()
        ]
        if not copies:
            return StateStore(
                self.primary.client, self.env.name, self.router_image, host=self.primary.name
            )
        return ReplicatedStore(
            self.primary.client, self.env.name, self.router_image, self.primary.name, copies
        )

    def _existing_router_image(self) -> str | None:
        with contextlib.suppress(ConveyorError):
            return images.router_image_tag(self.config, self.primary.client)
        return None

    def ensure_router_images(self) -> None:
        """The router image on every host: built once here, copied to the others. On a swarm
        with a registry it is also pushed: the router service names it by digest there, so a
        node that joins pulls it. Every listed host holds the tag itself, which the flag and
        state helpers run."""
        local = self.primary.client
        self._copy_router_image_here()
        # The tag read when the session opened (same engine, same Dockerfile): asking for the
        # base image again, and whether the primary has the tag build_router_image just
        # checked, would be two more engine round trips on every deploy.
        tag = images.build_router_image(self.config, local, self.out, tag=self.router_image)
        if self.env.engine == "swarm":
            images.push_router_image(self.config, local, tag, self.out)
        for target in self.targets:
            if target.client is not local and not images.image_present(target.client, tag):
                self.out.say(f"  {target.name}: copying the router image")
                images.copy_image(local, target.client, tag)
            target.router_image = tag
        self.router_image = tag
        self.store.image = tag

    def _copy_router_image_here(self) -> None:
        """A primary that lacks the router image gets this machine's copy of the same tag
        (the same Dockerfile on the same base) rather than building it again: a build needs
        Debian's mirror, which a swarm's node may not reach."""
        tag = self.router_image
        if tag is None or images.image_present(self.primary.client, tag):
            return
        source = self.image_source()
        if source is not self.primary.client and images.image_present(source, tag):
            self.out.say(f"  {self.primary.name}: copying the router image from this machine")
            images.copy_image(source, self.primary.client, tag)

    def image_source(self) -> Any:
        """Where a host that lacks a release's image (and has no registry to pull it from)
        gets a copy: this machine's engine, where ``nox -s image`` built it; the primary
        host's when this machine has none."""
        if self._image_source is None:
            self._image_source = self.primary.client
            if self.primary.host.endpoint() is not None:
                with contextlib.suppress(EngineUnavailable):
                    self._image_source = engine.connect(timeout=30)
        return self._image_source

    def lock(self) -> EnvironmentLock:
        return EnvironmentLock(
            self.primary.client,
            self.env.name,
            self.router_image or "",
            stale_after=self.env.timeouts.lock_stale,
        )

    def read_lock(self) -> LockInfo | None:
        return self.lock().read()

    def observe(
        self, records: list[ReleaseRecord] | None = None, *, holding_lock: bool = False
    ) -> EnvironmentState:
        """The environment now. A deploy that holds the lock passes the records it already
        read and skips reading the lock it holds."""
        lock = None if holding_lock else self.read_lock()
        return observe(self.targets, self.ledger, lock, records=records)

    def by_name(self) -> dict[str, HostTarget]:
        return {t.name: t for t in self.targets}

    def public_url(self) -> str:
        first = self.primary.ports
        return f"http://{first.bind}:{first.public}/"
