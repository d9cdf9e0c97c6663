"""conveyor on a real two-node Docker Swarm (issue 16): each color a global Swarm service.

The nodes are dockerds in their own network namespaces (testkit.swarm); conveyor reaches each
on its socket, its router and probes through exec (nothing in the machine's namespace can reach
a node's address). Load runs from the switch's namespace on both nodes' routers at once.
"""

from __future__ import annotations

import json
import time
from typing import Any

from conveyor import artifacts
from testkit import sandbox
from testkit.loadgen import LoadResult
from testkit.steps import ok
from testkit.swarm import Cluster, Node

VERSIONS = ("1.0.0", "2.0.0", "9.0.1+notready")
# A release that reaches the nodes only through the registry, pinned to its digests.
PUSHED = "3.0.0"
# The canary test's: short windows, the same judging as the defaults (test_canary.py's).
CANARY = "{ steps = [25, 100], interval = 3 }"
ANALYSIS = "min_requests = 20\nmax_inconclusive = 2\nsample = 0.5"
FAILING_SHARE = "9.1.0+failshare"  # 30% of its answers are 500s
# The api reads its database URL from a file secret: it serves only if Swarm mounted it.
SECRET_VARIABLE = "SWARM_TEST_DATABASE_URL"  # noqa: S105 - a name, not a value
SECRET_VALUE = "sqlite:////data/refapi.db"  # noqa: S105 - a test's own, not a password
# The node label that places the canary test's environment.
PLACED_LABEL = "conveyor-test.serves"


def swarm_environment(
    cluster: Cluster,
    make_environment: Any,
    test_releases: Any,
    versions: tuple[str, ...] = VERSIONS,
    **options: Any,
) -> Any:
    for version in (*versions, PUSHED):
        test_releases.make(version)
    # These releases' images are copied onto each node, and the services name them by image
    # ID; PUSHED's go through a registry (deploy_by_digest).
    tags = [v.replace("+", "-") for v in versions]
    cluster.load_images([f"conveyor-test/{name}:{tag}" for tag in tags for name in ("api", "web")])
    return make_environment(
        hosts=[{"name": n.name, "docker": n.daemon.url, "access": "exec"} for n in cluster.nodes],
        engine="swarm",
        # A front load balancer reaches each node's router on the node's address.
        router_bind="0.0.0.0",  # noqa: S104 - inside the node's own namespace
        api_env="",
        api_secrets=f'DATABASE_URL = {{ from = "env:{SECRET_VARIABLE}", as = "file" }}',
        **{"keep_warm": 60, **options},
    )


def test_a_canary_steps_every_node_together_and_is_aborted_on_every_node(
    swarm_cluster: Cluster, make_environment: Any, test_releases: Any
) -> None:
    """The canary gate on a swarm: each node's router splits its own traffic between the two
    colors' tasks, and the steps move on every node together. A good release reaches 100%
    without a failed request; one that fails a share of requests is aborted on every node.

    The environment is placed on the nodes labelled for it: n3 joins without the label, and
    runs nothing of it (no color, no router, no flags); listed, it is refused before anything
    changes."""
    cluster = swarm_cluster
    for node in cluster.nodes:
        update_node(cluster, node, Labels={PLACED_LABEL: "yes"})
    env = swarm_environment(
        cluster,
        make_environment,
        test_releases,
        versions=("1.0.0", "2.0.0", FAILING_SHARE),
        canary=CANARY,
        analysis=ANALYSIS,
        keep_warm=0,
        placement=f'["node.labels.{PLACED_LABEL} == yes"]',
    )

    def cli(*args: str) -> Any:
        return env.cli(*args, "--env", env.name, env={SECRET_VARIABLE: SECRET_VALUE})

    ok(cli("deploy", "--version", "1.0.0"))
    load = cluster.start_load(env.public(), "/api/version", rate=100, max_seconds=120)
    try:
        good = ok(cli("deploy", "--version", "2.0.0"))
    finally:
        good_load = cluster.stop_load(load)
    assert "canary: 25% of traffic on 2.0.0" in good.stdout, good.stdout
    assert cluster.versions(env.public()) == {"n1": "2.0.0", "n2": "2.0.0"}
    for target, result in good_load.items():
        assert result["requests"] > 100 and result["failures"] == 0, (target, result)

    load = cluster.start_load(env.public(), "/api/version", rate=100, max_seconds=120)
    try:
        bad = cli("deploy", "--version", FAILING_SHARE)
    finally:
        bad_load = cluster.stop_load(load)
    assert bad.returncode != 0, bad.stdout
    assert "[fail-fast]" in bad.stderr.strip().splitlines()[-1], bad.stderr
    assert "on n1, n2" in bad.stdout, bad.stdout
    assert sum(result["failures"] for result in bad_load.values()) > 0, "the fault never showed"
    assert cluster.versions(env.public()) == {"n1": "2.0.0", "n2": "2.0.0"}
    weights = json.loads(ok(cli("rollout", "--json")).stdout)["weights"]
    assert {node: shown["api"] for node, shown in weights.items()} == {
        "n1": {"green": 100},
        "n2": {"green": 100},
    }, weights
    outside_the_placement(cluster, env, cli)


