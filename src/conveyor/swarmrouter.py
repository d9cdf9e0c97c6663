"""The router on a swarm: one global Swarm service, whose task on each node is its router.

- **What a new task serves:** the service publishes the live colors in its own labels, which
  change nothing that runs. A task reads them when Swarm creates it (a template in its
  environment) and enables those colors in the router config that the service carries as a
  Swarm config. So a node that joins the swarm gets a router task with no conveyor command,
  and it serves the live release as soon as that release's tasks run there.
- **What a restarted task serves:** each node keeps its router's config in a local volume,
  ``conveyor-<env>-router``. A switch writes the file there, as on a host, and marks it as newer
  than the colors published at that moment. So a task that Swarm replaces mid-deploy comes back
  on the colors its node served. A task renders the published colors over the file only when
  they are newer than the file: a node new to the swarm, or one back after it missed a release.
- **Every command that may have moved traffic ends with a publication of its own**, even of
  the same colors. So every file written before it is older: a switch that the command undid
  on every node but one whose router it could no longer reach (drained in its verify window)
  is not what that node's next router starts on.
- **Publishing colors restarts no router.** A new router image or new routes do: that is a
  start-first update on every node at once. The new task binds beside the old one
  (SO_REUSEPORT). Once it is healthy, Swarm stops the old one with SIGUSR1, HAProxy's soft
  stop: it closes its listeners and finishes what it was asked. conveyor waits until each node
  runs one router again, since two routers would share the admin port. Swarm takes about 3.4 s
  after the new task is healthy to stop the old one (measured on Docker 20.10).
- The health check only says the task's HAProxy bound its sockets: the start-first update needs
  that, and nothing else waits for it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import docker.errors
from docker.types import (
    ConfigReference,
    Healthcheck,
    Mount,
    RestartPolicy,
    ServiceMode,
    UpdateConfig,
)

from conveyor import router
from conveyor.config import Environment
from conveyor.console import Console
from conveyor.containers import ROLE_ROUTER, Container, router_container_name
from conveyor.errors import ConveyorError
from conveyor.hosts import ROUTER_DRAIN_SECONDS, ROUTER_LOG_LIMITS

# Service labels: the task template's generation (router image and routes), the published
# live colors ("api=blue,web=green"), and an id of both that marks which a node's file is newer
# than. Only the first is on the tasks too: the others change no task.
CONFIG_LABEL = "conveyor.router-config"
LIVE_LABEL = "conveyor.live"
PUBLISHED_LABEL = "conveyor.router-published"
ROLE_CONFIG = "router-config"
# Where a task finds the config template, and where the node's volume is mounted.
TEMPLATE_PATH = "/run/conveyor/router.cfg"
VOLUME_TARGET = router.CONFIG_PATH.rpartition("/")[0]
# Which published colors the node's file is newer than.
MARK_PATH = f"{VOLUME_TARGET}/published"
# A socket that exists once HAProxy has bound its listeners (the health check's test), in the
# task's own /tmp: the node's volume is shared with the task being replaced.
BOUND_SOCKET = "/tmp/conveyor-router.sock"  # noqa: S108 - the container's own, not the host's
# Enables each service's published live color in the template's live backend, as
# router.render does: the server line loses its " disabled".
ENABLE_LIVE = (
    'BEGIN { n = split(live, pairs, ","); '
    'for (i = 1; i <= n; i++) { split(pairs[i], kv, "="); color[kv[1] "_live"] = kv[2] } } '
    '$1 == "backend" { backend = $2 } '
    '$1 == "server" && color[backend] == $2 { sub(/ disabled$/, "") } '
    "{ print }"
)
# The task's command (the image's user, haproxy, owns the volume; a file conveyor wrote is
# root's, so each is replaced by a rename, never written over).
START = (
    f'if [ "$(cat {MARK_PATH} 2>/dev/null)" != "$CONVEYOR_PUBLISHED" ]; then '
    f"awk -v live=\"$CONVEYOR_LIVE\" '{ENABLE_LIVE}' {TEMPLATE_PATH} > {router.CONFIG_PATH}.new "
    f"&& mv {router.CONFIG_PATH}.new {router.CONFIG_PATH} "
    f'&& echo "$CONVEYOR_PUBLISHED" > {MARK_PATH}.new && mv {MARK_PATH}.new {MARK_PATH}; fi; '
    f"printf 'global\\n    stats socket {BOUND_SOCKET}\\n' > /tmp/bound.cfg; "
    f"exec haproxy -W -db -f {router.CONFIG_PATH} -f /tmp/bound.cfg"
)
SECOND = 1_000_000_000
# Docker runs the health check by exec on every node, so seldom: only a start-first update
# (a new router image or new routes) waits for it.
HEALTH_INTERVAL = 5
PUBLISH_COLORS = "publish the live colors to the router service (no router restarts)"
# How long a node may take to run exactly one router of the wanted generation: the old one's
# soft stop, then the new one's first health checks.
SETTLE_SECONDS = ROUTER_DRAIN_SECONDS + 30


@dataclass(frozen=True)
class Published:
    """The router service as it should be: its image, the config template its tasks carry
    (every live server disabled), and the live colors a new task enables in it."""

    image: str
    template: str
    live: str
    # The environment's placement constraints: the nodes that run a router.
    placement: tuple[str, ...] = ()
    # Set at a command's end: this publication is newer than any file written before it,
    # even one of the same colors.
    serial: str = ""

    @property
    def generation(self) -> str:
        """Of the task template: changes with the image, the routes or the placement, and
        restarts routers."""
        return "router-" + _digest(self.image, self.template, *self.placement)

    @property
    def colors(self) -> str:
        """Of the published colors in that generation: changes with a switch, restarts none."""
        return _digest(self.generation, self.live, self.serial)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def published(
    env: Environment,
    ports: router.Ports,
    live: Mapping[str, str | None],
    image: str,
    *,
    serial: str = "",
) -> Published:
    colors = ",".join(f"{service}={color}" for service, color in sorted(live.items()) if color)
    return Published(
        image=image,
        template=router.render(env, ports, {}),
        live=colors,
        placement=env.placement,
        serial=serial,
    )


def new_serial() -> str:
    """A publication's own: no two commands' are the same."""
    return secrets.token_hex(6)


def service_name(env_name: str) -> str:
    return router_container_name(env_name)


def volume_name(env_name: str) -> str:
    return f"conveyor-{env_name}-router"


def config_name(env_name: str, wanted: Published) -> str:
    return f"conveyor-{env_name}-{wanted.generation}"


def find_service(manager: Any, env_name: str) -> Any | None:
    try:
        return manager.services.get(service_name(env_name))
    except docker.errors.NotFound:
        return None


def published_colors(found: Any | None) -> str:
    """The id of the colors the router service publishes now ("" with no service)."""
    return "" if found is None else _labels(found).get(PUBLISHED_LABEL, "")


def restarts(found: Any | None, env_name: str, wanted: Published) -> bool:
    """Whether making the service ``wanted`` starts every node's router anew."""
    return found is not None and _labels(found).get(CONFIG_LABEL) != config_name(env_name, wanted)


