"""The router as a global Swarm service: what a task starts on, how the service is updated,
when a node's router counts as settled."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest
from docker.types import RestartPolicy
from tests.unit.test_plan import STAGING

from conveyor import images, router, swarmrouter
from conveyor.errors import ConveyorError

PORTS = router.Ports.of(STAGING, 0)
BLUE = swarmrouter.published(STAGING, PORTS, {"api": "blue", "web": "blue"}, "sha256:r1")
GENERATION = swarmrouter.config_name(STAGING.name, BLUE)


def start(tmp_path: Path, live: str, published: str) -> str:
    """Run the task's start script, its paths moved under ``tmp_path`` and HAProxy replaced
    by echo, with the service's labels as Swarm fills them in; what the node's file holds."""
    script = (
        swarmrouter.START.replace(swarmrouter.VOLUME_TARGET, str(tmp_path / "volume"))
        .replace(swarmrouter.TEMPLATE_PATH, str(tmp_path / "template.cfg"))
        .replace("/tmp/bound.cfg", str(tmp_path / "bound.cfg"))
        .replace("exec haproxy", "exec echo haproxy")
    )
    subprocess.run(
        ["sh", "-c", script],
        env={"CONVEYOR_LIVE": live, "CONVEYOR_PUBLISHED": published, "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
    return (tmp_path / "volume" / "haproxy.cfg").read_text()


def test_a_new_task_enables_the_published_colors_exactly_as_render_does(tmp_path: Path) -> None:
    (tmp_path / "volume").mkdir()
    (tmp_path / "template.cfg").write_text(BLUE.template)
    for live in ({"api": "blue", "web": "green"}, {"api": "green", "web": None}, {}):
        wanted = swarmrouter.published(STAGING, PORTS, live, "sha256:r1")
        rendered = start(tmp_path, wanted.live, wanted.colors)
        assert rendered == router.render(STAGING, PORTS, live), live


def test_a_task_keeps_its_nodes_own_file_unless_it_missed_the_published_colors(
    tmp_path: Path,
) -> None:
    (tmp_path / "volume").mkdir()
    (tmp_path / "template.cfg").write_text(BLUE.template)
    published = router.render(STAGING, PORTS, {"api": "blue", "web": "blue"})
    # A node new to the swarm: the published colors.
    assert start(tmp_path, BLUE.live, BLUE.colors) == published
    # A task Swarm restarted after a switch wrote the node's file, marked newer than the
    # colors published then: the node's own colors.
    (tmp_path / "volume" / "haproxy.cfg").write_text("switched colors\n")
    (tmp_path / "volume" / "published").write_text(f"{BLUE.colors}\n")
    assert start(tmp_path, BLUE.live, BLUE.colors) == "switched colors\n"
    # A node back after missing a publication: the newer published colors win.
    green = swarmrouter.published(STAGING, PORTS, {"api": "green", "web": "blue"}, "sha256:r1")
    assert "api=green" in green.live
    assert start(tmp_path, green.live, green.colors) == (
        router.render(STAGING, PORTS, {"api": "green", "web": "blue"})
    )
    assert (tmp_path / "volume" / "published").read_text() == f"{green.colors}\n"


def test_a_commands_publication_is_newer_than_a_file_written_before_it_of_any_colors(
    tmp_path: Path,
) -> None:
    """A node drained in its verify window: its file says green, marked with the colors
    published then, and its router was gone when the deploy switched it back. The command's
    own publication of the same colors (blue) is newer than that file."""
    (tmp_path / "volume").mkdir()
    (tmp_path / "template.cfg").write_text(BLUE.template)
    green = router.render(STAGING, PORTS, {"api": "green", "web": "green"})
    (tmp_path / "volume" / "haproxy.cfg").write_text(green)
    (tmp_path / "volume" / "published").write_text(f"{BLUE.colors}\n")
    ended = swarmrouter.published(
        STAGING, PORTS, {"api": "blue", "web": "blue"}, "sha256:r1", serial=swarmrouter.new_serial()
    )
    again = swarmrouter.published(
        STAGING, PORTS, {"api": "blue", "web": "blue"}, "sha256:r1", serial=swarmrouter.new_serial()
    )
    assert (ended.live, ended.generation) == (BLUE.live, BLUE.generation)
    assert len({BLUE.colors, ended.colors, again.colors}) == 3
    assert start(tmp_path, ended.live, ended.colors) == (
        router.render(STAGING, PORTS, {"api": "blue", "web": "blue"})
    )


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy binary not on this machine")
def test_haproxy_accepts_the_published_config_with_the_bound_socket(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(BLUE.template)
    bound = tmp_path / "bound.cfg"
    bound.write_text(f"global\n    stats socket {tmp_path / 'bound.sock'}\n")
    checked = subprocess.run(
        ["haproxy", "-c", "-f", str(config), "-f", str(bound)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "WARNING" not in checked.stderr, checked.stderr


def test_colors_change_the_published_id_and_only_the_image_or_routes_the_generation() -> None:
    green = swarmrouter.published(STAGING, PORTS, {"api": "green", "web": "blue"}, "sha256:r1")
    new_image = swarmrouter.published(STAGING, PORTS, {"api": "blue", "web": "blue"}, "sha256:r2")
    assert green.generation == BLUE.generation != new_image.generation
    assert len({BLUE.colors, green.colors, new_image.colors}) == 3
    assert swarmrouter.published(STAGING, PORTS, {"api": "blue", "web": "blue"}, "sha256:r1") == (
        BLUE
    )


class FakeService:
    def __init__(self, generation: str, colors: str = "") -> None:
        labels = {swarmrouter.CONFIG_LABEL: generation, swarmrouter.PUBLISHED_LABEL: colors}
        self.id = "service-id"
        self.attrs = {
            "Version": {"Index": 7},
            "Spec": {"Name": "conveyor-staging-router", "Labels": labels, "TaskTemplate": TASKS},
        }
        self.updates: list[dict[str, Any]] = []

    def update(self, **spec: Any) -> None:
        self.updates.append(spec)


# The task template as the manager stores it: sent back as it is when only labels change.
TASKS = {"ContainerSpec": {"Image": "sha256:r1"}, "Networks": [{"Target": "host"}]}


class FakeConfig:
    def __init__(self, name: str, removed: list[str]) -> None:
        self.name, self.id, self._removed = name, f"id-{name}", removed

    def remove(self) -> None:
        if self.name.endswith("in-use"):
            raise docker.errors.APIError("config is in use by a task")
        self._removed.append(self.name)


def manager(service: FakeService | None, configs: list[str]) -> Any:
    removed: list[str] = []
    created: list[dict[str, Any]] = []

    def get(name: str) -> Any:
        if service is None:
            raise docker.errors.NotFound(name)
        return service

    def config_get(name: str) -> Any:
        if name not in configs:
            raise docker.errors.NotFound(name)
        return FakeConfig(name, removed)

    def config_create(name: str, data: bytes, labels: dict[str, str]) -> Any:
        configs.append(name)
        return FakeConfig(name, removed)

    relabeled: list[tuple[Any, ...]] = []

    def update_service(ident: str, version: int, **spec: Any) -> None:
        relabeled.append((ident, version, spec))

    return SimpleNamespace(
        api=SimpleNamespace(update_service=update_service),
        relabeled=relabeled,
        services=SimpleNamespace(get=get, create=lambda image, **spec: created.append(spec)),
        configs=SimpleNamespace(
            get=config_get,
            create=config_create,
            list=lambda filters: [FakeConfig(n, removed) for n in configs],
        ),
        removed=removed,
        created=created,
    )


class Said:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, line: str) -> None:
        self.lines.append(line)


RESTART = RestartPolicy(condition="any")


def test_a_service_as_wanted_is_left_alone() -> None:
    service = FakeService(GENERATION, BLUE.colors)
    fake = manager(service, [GENERATION])
    assert swarmrouter.change(fake, STAGING.name, BLUE) is None
    assert not swarmrouter.apply(fake, STAGING, BLUE, RESTART, Said())
    assert service.updates == []


def test_new_colors_are_published_in_the_labels_alone_which_restarts_no_router() -> None:
    service = FakeService(GENERATION, "older")
    fake = manager(service, [GENERATION])
    said = Said()
    assert swarmrouter.change(fake, STAGING.name, BLUE) == swarmrouter.PUBLISH_COLORS
    assert not swarmrouter.restarts(service, STAGING.name, BLUE)
    assert swarmrouter.apply(fake, STAGING, BLUE, RESTART, said)
    assert service.updates == []
    ((ident, version, spec),) = fake.relabeled
    assert (ident, version, spec["name"]) == ("service-id", 7, "conveyor-staging-router")
    assert spec["task_template"] is TASKS  # exactly as stored: no task restarts
    assert spec["labels"] == {
        "conveyor.env": "staging",
        "conveyor.role": "router",
        swarmrouter.CONFIG_LABEL: GENERATION,
        swarmrouter.LIVE_LABEL: "api=blue,web=blue",
        swarmrouter.PUBLISHED_LABEL: BLUE.colors,
    }
    assert said.lines == []


def test_a_new_generation_is_a_start_first_update_on_every_node_at_once() -> None:
    service = FakeService("conveyor-staging-router-old", BLUE.colors)
    fake = manager(service, ["conveyor-staging-router-old", "conveyor-staging-router-in-use"])
    said = Said()
    assert swarmrouter.restarts(service, STAGING.name, BLUE)
    assert "update the router service" in (swarmrouter.change(fake, STAGING.name, BLUE) or "")
    assert swarmrouter.apply(fake, STAGING, BLUE, RESTART, said)
    (spec,) = service.updates
    assert spec["image"] == "sha256:r1"
    assert spec["update_config"]["Order"] == "start-first"
    assert spec["update_config"]["Parallelism"] == 0
    assert spec["stop_signal"] == "SIGUSR1"
    # Swarm fills the published colors in when it creates a task.
    assert spec["env"] == [
        'CONVEYOR_LIVE={{index .Service.Labels "conveyor.live"}}',
        'CONVEYOR_PUBLISHED={{index .Service.Labels "conveyor.router-published"}}',
    ]
    assert spec["container_labels"][swarmrouter.CONFIG_LABEL] == GENERATION
    (config,) = spec["configs"]
    assert (config["File"]["Name"], config["ConfigName"]) == (
        swarmrouter.TEMPLATE_PATH,
        GENERATION,
    )
    (mount,) = spec["mounts"]
    assert (mount["Source"], mount["Target"]) == ("conveyor-staging-router", "/etc/conveyor")
    # The replaced generation's config goes; one a draining task still holds stays.
    assert fake.removed == ["conveyor-staging-router-old"]
    assert said.lines == [
        "  router service: new image or routes; every node starts its router anew"
    ]


def test_a_missing_service_is_created_with_its_published_config() -> None:
    fake = manager(None, [])
    assert swarmrouter.change(fake, STAGING.name, BLUE) == (
        "create the router service: Swarm starts a router on every node"
    )
    assert swarmrouter.apply(fake, STAGING, BLUE, RESTART, Said())
    (spec,) = fake.created
    assert spec["name"] == "conveyor-staging-router"
    assert spec["mode"].mode == "global"
    assert spec["constraints"] == []


def test_the_placement_puts_routers_only_where_it_is_met_and_a_new_one_restarts_them() -> None:
    placed = dataclasses.replace(STAGING, engine="swarm", placement=("node.labels.tier == web",))
    wanted = swarmrouter.published(placed, PORTS, {"api": "blue", "web": "blue"}, "sha256:r1")
    assert wanted.generation != BLUE.generation
    service = FakeService(GENERATION, BLUE.colors)
    fake = manager(service, [GENERATION])
    assert swarmrouter.restarts(service, STAGING.name, wanted)
    assert swarmrouter.apply(fake, placed, wanted, RESTART, Said())
    (spec,) = service.updates
    assert spec["constraints"] == ["node.labels.tier == web"]


def task(generation: str, state: str = "running") -> dict[str, Any]:
    return {"Id": "t1", "State": state, "Labels": {swarmrouter.CONFIG_LABEL: generation}}


@pytest.mark.parametrize(
    "tasks",
    [
        [task("conveyor-staging-router-old"), task(GENERATION)],  # the old one still drains
        [task(GENERATION, "created")],
        [task("conveyor-staging-router-old")],
        [],
    ],
    ids=["two-routers", "not-started-yet", "old-generation", "none"],
)
def test_a_node_is_not_settled_until_it_runs_one_router_of_the_generation(
    tasks: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(swarmrouter, "SETTLE_SECONDS", 0.2)
    client = SimpleNamespace(containers=SimpleNamespace(get=lambda ident: ident))
    with pytest.raises(ConveyorError, match=r"n1: the router service's task did not settle"):
        swarmrouter.settle(
            lambda: tasks, client, env=STAGING, node="n1", wanted=BLUE, why=lambda: "task running"
        )
    settled = swarmrouter.settle(
        lambda: [task(GENERATION)], client, env=STAGING, node="n1", wanted=BLUE, why=str
    )
    assert settled == "t1"


def test_the_router_service_names_a_pushed_image_by_digest_else_by_id() -> None:
    """A node that joins can pull a digest from the registry; an ID only names a copy. A
    digest in another repository (an old registry) is not this registry's."""
    repository = "198.18.0.254:5000/p/router"
    pushed = SimpleNamespace(
        id="sha256:r1",
        attrs={"RepoDigests": ["192.0.2.9:5000/p/router@sha256:d0", f"{repository}@sha256:d1"]},
    )
    local = SimpleNamespace(id="sha256:r1", attrs={"RepoDigests": []})
    assert images.router_reference(pushed, repository) == f"{repository}@sha256:d1"
    assert images.router_reference(pushed, None) == "sha256:r1"
    assert images.router_reference(pushed, "192.0.2.7:5000/p/router") == "sha256:r1"
    assert images.router_reference(local, repository) == "sha256:r1"