def outside_the_placement(cluster: Cluster, env: Any, cli: Any) -> None:
    """n3 joins without the environment's label: Swarm starts none of its tasks there (no
    color, no router), while every one of its services is global. Listed in hosts, a deploy
    refuses n3 before anything changes, and status says why it does not serve."""
    placed = list(cluster.nodes)
    outside = cluster.add_node(leave_out=cluster.images)
    services = color_services(cluster, env)
    time.sleep(3)  # Swarm schedules a global service's task on a node within a second

    def runs_on_n3() -> list[str]:
        """The tasks the manager gave n3 (even ones that cannot start there: n3 has none of
        the releases' images), and the containers on n3, of the environment."""
        node_id = outside.client.info()["Swarm"]["NodeID"]
        names = {s.id: s.name for s in cluster.manager.client.services.list()}
        tasks = cluster.manager.client.api.tasks(filters={"node": node_id})
        label = f"conveyor.env={env.name}"
        containers = outside.client.containers.list(all=True, filters={"label": label})
        return [names.get(t["ServiceID"], t["ServiceID"]) for t in tasks] + [
            c.name for c in containers
        ]

    assert runs_on_n3() == []
    list_hosts(env, [*placed, outside])
    refused = cli("deploy", "--version", "1.0.0")
    status = ok(cli("status")).stdout
    list_hosts(env, placed)
    assert refused.returncode != 0, refused.stdout
    unmet = f"outside the environment's placement (node.labels.{PLACED_LABEL} == yes is not met)"
    assert f"swarm node n3 is {unmet}" in refused.stderr.strip().splitlines()[-1], refused.stderr
    assert f"{unmet} — NOT serving" in status, status
    assert color_services(cluster, env) == services, "the refused deploy started nothing"
    versions = cluster.versions(env.public())
    assert (versions["n1"], versions["n2"]) == ("2.0.0", "2.0.0"), versions
    assert "Connection refused" in versions["n3"], versions
    assert runs_on_n3() == []


def color_services(cluster: Cluster, env: Any) -> dict[str, str]:
    """The environment's color services: name → the version its spec carries."""
    services = cluster.manager.client.services.list(
        filters={"label": [f"conveyor.env={env.name}", "conveyor.role=service"]}
    )
    return {s.name: s.attrs["Spec"]["Labels"]["conveyor.version"] for s in services}


def router_tasks(cluster: Cluster, env: Any) -> dict[str, list[str]]:
    """Each node's running router task containers (the router service's), by node."""
    label = f"com.docker.swarm.service.name=conveyor-{env.name}-router"
    return {
        node.name: [c.id for c in node.client.containers.list(filters={"label": label})]
        for node in cluster.nodes
    }


def wait_for(what: Any, wanted: Any, seconds: float = 60) -> None:
    """Until ``what()`` returns ``wanted``, within ``seconds``."""
    deadline = time.monotonic() + seconds
    while (seen := what()) != wanted:
        assert time.monotonic() < deadline, seen
        time.sleep(0.5)