def change(manager: Any, env_name: str, wanted: Published) -> str | None:
    """What :func:`apply` would do, in words; None when the service is as wanted."""
    found = find_service(manager, env_name)
    if found is None:
        return "create the router service: Swarm starts a router on every node"
    if restarts(found, env_name, wanted):
        return "new router image or routes: update the router service, start-first on every node"
    if published_colors(found) != wanted.colors:
        return PUBLISH_COLORS
    return None


def apply(
    manager: Any, env: Environment, wanted: Published, restart: RestartPolicy, out: Console
) -> bool:
    """Create or update the router service to ``wanted``; whether it changed anything."""
    found = find_service(manager, env.name)
    name = config_name(env.name, wanted)
    labels = _service_labels(env.name, wanted)
    if found is not None and not restarts(found, env.name, wanted):
        if published_colors(found) == wanted.colors:
            return False
        _relabel(manager, found, labels)
        return True
    config = _config(manager, env.name, name, wanted.template)
    spec = _spec(env, wanted, config.id, restart)
    if found is None:
        out.say(f"  starting the router service {service_name(env.name)} on every node")
        manager.services.create(wanted.image, name=service_name(env.name), labels=labels, **spec)
    else:
        out.say("  router service: new image or routes; every node starts its router anew")
        found.update(image=wanted.image, labels=labels, **spec)
    _prune_configs(manager, env.name, keep=name)
    return True


def _relabel(manager: Any, found: Any, labels: dict[str, str]) -> None:
    """Change the service's labels alone: the rest of its spec goes back exactly as stored,
    so no task restarts. (The SDK's ``Service.update`` sends a task template of its own
    making: in the swarm test that restarted every router.)"""
    spec = found.attrs["Spec"]
    manager.api.update_service(
        found.id,
        found.attrs["Version"]["Index"],
        task_template=spec["TaskTemplate"],
        name=spec["Name"],
        labels=labels,
        mode=spec.get("Mode"),
        update_config=spec.get("UpdateConfig"),
        rollback_config=spec.get("RollbackConfig"),
        endpoint_spec=spec.get("EndpointSpec"),
    )


