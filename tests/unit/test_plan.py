"""The deploy planner: exact steps from config and observed state, no daemon."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from conveyor import config, router
from conveyor.containers import ServiceContainer, container_fingerprint
from conveyor.errors import ConveyorError
from conveyor.ledger import ReleaseRecord
from conveyor.observe import EnvironmentState, HostState
from conveyor.plan import plan_move
from conveyor.releases import Release, ServiceImage

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def staging() -> config.Environment:
    return config.load(ROOT / "deploy.toml").environment("staging")


def release(version: str, image: str) -> Release:
    return Release(
        version=version,
        commit="c" * 40,
        dirty=False,
        images={
            name: ServiceImage(name, f"sha256:{image}{name}", f"reg/{name}@sha256:x", version)
            for name in ("api", "web")
        },
        source=f"dist/{version}",
    )


STAGING = config.load(ROOT / "deploy.toml").environment("staging")


def container(
    service: str, color: str, release_id: str, status: str, image: str, *, declared: str = ""
) -> ServiceContainer:
    return ServiceContainer(
        name=f"conveyor-staging-{service}-{color}-{release_id}",
        id=f"id-{service}-{color}-{release_id}",
        service=service,
        color=color,
        release=release_id,
        version="v",
        image_id=f"sha256:{image}{service}",
        status=status,
        health=None,
        created=release_id,
        fingerprint=declared or container_fingerprint(STAGING.services[service], color),
    )


def deployed(rid: str, version: str, image: str, color: str) -> ReleaseRecord:
    """A verified record whose containers are the ``container()`` names above."""
    return ReleaseRecord(
        id=rid,
        environment="staging",
        kind="deploy",
        version=version,
        commit="c" * 40,
        services={name: {"image_id": f"sha256:{image}{name}"} for name in ("api", "web")},
        who="tester",
        started=float(rid[1:]),
        outcome="succeeded",
        containers={
            "local": {name: f"conveyor-staging-{name}-{color}-{rid}" for name in ("api", "web")}
        },
    )


def state(live: dict[str, str | None], containers: list[ServiceContainer]) -> EnvironmentState:
    return EnvironmentState(
        env="staging",
        hosts=[HostState("local", "running", live, containers)],
        records=[],
        lock=None,
    )


def ports(env: config.Environment) -> dict[str, router.Ports]:
    return {"local": router.Ports.of(env, 0)}


def test_first_deploy_starts_blue_on_an_empty_host(staging: config.Environment) -> None:
    plan = plan_move(
        staging, state({"api": None, "web": None}, []), ports(staging), release("1.0", "a"), "r0001"
    )
    moves = {m.service: m for m in plan.hosts[0].moves}
    assert moves["api"].to_color == "blue" and moves["api"].from_color is None
    assert moves["api"].port == 8101 and moves["web"].port == 8201
    assert moves["api"].container == "conveyor-staging-api-blue-r0001"
    assert plan.steps() == [
        "deploy 1.0 to staging as r0001",
        "  source: dist/1.0",
        "1. take the staging lock",
        "2. [local] start conveyor-staging-api-blue-r0001 from reg/api@sha256:x "
        "on 127.0.0.1:8101 (blue)",
        "3. [local] start conveyor-staging-web-blue-r0001 from reg/web@sha256:x "
        "on 127.0.0.1:8201 (blue)",
        "4. [local] wait until api, web are healthy and /readyz reports 1.0",
        "5. [local] smoke-check through the router's preview route",
        "6. [local] switch traffic: api (none) → blue, web (none) → blue",
        "7. [local] verify for 5 s through http://127.0.0.1:8080; "
        "on failure switch every host back",
        "8. drain 2 s, then stop the old color (kept for rollback)",
        "9. record r0001 in the ledger and release the lock",
    ]


def test_the_next_deploy_goes_to_the_other_color_and_clears_leftovers(
    staging: config.Environment,
) -> None:
    observed = state(
        {"api": "blue", "web": "blue"},
        [
            container("api", "blue", "r0001", "running", "a"),
            container("web", "blue", "r0001", "running", "a"),
            container("api", "green", "r0002", "running", "b"),  # a crashed deploy's leftover
        ],
    )
    plan = plan_move(staging, observed, ports(staging), release("3.0", "c"), "r0003")
    api = plan.hosts[0].moves[0]
    assert (api.from_color, api.to_color, api.port) == ("blue", "green", 8102)
    assert api.stop_first == ("conveyor-staging-api-green-r0002",)
    assert api.reuse is None
    assert "[local] stop leftover conveyor-staging-api-green-r0002" in "\n".join(plan.steps())


def test_a_rollback_restarts_the_kept_container_of_that_release(
    staging: config.Environment,
) -> None:
    observed = state(
        {"api": "green", "web": "green"},
        [
            container("api", "blue", "r0001", "exited", "a"),
            container("web", "blue", "r0001", "exited", "a"),
            container("api", "green", "r0002", "running", "b"),
            container("web", "green", "r0002", "running", "b"),
        ],
    )
    plan = plan_move(
        staging,
        observed,
        ports(staging),
        release("1.0", "a"),
        "r0003",
        kind="rollback",
        returning_to=deployed("r0001", "1.0", "a", "blue"),
    )
    for move in plan.hosts[0].moves:
        assert move.reuse == f"conveyor-staging-{move.service}-blue-r0001"
        assert move.container == move.reuse
        assert move.to_color == "blue"
    assert "restart kept container conveyor-staging-api-blue-r0001" in "\n".join(plan.steps())


def test_a_failed_release_with_the_same_images_is_never_restarted(
    staging: config.Environment,
) -> None:
    """Issue 10, bug 1: r0009 failed running 1.0's images; returning to r0001 (whose own
    containers were pruned) must start fresh, not restart r0009's."""
    observed = state(
        {"api": "green", "web": "green"},
        [
            container("api", "blue", "r0009", "exited", "a"),
            container("web", "blue", "r0009", "exited", "a"),
            container("api", "green", "r0006", "running", "b"),
            container("web", "green", "r0006", "running", "b"),
        ],
    )
    plan = plan_move(
        staging,
        observed,
        ports(staging),
        release("1.0", "a"),
        "r0010",
        kind="rollback",
        returning_to=deployed("r0001", "1.0", "a", "blue"),
    )
    for move in plan.hosts[0].moves:
        assert move.reuse is None
        assert move.container == f"conveyor-staging-{move.service}-blue-r0010"
    assert "restart kept" not in "\n".join(plan.steps())