def killed_at_second_start(env: Any, cli_env: dict[str, str]) -> str:
    """SIGKILL a deploy of 1.0.0 as its second node starts: n1 is switched and verified, n2
    not. Its phase trace up to then."""
    process = env.cli_running(
        "deploy", "--env", env.name, "--version", "1.0.0",
        env={**cli_env, "CONVEYOR_TRACE_PHASES": "1"},
    )  # fmt: skip
    assert process.stderr is not None
    seen, starts = [], 0
    for line in process.stderr:
        seen.append(line.strip())
        starts += line.strip() == "phase: start"
        if starts == 2:
            process.kill()
            break
    process.wait(timeout=30)
    assert starts == 2, seen
    return "\n".join(seen)


def deploy_never_ready(env: Any, cli: Any) -> Any:
    """A deploy of 9.0.1+notready, which fails when the ready timeout ends: 10 s, not 30."""
    env.retime(ready=10)
    try:
        return cli("deploy", "--version", "9.0.1+notready")
    finally:
        env.retime(ready=30)


def update_node(cluster: Cluster, node: Node, *, through: Node | None = None, **spec: str) -> None:
    """Change ``node``'s spec (Availability, Role) through the manager ``through``."""
    manager = (through or cluster.manager).client
    entry = next(n for n in manager.nodes.list() if n.attrs["Status"].get("Addr") == node.address)
    entry.update({**entry.attrs["Spec"], **spec})


def set_availability(cluster: Cluster, node: Node, availability: str) -> None:
    update_node(cluster, node, Availability=availability)


def test_deploys_and_rollbacks_run_every_node_on_swarm_services_without_a_failed_request(
    swarm_cluster: Cluster,
    make_environment: Any,
    test_releases: Any,
    chaos_figures: Any,
    crash: Any,
) -> None:
    cluster = swarm_cluster
    env = swarm_environment(cluster, make_environment, test_releases)

    def cli(*args: str) -> Any:
        return env.cli(*args, "--env", env.name, env={SECRET_VARIABLE: SECRET_VALUE})

    ok(cli("deploy", "--version", "1.0.0"))
    assert cluster.versions(env.public()) == {"n1": "1.0.0", "n2": "1.0.0"}
    assert set(color_services(cluster, env).values()) == {"1.0.0"}
    routers = the_router_is_a_global_service(cluster, env)

    load = cluster.start_load(env.public(), "/api/version", rate=50, max_seconds=240)
    try:
        new = ok(cli("deploy", "--version", "2.0.0"))
        assert cluster.versions(env.public()) == {"n1": "2.0.0", "n2": "2.0.0"}
        assert router_tasks(cluster, env) == routers, "publishing the colors restarts none"
        assert set(color_services(cluster, env).values()) == {"1.0.0", "2.0.0"}, "1.0.0 warm"
        warm = ok(cli("rollback"))
        assert cluster.versions(env.public()) == {"n1": "1.0.0", "n2": "1.0.0"}
        failed = deploy_never_ready(env, cli)
        assert cluster.versions(env.public()) == {"n1": "1.0.0", "n2": "1.0.0"}
        cold = ok(cli("rollback", "--to", "r0002"))
        killed = killed_at_second_start(env, cli_env={SECRET_VARIABLE: SECRET_VALUE})
        assert cluster.versions(env.public()) == {"n1": "1.0.0", "n2": "2.0.0"}, killed
        converged = ok(cli("deploy", "--version", "1.0.0"))
    finally:
        results = cluster.stop_load(load)

    assert "n1: api@" in new.stdout and "n2: api@" in new.stdout, new.stdout
    assert "n1: using warm api@blue" in warm.stdout, warm.stdout
    assert "n2: using warm api@blue" in warm.stdout, warm.stdout
    assert failed.returncode != 0, failed.stdout
    assert "Traceback" not in failed.stderr, failed.stderr
    assert "failed in phase 'ready'" in failed.stderr, failed.stderr
    assert "switching traffic back" not in failed.stdout, "it never switched"
    assert "n2: starting api@green (2.0.0)" in cold.stdout, cold.stdout
    assert "interrupted" in converged.stdout, converged.stdout
    assert cluster.versions(env.public()) == {"n1": "1.0.0", "n2": "1.0.0"}
    for target, result in results.items():
        assert result["requests"] > 100, (target, result)
        assert result["failures"] == 0, (target, result)
    # Only the live release runs (api and web), and 2.0.0 warm: the rolled-back color's
    # services, the unhealthy ones and the killed deploy's are gone.
    assert sorted(color_services(cluster, env).values()) == ["1.0.0", "1.0.0", "2.0.0", "2.0.0"]

    the_secret_is_swarms_alone(cluster, env)

    status = json.loads(ok(cli("status", "--json")).stdout)
    assert status["live_version"] == "1.0.0"
    assert {h["name"]: h["live"]["api"] for h in status["hosts"]} == {"n1": "blue", "n2": "blue"}
    assert (status["interrupted"], status["disagreements"]) == ([], [])
    assert all(h["leftovers"] == [] for h in status["hosts"]), status["hosts"]

    assert "swarm manager 198.18.0.1 ready, active — serves" in ok(cli("status")).stdout

    routers_come_back(cluster, env, cli)
    drain_and_return(cluster, env, cli, cli_env={SECRET_VARIABLE: SECRET_VALUE}, crash=crash)
    a_node_joins(cluster, env, cli)
    references = push_from_n1(cluster, env)
    lose_the_first_manager(cluster, env, cli)
    deploy_by_digest(cluster, env, cli, references, chaos_figures)


