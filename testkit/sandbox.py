"""Throwaway environments and releases, for tests, benchmarks and end-to-end runs.

A sandbox environment is a real one — its own deploy.toml, router, ledger and lock on a
real engine — with a random name, free ports on 127.0.0.1 and short timeouts, removed
completely afterwards. Derived releases are real images built ``FROM`` a built one that
differ only in the version they report and, optionally, an injected fault.

Everything a sandbox makes carries its own names, so it can share an engine with a user's
real environments: images under ``conveyor-test/`` (``[registry] prefix``), environments
named ``test-…`` (so containers ``conveyor-test-…`` and volumes ``conveyor-test-…-…``).
:class:`EngineSnapshot` records everything else on an engine, so a test run can prove that it
left the user's containers, images, tags and volumes exactly as they were.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import json
import os
import re
import secrets
import socket
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors

from conveyor import artifacts
from conveyor.config import Config
from conveyor.lockinfo import pid_alive

# The image repository prefix (local and in a registry) of everything a sandbox builds.
PREFIX = "conveyor-test"
# Sandbox environments are named ENV_PREFIX + 6 hex digits.
ENV_PREFIX = "test-"
# Appended to every image title of a sandbox build, so its image IDs never equal the user's
# builds of the same commit (the title is a label, the last cheap layer of each image).
TITLE_SUFFIX = " (conveyor test)"


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ephemeral_start() -> int:
    """The first port the kernel hands out as a connection's local port."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def allocate_ports(count: int, offsets: tuple[int, ...] = (0,)) -> list[int]:
    """``count`` consecutive ports free on 127.0.0.1 at every offset (hosts share loopback),
    all below the ephemeral range: there, any connection on the machine (a load generator's,
    the router's to a backend) may hold the port as its own end when a service binds it (CI
    saw EADDRINUSE that way). A range is also held for this process in a file that every
    test process on the machine reads: a free port is not an unused one (an environment binds
    its idle color's port only during a deploy), so another worker must not pick it."""
    rng = secrets.SystemRandom()
    highest = ephemeral_start() - max(offsets) - count
    with _port_holds() as held:
        for _ in range(200):
            start = rng.randrange(10000, highest, 10)
            ports = list(range(start, start + count))
            wanted = {p + off for p in ports for off in offsets}
            if wanted.isdisjoint(held) and all(port_free(p) for p in wanted):
                held.update(wanted)
                return ports
    raise RuntimeError("no free range of ports on 127.0.0.1")


PORT_HOLDS = Path(tempfile.gettempdir()) / "conveyor-test-ports.json"


@contextlib.contextmanager
def _port_holds() -> Iterator[set[int]]:
    """The ports held by live test processes (the file locked meanwhile); what the caller
    adds to the set is held for this process until it ends."""
    with PORT_HOLDS.open("a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        try:
            holds: dict[str, list[int]] = json.loads(handle.read() or "{}")
        except ValueError:
            holds = {}
        holds = {pid: ports for pid, ports in holds.items() if pid_alive(int(pid))}
        held = {port for ports in holds.values() for port in ports}
        before = set(held)
        yield held
        mine = set(holds.get(str(os.getpid()), []))
        holds[str(os.getpid())] = sorted(mine | (held - before))
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holds))


PORTS_NEEDED = 7  # public, preview, admin, api blue/green, web blue/green


# The tests' verify window: two rounds of checks on every service. A test whose release
# fails inside the window sets its own (``verify=6``); the rest only wait it out.
VERIFY_SECONDS = 0.5


# Docker's health check in the sandbox's environments, in seconds. Each check is a ``docker
# exec``: three api containers measured for 30 s on the 2-core machine used 0.016 core without
# one, 0.049 with one every 5 s and 0.184 every 2 s. Only a promote reads the result (it waits
# for the source's first check: those tests ask for 2 s); a deploy's readiness, its verify
# window and a rollback's warm check are conveyor's own probes, and no test waits for Docker
# to call a container unhealthy.
HEALTH_INTERVAL = 30