def _labels(found: Any) -> dict[str, str]:
    labels: dict[str, str] = found.attrs["Spec"].get("Labels") or {}
    return labels


def _service_labels(env_name: str, wanted: Published) -> dict[str, str]:
    return {
        **_task_labels(env_name, wanted),
        LIVE_LABEL: wanted.live,
        PUBLISHED_LABEL: wanted.colors,
    }


def _task_labels(env_name: str, wanted: Published) -> dict[str, str]:
    return {
        "conveyor.env": env_name,
        "conveyor.role": ROLE_ROUTER,
        CONFIG_LABEL: config_name(env_name, wanted),
    }


def _config(manager: Any, env_name: str, name: str, text: str) -> Any:
    try:
        return manager.configs.get(name)
    except docker.errors.NotFound:
        labels = {"conveyor.env": env_name, "conveyor.role": ROLE_CONFIG}
        return manager.configs.create(name=name, data=text.encode(), labels=labels)


def _spec(
    env: Environment, wanted: Published, config_id: str, restart: RestartPolicy
) -> dict[str, Any]:
    """The task template (what restarts routers when it changes)."""
    name = config_name(env.name, wanted)
    return {
        "command": ["sh", "-c", START],
        "container_labels": _task_labels(env.name, wanted),
        # Swarm fills these in from the service's labels when it creates a task.
        "env": [
            f'CONVEYOR_LIVE={{{{index .Service.Labels "{LIVE_LABEL}"}}}}',
            f'CONVEYOR_PUBLISHED={{{{index .Service.Labels "{PUBLISHED_LABEL}"}}}}',
        ],
        "mode": ServiceMode("global"),
        "constraints": list(wanted.placement),
        "networks": ["host"],
        "mounts": [Mount(target=VOLUME_TARGET, source=volume_name(env.name), type="volume")],
        "configs": [
            ConfigReference(config_id, name, filename=TEMPLATE_PATH, uid="0", gid="0", mode=0o444)
        ],
        "healthcheck": Healthcheck(
            test=["CMD", "test", "-S", BOUND_SOCKET],
            interval=HEALTH_INTERVAL * SECOND,
            timeout=2 * SECOND,
            retries=3,
            start_period=0,
        ),
        "stop_signal": "SIGUSR1",
        "stop_grace_period": ROUTER_DRAIN_SECONDS * SECOND,
        "restart_policy": restart,
        # Every node at once: each one's old router keeps serving until its new one is healthy.
        "update_config": UpdateConfig(parallelism=0, order="start-first", failure_action="pause"),
        "log_driver": "json-file",
        "log_driver_options": ROUTER_LOG_LIMITS,
    }


def _prune_configs(manager: Any, env_name: str, *, keep: str) -> None:
    """Remove the published configs no task uses any more; one an old task still holds stays
    until a later update."""
    found = manager.configs.list(
        filters={"label": [f"conveyor.env={env_name}", f"conveyor.role={ROLE_CONFIG}"]}
    )
    for config in found:
        if config.name != keep:
            try:
                config.remove()
            except docker.errors.APIError:
                continue


def settle(
    tasks: Callable[[], list[dict[str, Any]]],
    client: Any,
    *,
    env: Environment,
    node: str,
    wanted: Published,
    why: Callable[[], str],
) -> Container:
    """Wait until the node runs one router, of the wanted generation: the router an admin
    command reaches (once it answers). ``tasks`` lists the node's live router task
    containers; ``why`` says what the manager knows when they do not settle."""
    name = config_name(env.name, wanted)
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        found = tasks()
        if (
            len(found) == 1
            and (found[0].get("Labels") or {}).get(CONFIG_LABEL) == name
            and found[0].get("State") == "running"
        ):
            try:
                container: Container = client.containers.get(found[0]["Id"])
                return container
            except docker.errors.NotFound:
                pass  # replaced between the list and the get: look again
        if time.monotonic() > deadline:
            raise ConveyorError(
                f"{node}: the router service's task did not settle within {SETTLE_SECONDS} s "
                f"({len(found)} running; {why()}) — see docker service ps "
                f"{service_name(env.name)}"
            )
        time.sleep(0.1)
