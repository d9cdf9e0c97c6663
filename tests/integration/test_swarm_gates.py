"""The other gates on a real two-node swarm (issue 16): an approval bound to the release's
images, a schema migration run once for every node, a feature flag that every node's tasks read.

The api's database is a PostgreSQL in the switch's namespace, which both nodes reach, as a
cluster's services reach their database: the migration runs once, in a one-off container on
the manager, and the tasks on both nodes use the schema it made.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conveyor.config import DEFAULT_PGTOOLS_IMAGE
from conveyor.images import image_present
from testkit import sandbox
from testkit.migrating import MigratingReleases, give
from testkit.postgres import PostgresServer, postgres_server
from testkit.steps import ok
from testkit.swarm import Cluster

FLAG = "new-notes-view"
GATE = "approval = { required = true, allow_self_approval = false, expires_hours = 24 }\n"
EXPAND = "e1a000000001"  # testkit.migrating's "m2": a table and notes.color


def gated_swarm_environment(
    cluster: Cluster, make_environment: Any, migrating: MigratingReleases, url: str
) -> Any:
    """A production-like swarm environment: approvals required from someone other than the
    deployer (and a passed scan), the api's migrations a release phase (a PostgreSQL backup
    first), its flags read from the flags volume, its database URL a file secret."""
    env = make_environment(
        hosts=[{"name": n.name, "docker": n.daemon.url, "access": "exec"} for n in cluster.nodes],
        engine="swarm",
        router_bind="0.0.0.0",  # noqa: S104 - inside the node's own namespace
        ready=30,
        verify=1,
        flags=True,
        migrations='{ backup = "postgres:DATABASE_URL", timeout = 60 }',
        api_env='SECRET_FILE_WAIT = "30"',
        api_secrets='DATABASE_URL = { from = "env:TEST_PG_URL", as = "file" }',
        keep_warm=60,
    )
    for version, revisions in (("m1.0.0", None), ("m2.0.0", "m2")):
        give(env, migrating, version, revisions)
        sandbox.record_scan(env.dist / version, passed=True)  # as `nox -s scan` records it
        cluster.load_images([f"conveyor-test/{name}:{version}" for name in ("api", "web")])
    marker = f"[environments.{env.name}]\n"
    head, sep, rest = env.config_path.read_text().partition(marker)
    env.config_path.write_text(head + sep + GATE + rest)
    env.secret_env = {"TEST_PG_URL": url}
    return env


def as_user(env: Any, user: str) -> Callable[..., Any]:
    """The CLI on ``env`` as ``user`` (outside GitHub Actions: the ledger's approvals count)."""

    def cli(*args: str) -> Any:
        extra = {**env.secret_env, "GITHUB_ACTOR": user, "GITHUB_ACTIONS": ""}
        return env.cli(*args, "--env", env.name, env=extra)

    return cli


def approved_by_alice(env: Any, version: str) -> None:
    """bob's deploy of ``version`` is refused before anything changes, with the release key
    to approve; alice approves that key."""
    refused = as_user(env, "bob")("deploy", "--version", version)
    assert refused.returncode != 0, refused.stdout
    assert "Traceback" not in refused.stderr, refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    key = re.search(r"needs an approval of \S+ with release key ([0-9a-f]{16})", line)
    assert key and "nothing was changed" in line, line
    approved = ok(as_user(env, "alice")("approve", "--release", key.group(1)))
    assert f"✓ alice approved {version}" in approved.stdout, approved.stdout


def tools_on(cluster: Cluster) -> list[str]:
    """The nodes that hold the backup tools image (scripts/setup builds it on this machine)."""
    return [n.name for n in cluster.nodes if image_present(n.client, DEFAULT_PGTOOLS_IMAGE)]


def color_versions(cluster: Cluster, env: Any) -> list[str]:
    services = cluster.manager.client.services.list(
        filters={"label": [f"conveyor.env={env.name}", "conveyor.role=service"]}
    )
    return sorted(s.attrs["Spec"]["Labels"]["conveyor.version"] for s in services)


def flags_on(cluster: Cluster, env: Any) -> dict[str, bool]:
    """Per node, whether its api answers the flag on (no X-User: one key for everyone)."""
    return {
        node.name: json.loads(cluster.get(node.address, env.public(), "/api/flags"))["flags"][FLAG]
        for node in cluster.nodes
    }


def schema(postgres: PostgresServer, env: Any) -> tuple[str, list[str]]:
    """The database's Alembic revision, and the columns of its notes table."""
    database = env.secret_env["TEST_PG_URL"].rsplit("/", 1)[1]
    revision = postgres.psql("SELECT version_num FROM alembic_version", database=database)
    columns = postgres.psql(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'notes' "
        "ORDER BY column_name",
        database=database,
    )
    return revision.stdout.strip(), columns.stdout.split()


def test_an_approval_a_migration_and_a_flag_reach_every_node_of_a_swarm(
    swarm_cluster: Cluster, make_environment: Any, migrating: MigratingReleases, tmp_path: Path
) -> None:
    """bob's deploys wait for alice's approval of their exact images. The first creates the
    schema, the second runs an expand revision once, before its tasks start, under load on
    both nodes without a failed request; a rollback needs no new approval and runs the old
    release on the new schema. A flag turned on is read by the tasks on every node."""
    cluster = swarm_cluster
    (tmp_path / "registry").mkdir()
    registry = cluster.start_registry(tmp_path / "registry")
    with postgres_server(host=cluster.client_address, netns=cluster.switch) as postgres:
        url = postgres.create_database("conveyor_swarm")
        env = gated_swarm_environment(cluster, make_environment, migrating, url)
        env.secret_env["CONVEYOR_REGISTRY"] = registry  # where the router image goes
        bob = as_user(env, "bob")

        approved_by_alice(env, "m1.0.0")
        assert color_versions(cluster, env) == [], "a refused deploy starts nothing"
        assert not tools_on(cluster), "no node holds the backup tools before a backup"
        first = ok(bob("deploy", "--version", "m1.0.0"))
        assert "Approved by alice" in first.stdout, first.stdout
        # conveyor copied them from this machine to the manager, where backups run.
        assert tools_on(cluster) == ["n1"]
        assert cluster.versions(env.public()) == {"n1": "m1.0.0", "n2": "m1.0.0"}
        assert "color" not in schema(postgres, env)[1]

        approved_by_alice(env, "m2.0.0")
        load = cluster.start_load(env.public(), "/api/version", rate=50, max_seconds=120)
        try:
            second = ok(bob("deploy", "--version", "m2.0.0"))
            assert cluster.versions(env.public()) == {"n1": "m2.0.0", "n2": "m2.0.0"}
            rolled = ok(bob("rollback"))
            assert cluster.versions(env.public()) == {"n1": "m1.0.0", "n2": "m1.0.0"}
        finally:
            results = cluster.stop_load(load)
        for target, result in results.items():
            assert result["requests"] > 100 and result["failures"] == 0, (target, result)
        # Run once for the cluster (by the manager), before any task of m2.0.0 started.
        migration = f"run {EXPAND} (expand: add scratch table and notes.color)"
        assert second.stdout.count(migration) == 1, second.stdout
        assert second.stdout.index(migration) < second.stdout.index("n1: starting"), second.stdout
        assert schema(postgres, env) == (EXPAND, ["color", "created_at", "id", "pinned", "text"])
        assert "approval" not in rolled.stdout.lower(), rolled.stdout

        assert flags_on(cluster, env) == {"n1": False, "n2": False}
        ok(bob("flag-set", FLAG, "--on"))
        # The provider's bound is 2 s; the probes through nsenter add some.
        wait_for(lambda: flags_on(cluster, env), {"n1": True, "n2": True}, seconds=5)
        records = json.loads(ok(bob("history", "--json")).stdout)
        a_node_joins_and_pulls_the_router(cluster, env)
        flags_reach_a_node_that_joined(cluster, env)
        a_node_that_joined_is_moved_with_the_others(cluster, env)
    assert [(r["kind"], r["version"], r["outcome"]) for r in records] == [
        ("deploy", "m1.0.0", "succeeded"),
        ("deploy", "m2.0.0", "succeeded"),
        ("rollback", "m1.0.0", "succeeded"),
    ], records


def a_node_joins_and_pulls_the_router(cluster: Cluster, env: Any) -> None:
    """The router service names its image by digest in the registry (where conveyor pushed
    it), so n3, which joins with the releases' images but not the router's, pulls it and
    serves the live release with no conveyor command."""
    service = cluster.manager.client.services.get(f"conveyor-{env.name}-router")
    image = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    assert image.startswith(f"{cluster.registry}/") and "@sha256:" in image, image
    n3 = cluster.add_node(seeded=False)  # the releases' images only: not the seed's router
    assert not [tag for i in n3.client.images.list() for tag in i.tags if "/router:" in tag]
    wait_for(lambda: cluster.versions(env.public()), dict.fromkeys(("n1", "n2", "n3"), "m1.0.0"))
    # Pulled from the registry: n3's copy knows that digest (a loaded one would know none).
    assert n3.client.images.get(image).attrs["RepoDigests"] == [image]


def flags_reach_a_node_that_joined(cluster: Cluster, env: Any) -> None:
    """n3's tasks read the flag as the others do: the flag service wrote the file there. A
    change made while n3 is still not listed reaches it too, through that service."""
    wait_for(lambda: flags_on(cluster, env), dict.fromkeys(("n1", "n2", "n3"), True))
    ok(as_user(env, "bob")("flag-set", FLAG, "--off"))
    wait_for(lambda: flags_on(cluster, env), dict.fromkeys(("n1", "n2", "n3"), False))


def a_node_that_joined_is_moved_with_the_others(cluster: Cluster, env: Any) -> None:
    """With ``other_nodes`` (how to reach a node by its address), n3 is a node of the
    environment while hosts still lists only n1 and n2: status says it serves, and a rollback
    to m2.0.0 moves it with the others. Without the key, that rollback is refused."""
    bob = as_user(env, "bob")
    n3 = cluster.nodes[2]
    refused = bob("rollback", "--to", "r0002")
    assert (
        f"({n3.address}) runs {env.name}'s tasks but is not in deploy.toml's hosts"
        in (refused.stderr.strip().splitlines()[-1])
    ), refused.stderr
    marker = f"[environments.{env.name}]\n"
    reach = f'other_nodes = {{ docker = "{cluster.other_nodes_docker}", access = "exec" }}\n'
    head, sep, rest = env.config_path.read_text().partition(marker)
    env.config_path.write_text(head + sep + reach + rest)
    status = json.loads(ok(bob("status", "--json")).stdout)
    assert [(h["name"], h["serving"]) for h in status["hosts"]] == [
        ("n1", True),
        ("n2", True),
        (n3.address, True),
    ], status["hosts"]
    rolled = ok(bob("rollback", "--to", "r0002"))
    assert f"  {n3.address}: switching traffic" in rolled.stdout, rolled.stdout
    assert cluster.versions(env.public()) == dict.fromkeys(("n1", "n2", "n3"), "m2.0.0")


def wait_for(what: Callable[[], Any], wanted: Any, seconds: float = 60) -> None:
    """Until ``what()`` returns ``wanted``, within ``seconds``."""
    deadline = time.monotonic() + seconds
    while (seen := what()) != wanted:
        assert time.monotonic() < deadline, seen
        time.sleep(0.2)