def environment_toml(
    name: str,
    ports: list[int],
    dist: Path,
    docker_dir: Path,
    hosts: list[dict[str, Any]],
    *,
    ready: float = 30,
    verify: float = VERIFY_SECONDS,
    drain: float = 0.2,
    keep: int = 3,
    keep_warm: float = 0,
    migrations: str | None = None,
    api_env: str = 'DATABASE_URL = "sqlite:////data/refapi.db"',
    api_secrets: str | None = None,
    canary: str | None = None,
    analysis: str | None = None,
    flags: bool = False,
    engine: str = "docker",
    router_bind: str = "127.0.0.1",
    placement: str | None = None,
    health_interval: float = HEALTH_INTERVAL,
) -> str:
    """A deploy.toml for one sandbox environment with the reference api and web services.

    ``migrations`` (an inline TOML table, e.g. ``{ backup = "sqlite:/data/refapi.db" }``) makes
    conveyor run the api's migrations as a release phase; ``api_env`` and ``api_secrets`` (the
    inside of inline tables) point the api at another database. ``canary`` (an inline table,
    e.g. ``{ steps = [25, 100], interval = 4 }``) sets ``strategy = "canary"``; ``analysis``
    (the inside of the ``[analysis]`` table, as TOML lines) tunes how its windows are judged.
    ``engine = "swarm"`` makes the hosts the nodes of a swarm, the first its manager;
    ``router_bind`` where the routers listen (a swarm node's own address: "0.0.0.0");
    ``placement`` a swarm's constraints (a TOML array).

    Docker's health check runs every ``health_interval`` s (:data:`HEALTH_INTERVAL` unless a
    test waits for it: a promote waits for the source's first one)."""
    host_lines = ", ".join(
        "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in host.items()) + " }" for host in hosts
    )
    api_extra = ""
    if migrations is not None:
        api_extra += f"migrations = {migrations}\n"
    if api_secrets is not None:
        api_extra += f"secrets = {{ {api_secrets} }}\n"
    strategy = f'strategy = "canary"\ncanary = {canary}\n' if canary is not None else ""
    if placement is not None:
        strategy += f"placement = {placement}\n"
    analysis_table = f"\n[analysis]\n{analysis}\n" if analysis is not None else ""
    return (
        project_toml(dist, docker_dir, migrate=migrations is not None, flags=flags)
        + analysis_table
        + f"""
[environments.{name}]
hosts = [{host_lines}]
engine = "{engine}"
keep_releases = {keep}
keep_warm = {keep_warm}
{strategy}
[environments.{name}.router]
bind = "{router_bind}"
port = {ports[0]}
preview_port = {ports[1]}
admin_port = {ports[2]}

[environments.{name}.timeouts]
ready = {ready}
verify = {verify}
drain = {drain}
stop = 5
lock_stale = 20

[environments.{name}.services.api]
image = "api"
route = "/api"
ports = {{ blue = {ports[3]}, green = {ports[4]} }}
health = {{ path = "/readyz", interval = {health_interval:g}, timeout = 5, retries = 3 }}
env = {{ {api_env} }}
volumes = {{ "conveyor-{name}-api-data" = "/data" }}
{api_extra}
[environments.{name}.services.web]
image = "web"
route = "/"
ports = {{ blue = {ports[5]}, green = {ports[6]} }}
health = {{ path = "/readyz", interval = {health_interval:g}, timeout = 5, retries = 3 }}
"""
    )


MIGRATE_COMMAND = "python3 -m refapi migrate"


# The reference API's flag definitions: derived releases carry them (flags-api.json in dist).
FLAGS_FILE = Path(__file__).resolve().parents[1] / "backend" / "flags.json"