def the_secret_is_swarms_alone(cluster: Cluster, env: Any) -> None:
    """The file secret reached every task through Swarm (the api read its database URL from
    /run/secrets), and its value is in no service's spec."""
    manager = cluster.manager.client
    assert [s.name.rsplit("-", 1)[0] for s in manager.secrets.list()] == [
        f"conveyor-{env.name}-DATABASE_URL"
    ]
    assert all(SECRET_VALUE not in json.dumps(s.attrs) for s in manager.services.list())


def the_router_is_a_global_service(cluster: Cluster, env: Any) -> dict[str, list[str]]:
    """One router service, global: a task on each node. Those tasks."""
    router_service = cluster.manager.client.services.get(f"conveyor-{env.name}-router")
    assert "Global" in router_service.attrs["Spec"]["Mode"]
    routers = router_tasks(cluster, env)
    assert [len(ids) for ids in routers.values()] == [1, 1], routers
    return routers


def routers_come_back(cluster: Cluster, env: Any, cli: Any) -> None:
    """A router task killed, then every router replaced twice by new routes."""
    a_router_task_is_replaced(cluster, env)
    new_routes_restart_every_router_without_a_failed_request(cluster, env, cli)


def live_api_tasks(node: Node, env: Any) -> list[str]:
    """The node's running task containers of the live release's (PUSHED's) api."""
    labels = [f"conveyor.env={env.name}", "conveyor.service=api", f"conveyor.version={PUSHED}"]
    return [c.id for c in node.client.containers.list(filters={"label": labels})]


def a_service_task_is_replaced(cluster: Cluster, env: Any, record: Any) -> None:
    """Last, n3's api task SIGKILLed under load on n2 and n3 (n1 is gone): Swarm starts
    another, and n3 serves again with no conveyor command. n3's router has no other task of
    that color on its node to send to meanwhile (DECISIONS: measured, not asserted zero; the
    summary prints it); n2 fails nothing."""
    n2, n3 = cluster.nodes[1:]
    (killed,) = live_api_tasks(n3, env)
    targets = [f"{node.address}:{env.public()}" for node in (n2, n3)]
    load = cluster.start_load(
        env.public(), "/api/version", rate=50, max_seconds=90, targets=targets
    )

    def version_on_n3() -> str:
        body = cluster.get(n3.address, env.public(), "/api/version")
        return str(json.loads(body)["version"]) if body.startswith("{") else body

    try:
        time.sleep(1)
        n3.client.containers.get(killed).kill()
        began = time.monotonic()
        wait_for(version_on_n3, PUSHED, seconds=60)
        back = time.monotonic() - began
        time.sleep(1)
    finally:
        results = cluster.stop_load(load)
    replaced = live_api_tasks(n3, env)
    assert len(replaced) == 1 and replaced != [killed], replaced
    on_n2, on_n3 = (results[target] for target in targets)
    assert on_n2["failures"] == 0 and on_n2["requests"] > 50, on_n2
    assert on_n3["requests"] > 50, on_n3
    loss = LoadResult(requests=on_n3["requests"], failures=on_n3["failures"])
    record("swarm: a node's api task SIGKILL, Swarm replaces it", loss, back_seconds=back)


