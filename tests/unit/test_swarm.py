"""A swarm node as observe reads it: task containers named by their service, Swarm's task
history left out, and the node's own state deciding whether it serves and takes releases."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest
from tests.unit.test_plan import STAGING, container, deployed

from conveyor import config, router, swarm
from conveyor.errors import ConveyorError, EngineUnavailable
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


def node(
    listing: list[dict[str, Any]],
    attrs: dict[str, Any] | None = None,
    others: tuple[dict[str, Any], ...] = (),
    env: Any = STAGING,
) -> SwarmNode:
    """The environment's only listed node; the swarm's other nodes are ``others``."""
    engine = SimpleNamespace(api=SimpleNamespace(containers=lambda **_: listing))
    manager = SimpleNamespace(
        api=SimpleNamespace(inspect_node=lambda _id: attrs, nodes=lambda: [attrs, *others])
    )
    found = SwarmNode(
        host=STAGING.hosts[0],
        env=env,
        client=engine,
        ports=router.Ports.of(STAGING, 0),
        manager=manager,
        node_id="abcdef1234567890",
    )
    found.peers = [found]
    return found


def node_attrs(
    state: str, availability: str, ident: str = "abcdef1234567890", **labels: str
) -> dict[str, Any]:
    return {
        "ID": ident,
        "Status": {"State": state, "Addr": f"192.0.2.{len(ident)}"},
        "Spec": {"Availability": availability, "Role": "manager", "Labels": labels},
        "Description": {"Hostname": f"host-{ident[:4]}"},
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


def test_a_node_that_runs_the_environment_but_is_not_listed_is_refused_before_anything() -> None:
    """Its router could not be switched: it would keep the old release, then serve nothing."""
    listed = node_attrs("ready", "active")
    joined = node_attrs("ready", "active", ident="9f8e7d", tier="batch")
    with pytest.raises(ConveyorError) as info:
        node(listing=[], attrs=listed, others=(joined,)).preflight()
    assert str(info.value).startswith(
        "swarm node host-9f8e (192.0.2.6) runs staging's tasks but is not in deploy.toml's hosts"
    )
    # Nodes that run none of them: drained, down, or outside the environment's placement.
    drained = node_attrs("ready", "drain", ident="1a2b3c")
    down = node_attrs("down", "active", ident="4d5e6f")
    node(listing=[], attrs=listed, others=(drained, down)).preflight()
    placed = dataclasses.replace(STAGING, engine="swarm", placement=("node.labels.tier == web",))
    web = node_attrs("ready", "active", tier="web")
    node(listing=[], attrs=web, others=(joined,), env=placed).preflight()
    with pytest.raises(ConveyorError, match=r"is outside the environment's placement"):
        node(listing=[], attrs=listed, env=placed).preflight()


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


def test_other_nodes_are_the_unlisted_ones_that_run_the_environment_named_by_address() -> None:
    template = config.Host(name="{address}", docker="ssh://deploy@{address}", access="exec")
    env = dataclasses.replace(STAGING, engine="swarm", other_nodes=template)
    listed = node_attrs("ready", "active")
    joined = node_attrs("ready", "active", ident="9f8e7d")
    later = node_attrs("ready", "active", ident="3c4d5e6f7a")
    drained = node_attrs("ready", "drain", ident="1a2b3c")
    manager = SimpleNamespace(api=SimpleNamespace(nodes=lambda: [later, listed, drained, joined]))
    found = swarm._other_nodes(manager, env, [node(listing=[], attrs=listed)])
    assert [(host.name, host.docker, host.access, attrs["ID"]) for host, attrs in found] == [
        ("192.0.2.6", "ssh://deploy@192.0.2.6", "exec", "9f8e7d"),
        ("192.0.2.10", "ssh://deploy@192.0.2.10", "exec", "3c4d5e6f7a"),
    ]
    assert swarm._other_nodes(manager, STAGING, [node(listing=[], attrs=listed)]) == [], (
        "none without the key"
    )


def test_an_other_node_must_answer_as_the_node_it_was_found_as(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host = config.Host(name="192.0.2.6", docker="ssh://deploy@192.0.2.6")
    engine_of = {"192.0.2.6": "9f8e7d"}

    def connect(endpoint: str) -> Any:
        if endpoint.endswith("192.0.2.6"):
            return SimpleNamespace(info=lambda: {"Swarm": {"NodeID": engine_of["192.0.2.6"]}})
        raise EngineUnavailable(f"cannot reach {endpoint}")

    monkeypatch.setattr(swarm.engine, "connect", connect)
    assert swarm._connect_other(host, STAGING, "9f8e7d") is not None
    engine_of["192.0.2.6"] = "0a0b0c"
    with pytest.raises(EngineUnavailable, match=r"which is the engine of another node \(0a0b0c\)"):
        swarm._connect_other(host, STAGING, "9f8e7d")
    gone = dataclasses.replace(host, name="192.0.2.7", docker="ssh://deploy@192.0.2.7")
    with pytest.raises(
        EngineUnavailable,
        match=r"swarm node 192.0.2.7 runs the environment's tasks and hosts does not list it; "
        r"other_nodes reaches it at ssh://deploy@192.0.2.7: cannot reach",
    ):
        swarm._connect_other(gone, STAGING, "9f8e7d")