def project_toml(
    dist: Path, docker_dir: Path, *, migrate: bool = False, flags: bool = False
) -> str:
    """The project part of a sandbox deploy.toml: its own dist folder and image names."""
    migrate_line = f'migrate = "{MIGRATE_COMMAND}"' if migrate else ""
    if flags:
        migrate_line += f'\nflags = "{FLAGS_FILE}"'
    return f"""
[project]
name = "conveyor-sandbox"
source = "https://example.invalid/conveyor"

[build]
dist_dir = "{dist}"

[registry]
prefix = "{PREFIX}"

[images.api]
dockerfile = "{docker_dir / "Dockerfile.api"}"
kind = "python-service"
title = "conveyor reference API{TITLE_SUFFIX}"
{migrate_line}

[images.web]
dockerfile = "{docker_dir / "Dockerfile.web"}"
kind = "static-site"
title = "conveyor reference web UI{TITLE_SUFFIX}"

[images.router]
dockerfile = "{docker_dir / "Dockerfile.router"}"
kind = "router"
"""


def config_toml(config: Config) -> str:
    """The project, build, registry, artifacts and images of ``config`` as a deploy.toml
    (no environments): CLI runs with it build exactly what ``config`` builds."""
    lines = [
        "[project]",
        f"name = {json.dumps(config.project)}",
        f"source = {json.dumps(config.source_url)}",
        "[build]",
        f"base_image = {json.dumps(config.build.base_image)}",
        f"offline_base_image = {json.dumps(config.build.offline_base_image)}",
        f"dist_dir = {json.dumps(os.path.abspath(config.root / config.build.dist_dir))}",
        "[registry]",
        f"url = {json.dumps(config.registry.url)}",
        f"prefix = {json.dumps(config.registry.prefix)}",
        "[artifacts]",
        f"store = {json.dumps(config.artifacts.store)}",
        f"path = {json.dumps(os.path.abspath(config.root / config.artifacts.path))}",
        f"keep = {config.artifacts.keep}",
    ]
    for name, spec in config.images.items():
        lines += [
            f"[images.{name}]",
            f"dockerfile = {json.dumps(os.path.abspath(config.root / spec.dockerfile))}",
            f"kind = {json.dumps(spec.kind)}",
            f"title = {json.dumps(spec.title)}",
        ]
    return "\n".join(lines) + "\n"


def isolated(config: Config, dist: Path) -> Config:
    """``config`` building into ``dist`` under sandbox image names (same sources, same root)."""
    return dataclasses.replace(
        config,
        build=dataclasses.replace(config.build, dist_dir=os.fspath(dist)),
        registry=dataclasses.replace(config.registry, url="", prefix=PREFIX),
        artifacts=dataclasses.replace(config.artifacts, path=os.fspath(dist.parent / "store")),
        images={
            name: dataclasses.replace(spec, title=spec.title + TITLE_SUFFIX)
            for name, spec in config.images.items()
        },
    )


def new_name() -> str:
    return f"{ENV_PREFIX}{secrets.token_hex(3)}"


def service_port(ports: list[int], service: str, color: str) -> int:
    return ports[{"api": 3, "web": 5}[service] + (0 if color == "blue" else 1)]


def teardown(client: Any, name: str) -> None:
    """Remove every container and volume of a sandbox environment."""
    for container in client.containers.list(all=True, filters={"label": f"conveyor.env={name}"}):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)  # v: its anonymous volumes too
    for volume in client.volumes.list(filters={"name": f"conveyor-{name}-"}):
        with contextlib.suppress(docker.errors.APIError):
            volume.remove(force=True)