def a_router_task_is_replaced(cluster: Cluster, env: Any) -> None:
    """n2's router task killed: Swarm starts another, which serves the live release again
    with no conveyor command."""
    (killed,) = router_tasks(cluster, env)["n2"]
    cluster.nodes[1].client.containers.get(killed).kill()
    wait_for(lambda: cluster.versions(env.public())["n2"], "1.0.0")
    replaced = router_tasks(cluster, env)["n2"]
    assert len(replaced) == 1 and replaced != [killed], replaced


def new_routes_restart_every_router_without_a_failed_request(
    cluster: Cluster, env: Any, cli: Any
) -> None:
    """Under load, the routers' config changes shape twice (the canary strategy adds request
    logging, then goes): each time ``recover`` updates the router service start-first, and
    every node's new router takes over from the old one, on the colors that node served."""
    toml = env.config_path.read_text()
    canary = 'engine = "swarm"\nstrategy = "canary"\ncanary = { steps = [25, 100] }'
    before = router_tasks(cluster, env)
    load = cluster.start_load(env.public(), "/api/version", rate=50, max_seconds=90)
    try:
        env.config_path.write_text(toml.replace('engine = "swarm"', canary, 1))
        restarted = ok(cli("recover"))
        logging = router_tasks(cluster, env)
        env.config_path.write_text(toml)
        ok(cli("recover"))
        after = router_tasks(cluster, env)
    finally:
        results = cluster.stop_load(load)
    assert "every node starts its router anew" in restarted.stdout, restarted.stdout
    for tasks in (logging, after):
        assert [len(ids) for ids in tasks.values()] == [1, 1], tasks
    assert all(before[n] != logging[n] != after[n] for n in before), (before, logging, after)
    assert cluster.versions(env.public()) == {"n1": "1.0.0", "n2": "1.0.0"}
    for target, result in results.items():
        assert result["requests"] > 100 and result["failures"] == 0, (target, result)


def drain_and_return(
    cluster: Cluster, env: Any, cli: Any, cli_env: dict[str, str], crash: Any
) -> None:
    """Under load through a front HAProxy that ``conveyor front`` wrote (in the switch's
    namespace): n2 drained while a deploy verifies it, after its switch. Swarm stops n2's
    tasks, its router task among them; the front stops sending there, retrying those requests
    on n1. The deploy fails in one line naming the drain, and puts n1 back; n2's router is gone,
    so its file still names the new color. Status says n2 does not serve, and another deploy is
    refused before anything changes. Made active again, n2 gets the live release's tasks from
    Swarm, its router too, which serves the live release (the deploy's own publication is newer
    than n2's file); the front sends to it again. Not one request fails."""
    n2 = cluster.nodes[1]
    config = env.config_path.parent / "front.cfg"
    ok(cli("front", "--bind", f"127.0.0.1:{env.public()}", "--out", str(config)))
    front = cluster.start_front(config, env.public())
    load = cluster.start_load(
        env.public(), "/api/version", rate=50, max_seconds=150,
        targets=[f"127.0.0.1:{env.public()}"],
    )  # fmt: skip
    try:
        drained_deploy = deploy_draining_n2(cluster, env, cli_env, crash)
        assert cluster.versions(env.public())["n1"] == "1.0.0"
        drained = json.loads(ok(cli("status", "--json")).stdout)
        assert [(h["node"]["availability"], h["serving"]) for h in drained["hosts"]] == [
            ("active", True),
            ("drain", False),
        ]
        refused = cli("deploy", "--version", "2.0.0")
        assert refused.returncode != 0
        assert "swarm node n2 is ready, drain" in refused.stderr.strip().splitlines()[-1]
        assert cluster.versions(env.public())["n1"] == "1.0.0"
        set_availability(cluster, n2, "active")
        try:
            wait_for(lambda: cluster.versions(env.public()), {"n1": "1.0.0", "n2": "1.0.0"})
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{what_runs_on(n2)}") from None
        time.sleep(3)  # the front's two good checks, then requests on n2 again
    finally:
        results = cluster.stop_load(load)
        said = cluster.stop_front(front)
    assert drained_deploy.returncode != 0, drained_deploy.stdout
    assert "swarm node n2 became ready, drain while it was being moved" in drained_deploy.stderr, (
        drained_deploy.stderr
    )
    assert "n1: switching traffic back" in drained_deploy.stdout, drained_deploy.stdout
    assert "n2: could not switch back: its node is ready, drain, so its router stopped" in (
        drained_deploy.stderr
    ), drained_deploy.stderr
    (result,) = results.values()
    assert result["requests"] > 100, result
    assert result["failures"] == 0, f"{result}\n{said}"
    assert "n2 is DOWN" in said and "n2 is UP" in said, said


