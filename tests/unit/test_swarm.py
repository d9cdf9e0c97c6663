"""A swarm node as observe reads it: task containers named by their service, Swarm's task
history left out, and the node's own state deciding whether it serves and takes releases."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest
from tests.unit.test_plan import STAGING, container, deployed

from conveyor import router
from conveyor.errors import ConveyorError
from conveyor.observe import HostState
from conveyor.operations import render_status
from conveyor.swarm import SERVICE_LABEL, SwarmNode

SERVICE = "conveyor-staging-api-blue-r0001"


def task(service: str, state: str, created: int, ident: str) -> dict[str, Any]:
    """A task container as the node's engine lists it."""
    return {
        "Id": ident,
        "Names": [f"/{service}.node1.task{ident}"],
        "State": state,
        "Status": "Up 3 seconds (healthy)" if state == "running" else "Exited (0)",
        "Created": created,
        "ImageID": "sha256:aapi",
        "Labels": {
            SERVICE_LABEL: service,
            "conveyor.service": "api",
            "conveyor.color": "blue",
            "conveyor.release": "r0001",
            "conveyor.version": "1.0.0",
        },
    }


def node(listing: list[dict[str, Any]], attrs: dict[str, Any] | None = None) -> SwarmNode:
    engine = SimpleNamespace(api=SimpleNamespace(containers=lambda **_: listing))
    manager = SimpleNamespace(api=SimpleNamespace(inspect_node=lambda _id: attrs))
    return SwarmNode(
        host=STAGING.hosts[0],
        env=STAGING,
        client=engine,
        ports=router.Ports.of(STAGING, 0),
        manager=manager,
        node_id="abcdef1234567890",
    )


def node_attrs(state: str, availability: str) -> dict[str, Any]:
    return {
        "Status": {"State": state, "Addr": "192.0.2.1"},
        "Spec": {"Availability": availability, "Role": "manager"},
    }


def test_a_color_is_its_services_newest_live_task_and_task_history_is_not_a_release() -> None:
    listing = [
        task(SERVICE, "exited", 100, "old"),  # a task Swarm replaced
        task(SERVICE, "running", 200, "new"),
        task("conveyor-staging-api-green-r0000", "exited", 50, "gone"),  # a removed color
    ]
    found = node(listing).service_containers()
    assert [(c.name, c.id, c.health) for c in found] == [(SERVICE, "new", "healthy")]


def test_a_drained_node_is_refused_before_a_deploy_changes_anything() -> None:
    node(listing=[], attrs=node_attrs("ready", "active")).preflight()
    with pytest.raises(
        ConveyorError, match=r"swarm node staging1 is ready, drain — make it active"
    ):
        node(listing=[], attrs=node_attrs("ready", "drain")).preflight()
    with pytest.raises(ConveyorError, match=r"is down, active"):
        node(listing=[], attrs=node_attrs("down", "active")).preflight()


@pytest.mark.parametrize(
    ("state", "availability", "serves"),
    [("ready", "active", True), ("ready", "drain", False), ("down", "active", False)],
)
def test_status_says_whether_a_node_serves(state: str, availability: str, serves: bool) -> None:
    live = deployed("r0001", "1.0.0", "a", "blue")
    host = HostState(
        "local",
        "running",
        {"api": "blue", "web": "blue"},
        [container(s, "blue", "r0001", "running", "a") for s in ("api", "web")],
        node={"state": state, "availability": availability, "role": "worker", "address": "n"},
    )
    assert host.serving(live) is serves
    state_now = SimpleNamespace(
        env="staging",
        hosts=[host],
        live_record=lambda: live,
        lock=None,
        interrupted=list,
        disagreements=list,
        unreadable=[],
        integrity=[],
        records=[live],
    )
    line = render_status(state_now, "http://x/")[2]  # type: ignore[arg-type]
    assert line.endswith(
        f"worker n {state}, {availability} — {'serves' if serves else 'NOT serving'}"
    )


def test_a_removed_color_takes_the_secrets_no_service_names_any_more_with_it() -> None:
    class Secret:
        def __init__(self, ident: str, removed: list[str]) -> None:
            self.id, self._removed = ident, removed

        def remove(self) -> None:
            if self.id == "raced":  # a service another command just made names it
                raise docker.errors.APIError("secret 'raced' is in use by the following service")
            self._removed.append(self.id)

    def service(*secret_ids: str) -> Any:
        secrets = [{"SecretID": ident} for ident in secret_ids]
        spec = {"TaskTemplate": {"ContainerSpec": {"Secrets": secrets} if secrets else {}}}
        return SimpleNamespace(attrs={"Spec": spec})

    removed: list[str] = []
    services = [service("current"), service("current", "warm"), service()]
    manager = SimpleNamespace(
        services=SimpleNamespace(list=lambda filters: services),
        secrets=SimpleNamespace(
            list=lambda filters: [Secret(i, removed) for i in ("current", "warm", "old", "raced")]
        ),
    )
    swarm_node = node(listing=[])
    swarm_node.manager = manager
    swarm_node._prune_secrets()
    assert removed == ["old"]