def derive_release(
    client: Any,
    base: dict[str, Any],
    dist: Path,
    version: str,
    *,
    fault: str | None = None,
    revisions: dict[str, str] | None = None,
) -> Path:
    """A dist/<version>/ folder whose images report ``version`` (and run with ``fault``);
    ``revisions`` (file name → source) adds migration revisions to the api's chain."""
    entries = {}
    for name in ("api", "web"):
        lines = [f"FROM {base[name]['id']}", f"ENV APP_VERSION={version}"]
        if fault and name == "api":
            lines.append(f"ENV REFAPI_FAULT={fault}")
        files = revisions if name == "api" and revisions else {}
        if files:
            lines.append(f"COPY versions/ {REVISIONS_DIR}/")
        tag = f"{PREFIX}/{name}:{version.replace('+', '-')}"
        context = _build_context("\n".join(lines), {f"versions/{k}": v for k, v in files.items()})
        image, _ = client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
        entries[name] = {"image": tag, "id": image.id, "tags": [tag]}
    folder = dist / version
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "NOTES.txt").write_text(f"sandbox release {version} fault={fault}\n")
    listed = ["NOTES.txt"]
    if FLAGS_FILE.is_file():
        (folder / "flags-api.json").write_bytes(FLAGS_FILE.read_bytes())
        listed.append("flags-api.json")
    artifacts.write_manifest(
        folder,
        {
            "schema": artifacts.MANIFEST_SCHEMA,
            "name": "conveyor-sandbox",
            "version": version,
            "image_tag": version.replace("+", "-"),
            "image_tags": [version.replace("+", "-")],
            "commit": "0" * 40,
            "dirty": False,
            "build_time": "2026-01-01T00:00:00Z",
            "source_date_epoch": 1767225600,
            "files": artifacts.describe_files(folder, listed),
            "images": entries,
        },
    )
    return folder


REVISIONS_DIR = "/opt/app/refapi/migrations/versions"


def _build_context(dockerfile: str, files: dict[str, str]) -> io.BytesIO:
    """A tar build context: the Dockerfile and ``files`` (readable by the image's user)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in {"Dockerfile": dockerfile, **files}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def schema_head(client: Any, image: str) -> str:
    """The head revision of an api image's migration chain (``migrate plan --json``)."""
    container = client.containers.run(
        image,
        ["sh", "-c", f"{MIGRATE_COMMAND} plan --json"],
        environment={"DATABASE_URL": "sqlite:////tmp/plan.db"},
        network_mode="none",
        detach=True,
    )
    try:
        container.wait(timeout=60)
        output = container.logs(stdout=True, stderr=False)
    finally:
        container.remove(force=True, v=True)  # v: the image's anonymous /data volume
    return str(json.loads(output.decode().strip().splitlines()[-1])["head"])


def revision_source(
    revision: str, down: str, upgrade: str, *, kind: str = "expand", message: str = ""
) -> str:
    """A migration revision file for a test release (``upgrade``: the body's lines)."""
    body = "\n".join(f"    {line}" for line in upgrade.strip().splitlines())
    kind_line = f'kind = "{kind}"\n' if kind != "expand" else ""
    return f'''"""{message or revision}"""
import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None
{kind_line}

def upgrade() -> None:
{body}


def downgrade() -> None:
    pass
'''


# -- proving that a run left the user's things alone -------------------------------------------

_OWNED_TAG = re.compile(rf"^(?:[^/]+[.:][^/]*/)?{re.escape(PREFIX)}/")


def owned_tag(tag: str) -> bool:
    """``conveyor-test/api:1`` or ``127.0.0.1:5000/conveyor-test/api:1`` (a registry's copy)."""
    return bool(_OWNED_TAG.match(tag))


def owned_name(name: str) -> bool:
    """A container or volume of a sandbox environment: ``conveyor-test-…``."""
    return name.lstrip("/").startswith(f"conveyor-{ENV_PREFIX}")


def _tree(folder: Path, skip: Iterable[str] = ()) -> dict[str, tuple[int, int]]:
    """relative path → (size, mtime ns) of every file under ``folder`` (nothing if absent)."""
    skipped = tuple(skip)
    found: dict[str, tuple[int, int]] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if relative.split("/")[0] in skipped or path.is_symlink() or not path.is_file():
            continue
        stat = path.stat()
        found[relative] = (stat.st_size, stat.st_mtime_ns)
    return found