def what_runs_on(node: Node) -> str:
    """For a failure's message: the node's containers, and the last lines of each running
    one's log (its router's among them)."""
    lines = []
    for container in node.client.containers.list(all=True):
        lines.append(f"{container.name} {container.status} {container.labels.get('conveyor.role')}")
        if container.status == "running":
            tail = container.logs(tail=8).decode(errors="replace").strip()
            lines += [f"    {line}" for line in tail.splitlines()]
    return "\n".join(lines)


def deploy_draining_n2(cluster: Cluster, env: Any, cli_env: dict[str, str], crash: Any) -> Any:
    """A deploy of 2.0.0 during which n2 is drained in its verify window, after its switch:
    its router stops, so the deploy cannot switch it back. (That window is 6 s for this
    deploy alone: Swarm takes a few seconds to stop a drained node's tasks.)"""
    env.retime(verify=6)
    try:
        return crash.interrupt_at(
            env, "verify", "deploy", "--env", env.name, "--version", "2.0.0",
            nth=2,
            act=lambda _: set_availability(cluster, cluster.nodes[1], "drain"),
            env_vars=cli_env,
        )  # fmt: skip
    finally:
        env.retime(verify=sandbox.VERIFY_SECONDS)


def list_hosts(env: Any, nodes: list[Node]) -> None:
    """Make deploy.toml's hosts these nodes, in this order."""
    lines = env.config_path.read_text().splitlines(keepends=True)
    (index,) = [i for i, line in enumerate(lines) if line.startswith("hosts = [")]
    entries = (
        f'{{ name = "{n.name}", docker = {json.dumps(n.daemon.url)}, access = "exec" }}'
        for n in nodes
    )
    lines[index] = f"hosts = [{', '.join(entries)}]\n"
    env.config_path.write_text("".join(lines))


def a_node_joins(cluster: Cluster, env: Any, cli: Any) -> None:
    """n3 joins the swarm after the deploys, and Swarm starts the live release's tasks there,
    its router among them, on the live colors that the last command published in the router
    service's labels: it serves the live release before conveyor knows of it. A deploy is
    refused while n3 is not listed (its router could not be switched), before anything
    changes, and its dry run says so. Listed in hosts, status says it serves, and the front's
    config lists it."""
    n3 = cluster.add_node()
    everywhere = {"n1": "1.0.0", "n2": "1.0.0", "n3": "1.0.0"}
    wait_for(lambda: cluster.versions(env.public()), everywhere)
    unlisted = f"({n3.address}) runs {env.name}'s tasks but is not in deploy.toml's hosts"
    planned = ok(cli("deploy", "--version", "2.0.0", "--dry-run")).stdout
    assert "refused before anything changes: swarm node " in planned, planned
    assert unlisted in planned, planned
    refused = cli("deploy", "--version", "2.0.0")
    assert refused.returncode != 0, refused.stdout
    assert unlisted in refused.stderr.strip().splitlines()[-1], refused.stderr
    assert cluster.versions(env.public()) == everywhere
    list_hosts(env, cluster.nodes)
    status = json.loads(ok(cli("status", "--json")).stdout)
    assert [(h["name"], h["serving"]) for h in status["hosts"]] == [
        ("n1", True),
        ("n2", True),
        ("n3", True),
    ], status["hosts"]
    front = ok(cli("front")).stdout
    assert f"server n3 {n3.address}:{env.public()}" in front, front