def test_a_kept_container_is_not_reused_when_its_declaration_changed(
    staging: config.Environment,
) -> None:
    observed = state(
        {"api": "green", "web": "green"},
        [
            container("api", "blue", "r0001", "exited", "a", declared="before-the-env-changed"),
            container("web", "blue", "r0001", "exited", "a"),
            container("api", "green", "r0002", "running", "b"),
            container("web", "green", "r0002", "running", "b"),
        ],
    )
    plan = plan_move(
        staging,
        observed,
        ports(staging),
        release("1.0", "a"),
        "r0003",
        kind="rollback",
        returning_to=deployed("r0001", "1.0", "a", "blue"),
    )
    api, web = plan.hosts[0].moves
    assert api.reuse is None and api.container == "conveyor-staging-api-blue-r0003"
    assert web.reuse == "conveyor-staging-web-blue-r0001"


def test_each_host_moves_from_its_own_live_color(staging: config.Environment) -> None:
    observed = EnvironmentState(
        env="staging",
        hosts=[
            HostState("h1", "running", {"api": "blue", "web": "blue"}, []),
            HostState("h2", "running", {"api": "green", "web": "green"}, []),
        ],
        records=[],
        lock=None,
    )
    both = {"h1": router.Ports.of(staging, 0), "h2": router.Ports.of(staging, 1000)}
    plan = plan_move(staging, observed, both, release("2.0", "b"), "r0002")
    assert [(h.host, h.moves[0].to_color, h.moves[0].port) for h in plan.hosts] == [
        ("h1", "green", 8102),
        ("h2", "blue", 9101),
    ]


def warm_state(blue: str, *, records: list[ReleaseRecord]) -> EnvironmentState:
    """r0002 (green) is live and kept r0001's blue containers warm; ``blue`` is their status."""
    observed = state(
        {"api": "green", "web": "green"},
        [
            container("api", "blue", "r0001", blue, "a"),
            container("web", "blue", "r0001", blue, "a"),
            container("api", "green", "r0002", "running", "b"),
            container("web", "green", "r0002", "running", "b"),
        ],
    )
    observed.records = records
    return observed


def live_with_warm() -> list[ReleaseRecord]:
    first = deployed("r0001", "1.0", "a", "blue")
    live = deployed("r0002", "2.0", "b", "green")
    live.warm = {
        "record": "r0001",
        "version": "1.0",
        "until": 9e9,
        "containers": {"local": first.containers["local"]},
    }
    return [first, live]