@dataclass(frozen=True)
class EngineSnapshot:
    """What a test run must leave exactly as it found it on one engine (and in some folders).

    Sandbox-owned objects (see :func:`owned_tag`, :func:`owned_name`) are left out: tests
    create, change and remove those freely. Everything else is recorded: every container
    (id, name, image, state, start time, restart count), every tag not owned by the sandbox
    with the image it names, every untagged image, every volume — with, where its mountpoint
    is readable from here (a local engine, as root), the size and mtime of every file in it
    (a ledger is an append-only file in a state volume, so a write shows) — and the files of
    the given folders (e.g. the project's dist/ and .conveyor/).
    """

    containers: dict[str, dict[str, Any]]
    tags: dict[str, str]
    untagged: frozenset[str]
    # Every image's ID: an untagged image the suite's build reused and named is still here.
    images: frozenset[str]
    volumes: dict[str, dict[str, tuple[int, int]] | None]
    folders: dict[str, dict[str, tuple[int, int]]]

    @classmethod
    def take(
        cls, client: Any, folders: Iterable[Path] = (), skip: Iterable[str] = ()
    ) -> EngineSnapshot:
        containers = {}
        for item in client.api.containers(all=True):
            name = item["Names"][0].lstrip("/") if item.get("Names") else item["Id"]
            if owned_name(name) or item.get("Labels", {}).get("conveyor.env", "").startswith(
                ENV_PREFIX
            ):
                continue
            with contextlib.suppress(docker.errors.NotFound):
                state = client.api.inspect_container(item["Id"])["State"]
                containers[item["Id"]] = {
                    "name": name,
                    "image": item["ImageID"],
                    "status": state["Status"],
                    "started": state.get("StartedAt", ""),
                    "restarts": state.get("RestartCount", 0),
                }
        tags: dict[str, str] = {}
        untagged = set()
        listed = client.api.images(all=False)
        for image in listed:
            names = [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]
            if not names:
                untagged.add(image["Id"])
            for tag in names:
                if not owned_tag(tag):
                    tags[tag] = image["Id"]
        volumes: dict[str, dict[str, tuple[int, int]] | None] = {}
        for volume in client.api.volumes().get("Volumes") or []:
            if owned_name(volume["Name"]):
                continue
            mountpoint = Path(volume.get("Mountpoint") or "/nonexistent")
            try:
                volumes[volume["Name"]] = _tree(mountpoint) if mountpoint.is_dir() else None
            except OSError:
                volumes[volume["Name"]] = None
        return cls(
            containers=containers,
            tags=tags,
            untagged=frozenset(untagged),
            images=frozenset(image["Id"] for image in listed),
            volumes=volumes,
            folders={os.fspath(f): _tree(f, skip) for f in folders},
        )

    def changes(self, after: EngineSnapshot) -> list[str]:
        """One line per thing that differs in ``after`` (a later snapshot); [] when none."""
        return [
            *self._container_changes(after),
            *self._image_changes(after),
            *self._volume_changes(after),
            *(
                f"{folder}: {_tree_changes(files, after.folders.get(folder, {}))}"
                for folder, files in self.folders.items()
                if after.folders.get(folder) != files
            ),
        ]

    def _container_changes(self, after: EngineSnapshot) -> list[str]:
        lines = []
        for cid, was in self.containers.items():
            now = after.containers.get(cid)
            if now is None:
                lines.append(f"container {was['name']} ({cid[:12]}) was removed")
            elif now != was:
                moved = {k: (was[k], now[k]) for k in was if was[k] != now[k]}
                lines.append(f"container {was['name']} ({cid[:12]}) changed: {moved}")
        return lines

    def _image_changes(self, after: EngineSnapshot) -> list[str]:
        lines = []
        for tag, image in self.tags.items():
            now_image = after.tags.get(tag)
            if now_image is None:
                lines.append(f"image tag {tag} was removed (it named {image[7:19]})")
            elif now_image != image:
                lines.append(f"image tag {tag} moved from {image[7:19]} to {now_image[7:19]}")
        lines += [f"image tag {tag} was added" for tag in sorted(set(after.tags) - set(self.tags))]
        lines += [
            f"untagged image {image[7:19]} was removed"
            for image in sorted(self.untagged - after.images)
        ]
        return lines

    def _volume_changes(self, after: EngineSnapshot) -> list[str]:
        lines = [
            f"volume {name} appeared and is still there (left behind, or made by another process)"
            for name in sorted(set(after.volumes) - set(self.volumes))
        ]
        for name, files in self.volumes.items():
            if name not in after.volumes:
                lines.append(f"volume {name} was removed")
            elif files is not None and after.volumes[name] != files:
                lines.append(f"volume {name}: {_tree_changes(files, after.volumes[name] or {})}")
        return lines