def lose_the_first_manager(cluster: Cluster, env: Any, cli: Any) -> None:
    """n2, promoted to manager after five releases, gets the whole ledger with the next deploy.
    Then n1, the manager that held it from the start, is lost: with n2 and n3 listed, the
    history is the same and a rollback runs from n2's copy. (n1 is demoted before its daemon
    stops: two managers keep no quorum without each other; three would lose one as it is.)
    n3, which joined after the release returned to, uses its warm service like n2: taking it
    for a leftover would remove it from every node."""
    n1, n2, n3 = cluster.nodes
    update_node(cluster, n2, Role="manager")
    promoted = ok(cli("deploy", "--version", "2.0.0"))
    assert "n2: copied " in promoted.stdout, promoted.stdout
    history = json.loads(ok(cli("history", "--json")).stdout)

    update_node(cluster, n1, through=n2, Role="worker")
    # The demotion ends when n1 has left the managers' raft. Stopped before that, n1 takes n2's
    # quorum with it (two managers, one down) and n2 answers nothing (CI, three workers: "rpc
    # error: DeadlineExceeded" on n2's node list).
    wait_for(lambda: left_the_managers(n1, n2), True)
    n1.daemon.stop()
    list_hosts(env, [node for node in cluster.nodes if node is not n1])

    def n1_as_n2_sees_it() -> str:
        entries = n2.client.nodes.list()
        return next(
            e.attrs["Status"]["State"]
            for e in entries
            if e.attrs["Status"].get("Addr") == n1.address
        )

    # Until then n1 looks ready to the manager, so it would run the environment's tasks
    # unlisted: a deploy or rollback would be refused.
    wait_for(n1_as_n2_sees_it, "down")

    assert json.loads(ok(cli("history", "--json")).stdout) == history
    rolled = ok(cli("rollback"))
    assert "n2: using warm api@" in rolled.stdout, rolled.stdout
    assert "n3: using warm api@" in rolled.stdout, rolled.stdout
    assert "leftover" not in rolled.stdout, rolled.stdout
    assert json.loads(cluster.get(n2.address, env.public(), "/api/version"))["version"] == "1.0.0"
    assert json.loads(cluster.get(n3.address, env.public(), "/api/version"))["version"] == "1.0.0"


def left_the_managers(node: Node, manager: Node) -> bool:
    """``node`` is no manager any more, as it sees itself and as ``manager`` sees it."""
    entry = next(
        e for e in manager.client.nodes.list() if e.attrs["Status"].get("Addr") == node.address
    )
    return "ManagerStatus" not in entry.attrs and not node.client.info()["Swarm"].get(
        "ControlAvailable"
    )


def push_from_n1(cluster: Cluster, env: Any) -> dict[str, str]:
    """PUSHED's images go to a registry in the switch's namespace from n1, the only node that
    holds them, and its manifest names them by digest, as ``nox -s image`` writes it after a
    push. The references by service image."""
    folder = env.config_path.parent / "registry"
    folder.mkdir()
    cluster.start_registry(folder)
    tags = {name: f"conveyor-test/{name}:{PUSHED}" for name in ("api", "web")}
    cluster.load_images(list(tags.values()), only=[cluster.nodes[0]])
    references = {name: cluster.push(cluster.nodes[0], tag) for name, tag in tags.items()}

    def pin(manifest: dict[str, Any]) -> None:
        for name, reference in references.items():
            manifest["images"][name]["reference"] = reference

    artifacts.update_manifest(env.dist / PUSHED, pin)
    return references


def deploy_by_digest(
    cluster: Cluster, env: Any, cli: Any, references: dict[str, str], record: Any
) -> None:
    """n2 and n3 never held PUSHED's images: the deploy pulls them by digest on every node,
    and each color's service is pinned to that digest. Then n3's task of it is killed."""
    n2, n3 = cluster.nodes[1:]
    for node in (n2, n3):
        assert not node.client.images.list(name=f"conveyor-test/api:{PUSHED}"), node.name
    ok(cli("deploy", "--version", PUSHED))
    services = n2.client.services.list(
        filters={"label": [f"conveyor.env={env.name}", "conveyor.role=service"]}
    )
    pinned = {
        spec["Labels"]["conveyor.service"]: spec["TaskTemplate"]["ContainerSpec"]["Image"]
        for spec in (service.attrs["Spec"] for service in services)
        if spec["Labels"]["conveyor.version"] == PUSHED
    }
    assert pinned == references, pinned
    for node in (n2, n3):
        assert json.loads(cluster.get(node.address, env.public(), "/api/version"))["version"] == (
            PUSHED
        )
    a_service_task_is_replaced(cluster, env, record)