def test_a_rollback_inside_the_window_uses_the_warm_containers_without_starting_any(
    staging: config.Environment,
) -> None:
    records = live_with_warm()
    observed = warm_state("running", records=records)
    assert [observed.hosts[0].role(c, records[1]) for c in observed.hosts[0].containers] == [
        "warm",
        "warm",
        "live",
        "live",
    ]
    assert observed.hosts[0].leftovers(records[1]) == []
    plan = plan_move(
        staging,
        observed,
        ports(staging),
        release("1.0", "a"),
        "r0003",
        kind="rollback",
        returning_to=records[0],
    )
    for move in plan.hosts[0].moves:
        assert move.warm and move.reuse == f"conveyor-staging-{move.service}-blue-r0001"
        assert move.stop_first == ()
    steps = "\n".join(plan.steps())
    assert "use warm container conveyor-staging-api-blue-r0001 (running: no start)" in steps
    assert "then stop the old color" in steps  # a rollback keeps nothing warm


def test_a_node_that_joined_since_uses_the_warm_service_and_stops_none(
    staging: config.Environment,
) -> None:
    """A swarm node added after r0001 and r0002 runs their global services' tasks too: the
    records do not list it, yet it must reuse r0001's warm service like every other node, not
    stop it as a leftover (which would remove it from every node)."""
    records = live_with_warm()
    observed = warm_state("running", records=records)
    joined = dataclasses.replace(observed.hosts[0], name="n3")
    observed.hosts.append(joined)
    plan = plan_move(
        staging,
        observed,
        {**ports(staging), "n3": router.Ports.of(staging, 0)},
        release("1.0", "a"),
        "r0003",
        kind="rollback",
        returning_to=records[0],
    )
    assert [(m.warm, m.stop_first) for h in plan.hosts for m in h.moves] == [(True, ())] * 4
    assert joined.leftovers(records[1]) == []


def test_swarm_nodes_that_disagree_on_a_service_stop_before_anything_changes(
    staging: config.Environment,
) -> None:
    """n3's copy of r0001's blue service does not fit (another declaration), so n3 would stop
    it as a leftover while local reuses it: on a swarm that is one service, refused; on hosts
    they are two containers, planned."""
    records = live_with_warm()
    observed = warm_state("running", records=records)
    misfit = [
        dataclasses.replace(c, fingerprint="another") if c.color == "blue" else c
        for c in observed.hosts[0].containers
    ]
    observed.hosts.append(dataclasses.replace(observed.hosts[0], name="n3", containers=misfit))
    both = {**ports(staging), "n3": router.Ports.of(staging, 0)}
    swarm = dataclasses.replace(staging, engine="swarm")
    with pytest.raises(ConveyorError, match="swarm nodes disagree: n3 would remove"):
        plan_move(swarm, observed, both, release("1.0", "a"), "r0003", returning_to=records[0])
    plan = plan_move(staging, observed, both, release("1.0", "a"), "r0003", returning_to=records[0])
    assert plan.hosts[1].moves[0].stop_first == ("conveyor-staging-api-blue-r0001",)


def test_a_warm_container_that_died_takes_the_normal_path_and_says_so(
    staging: config.Environment,
) -> None:
    records = live_with_warm()
    plan = plan_move(
        staging,
        warm_state("exited", records=records),
        ports(staging),
        release("1.0", "a"),
        "r0003",
        kind="rollback",
        returning_to=records[0],
    )
    api = plan.hosts[0].moves[0]
    assert not api.warm and api.reuse == "conveyor-staging-api-blue-r0001"
    assert (
        "local: the warm conveyor-staging-api-blue-r0001 is no longer running — the normal "
        "path: restart conveyor-staging-api-blue-r0001" in plan.notes
    )


def test_a_deploy_inside_the_window_replaces_the_warm_release(
    staging: config.Environment,
) -> None:
    records = live_with_warm()
    plan = plan_move(
        staging,
        warm_state("running", records=records),
        ports(staging),
        release("3.0", "c"),
        "r0003",
    )
    api = plan.hosts[0].moves[0]
    assert api.to_color == "blue" and not api.warm and api.reuse is None
    assert api.stop_first == ("conveyor-staging-api-blue-r0001",)
    assert (
        "local: the warm conveyor-staging-api-blue-r0001 is replaced by this deploy" in plan.notes
    )
    assert "keep the old color warm for 600 s" in "\n".join(plan.steps())