def _tree_changes(was: dict[str, tuple[int, int]], now: dict[str, tuple[int, int]]) -> str:
    added = sorted(set(now) - set(was))
    removed = sorted(set(was) - set(now))
    changed = sorted(k for k in set(was) & set(now) if was[k] != now[k])
    parts = [
        f"{label} {', '.join(names[:5])}{' …' if len(names) > 5 else ''}"
        for label, names in (("added", added), ("removed", removed), ("changed", changed))
        if names
    ]
    return "; ".join(parts)


def container_ids(client: Any) -> set[str]:
    """Every container on the engine, running or not."""
    return {item["Id"] for item in client.api.containers(all=True)}


def describe_containers(client: Any, ids: Iterable[str]) -> list[str]:
    """``name (id, status)`` of each container still present."""
    lines = []
    for cid in sorted(ids):
        with contextlib.suppress(docker.errors.NotFound):
            state = client.api.inspect_container(cid)
            lines.append(f"{state['Name'].lstrip('/')} ({cid[:12]}, {state['State']['Status']})")
    return lines


@dataclass
class Guard:
    """A snapshot taken now, to be compared with the engine (and folders) later."""

    client: Any
    folders: tuple[Path, ...]
    skip: tuple[str, ...]
    before: EngineSnapshot
    containers: set[str]

    @classmethod
    def start(cls, client: Any, folders: Iterable[Path] = (), skip: Iterable[str] = ()) -> Guard:
        folders, skip = tuple(folders), tuple(skip)
        before = EngineSnapshot.take(client, folders, skip)
        return cls(client, folders, skip, before, container_ids(client))

    def problems(self) -> list[str]:
        """One line per thing changed that the sandbox does not own, and per container left."""
        lines = self.before.changes(EngineSnapshot.take(self.client, self.folders, self.skip))
        left = describe_containers(self.client, container_ids(self.client) - self.containers)
        return lines + [
            f"container {line} appeared and is still there (left behind, or made by another "
            "process)"
            for line in left
        ]


@contextlib.contextmanager
def untouched(
    client: Any, folders: Iterable[Path] = (), skip: Iterable[str] = ()
) -> Iterator[list[str]]:
    """Yield a list that, after the block, holds :meth:`Guard.problems` of the block."""
    guard = Guard.start(client, folders, skip)
    problems: list[str] = []
    yield problems
    problems += guard.problems()


def record_scan(folder: Path, *, passed: bool = True, dirty: bool = False) -> None:
    """Write each image's scan verdict into ``folder``'s manifest the way the scanner does:
    bound to the image ID, and the tree state with it (the gate refuses dirty builds, and a
    working tree under test may well be dirty)."""

    def update(manifest: dict[str, Any]) -> None:
        for entry in manifest["images"].values():
            failures = [] if passed else ["1 finding(s) at medium or above (planted)"]
            entry["scan"] = {"passed": passed, "image_id": entry["id"], "failures": failures}
        manifest["dirty"] = dirty

    artifacts.update_manifest(folder, update)
