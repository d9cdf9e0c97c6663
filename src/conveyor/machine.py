"""Machine set-up behind scripts/setup: a Docker engine, a base image and the PostgreSQL
client-tools image for backups, idempotently.

Each step reports ``did`` or ``skipped`` with the reason, and a step that cannot proceed raises
one clear error (for example: not root and no engine).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors

from conveyor import engine, tools
from conveyor.config import DEFAULT_PGTOOLS_IMAGE, Config
from conveyor.errors import ConveyorError, EngineUnavailable
from conveyor.images import image_present, try_pull

DOCKERD_LOG = Path("/var/log/conveyor-dockerd.log")
CONTAINERD_LOG = Path("/var/log/conveyor-containerd.log")
CONTAINERD_SOCKET = Path("/run/containerd/containerd.sock")
# Only host networking: test traffic cannot reach a bridge address by mistake. live-restore:
# the containers keep serving while dockerd restarts or crashes (never on a swarm node).
# containerd runs on its own, as containerd.service does: dockerd 20.10 cannot start again
# beside the containerd it launched itself if it was killed.
DOCKERD_ARGS = (
    "--bridge=none",
    "--iptables=false",
    "--live-restore",
    f"--containerd={CONTAINERD_SOCKET}",
)
LIVE_RESTORE_HINT = (
    'add "live-restore": true to /etc/docker/daemon.json and reload dockerd '
    "(systemctl reload docker) so containers keep serving through a daemon restart"
)
DEBOOTSTRAP_PACKAGES = "python3,python3-venv,ca-certificates"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# pg_dump must match the server's major version; the tag says which one this image serves.
PGTOOLS_IMAGE = DEFAULT_PGTOOLS_IMAGE  # deploy.toml's default backup_image, declared there
PGTOOLS_DOCKERFILE = "docker/Dockerfile.pgtools"


@dataclass
class Report:
    """What set-up did and what it skipped, for the user to read."""

    lines: list[str] = field(default_factory=list)
    say: Callable[[str], None] = print

    def did(self, what: str) -> None:
        self.lines.append(f"did: {what}")
        self.say(f"  did      {what}")

    def skipped(self, what: str) -> None:
        self.lines.append(f"skipped: {what}")
        self.say(f"  skipped  {what}")


def is_root() -> bool:
    return os.geteuid() == 0


def apt_install(packages: list[str], report: Report) -> None:
    if not packages:
        return
    if not is_root():
        raise ConveyorError(
            f"missing {', '.join(packages)} and not root — run: sudo apt-get install -y "
            + " ".join(packages)
        )
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    tools.run(["apt-get", "update", "-q"], env=env, what="apt-get update")
    tools.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        env=env,
        what=f"apt-get install {' '.join(packages)}",
    )
    report.did(f"installed {', '.join(packages)} from Debian")


def missing_packages(wanted: dict[str, str]) -> list[str]:
    """Debian packages whose command is missing (``{command: package}``): a bare name is
    looked up on PATH, a path (with a glob) on disk."""

    def present(command: str) -> bool:
        return bool(glob.glob(command)) if "/" in command else shutil.which(command) is not None

    return sorted({pkg for cmd, pkg in wanted.items() if not present(cmd)})


def ensure_engine(report: Report, *, wait: float = 60.0) -> Any:
    """Return a client for a running engine, starting Debian's dockerd if we may."""
    try:
        client = engine.connect(timeout=30)
    except EngineUnavailable:
        pass
    else:
        version = client.version().get("Version", "?")
        report.skipped(f"Docker engine: already answers at {engine.describe(None)} ({version})")
        info = client.info()
        swarm = (info.get("Swarm") or {}).get("LocalNodeState") == "active"
        if not info.get("LiveRestoreEnabled") and not swarm:
            report.skipped(f"live-restore is off on that engine: {LIVE_RESTORE_HINT}")
        return client
    if not is_root():
        raise EngineUnavailable(
            f"no Docker engine at {engine.describe(None)} and not root — start one, or run "
            f"scripts/setup as root to install and start Debian's docker.io"
        )
    apt_install(missing_packages({"dockerd": "docker.io"}), report)
    ensure_containerd(report, wait=wait)
    client = start_dockerd(DOCKERD_ARGS, DOCKERD_LOG, None, wait=wait)
    report.did(f"started dockerd {' '.join(DOCKERD_ARGS)} (log: {DOCKERD_LOG})")
    return client


def start_dockerd(
    args: tuple[str, ...], log_path: Path, endpoint: str | None, *, wait: float
) -> Any:
    """Start ``dockerd ARGS`` in its own session, logging to ``log_path``, and return a client
    for ``endpoint`` (None: the default socket) once it answers."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        subprocess.Popen(
            ["dockerd", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + wait
    while True:
        try:
            return engine.connect(endpoint, timeout=10)
        except EngineUnavailable:
            if time.monotonic() > deadline:
                raise EngineUnavailable(
                    f"started dockerd but it did not answer within {wait:.0f} s — see {log_path}"
                ) from None
            time.sleep(0.5)


def ensure_containerd(report: Report, *, wait: float) -> None:
    """containerd on its standard socket, started here unless one already listens there."""
    if _listens(CONTAINERD_SOCKET):
        report.skipped(f"containerd: already listens on {CONTAINERD_SOCKET}")
        return
    with CONTAINERD_LOG.open("ab") as log:
        subprocess.Popen(
            ["containerd"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + wait
    while not _listens(CONTAINERD_SOCKET):
        if time.monotonic() > deadline:
            raise EngineUnavailable(
                f"started containerd but it did not listen within {wait:.0f} s — see "
                f"{CONTAINERD_LOG}"
            )
        time.sleep(0.2)
    report.did(f"started containerd (log: {CONTAINERD_LOG})")


def _listens(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def build_offline_base(client: Any, name: str, report: Report) -> None:
    """debootstrap a minimal Debian with Python and import it as ``name``."""
    apt_install(missing_packages({"debootstrap": "debootstrap"}), report)
    if not is_root():
        raise ConveyorError("building the offline base image needs root (debootstrap)")
    with tempfile.TemporaryDirectory(prefix="conveyor-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        tools.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={DEBOOTSTRAP_PACKAGES}",
                "bookworm",
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            what="debootstrap",
        )
        tarball = Path(tmp) / "rootfs.tar"
        tools.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], what="tar")
        repository, _, tag = name.rpartition(":")
        client.api.import_image_from_file(str(tarball), repository=repository, tag=tag)
    report.did(f"built the offline base image {name} with debootstrap")


def ensure_base_image(client: Any, config: Config, report: Report) -> str:
    """Make sure a base image exists locally; returns the one builds will use."""
    forced = os.environ.get("CONVEYOR_BASE_IMAGE")
    public = forced or config.build.base_image
    if image_present(client, public):
        report.skipped(f"base image: {public} is already present")
        return public
    offline = config.build.offline_base_image
    if not forced and image_present(client, offline):
        report.skipped(f"base image: {offline} (offline build) is already present")
        return offline
    if try_pull(client, public):
        report.did(f"pulled base image {public}")
        return public
    if forced:
        raise ConveyorError(f"CONVEYOR_BASE_IMAGE={forced} is not present and cannot be pulled")
    report.say(
        f"  …        {public} cannot be pulled; building {offline} with debootstrap (~1 min)"
    )
    build_offline_base(client, offline, report)
    return offline


def ensure_pgtools_image(client: Any, config: Config, base: str, report: Report) -> None:
    """The image conveyor runs pg_dump/pg_restore from, built FROM the base image with apt."""
    if image_present(client, PGTOOLS_IMAGE):
        report.skipped(f"PostgreSQL tools image: {PGTOOLS_IMAGE} is already present")
        return
    dockerfile = (config.root / PGTOOLS_DOCKERFILE).read_bytes()
    repository, _, tag = PGTOOLS_IMAGE.rpartition(":")
    with tempfile.TemporaryDirectory(prefix="conveyor-pgtools-") as context:
        (Path(context) / "Dockerfile").write_bytes(dockerfile)
        try:
            client.images.build(
                path=context,
                tag=PGTOOLS_IMAGE,
                buildargs={"BASE_IMAGE": base, "PG_MAJOR": tag},
                network_mode="host",  # apt reaches deb.debian.org from the host's network
                rm=True,
                pull=False,
            )
        except (docker.errors.BuildError, docker.errors.APIError) as exc:
            raise ConveyorError(
                f"building {repository}:{tag} from {PGTOOLS_DOCKERFILE} failed: {exc}"
            ) from None
    report.did(f"built {PGTOOLS_IMAGE} (postgresql-client-{tag}) FROM {base}")


# Commands the test suite needs besides the engine, and the Debian package for each.
TEST_TOOLS = {
    "docker-registry": "docker-registry",  # a real registry for the image tests
    "chromium": "chromium",  # the browser for end-to-end and report tests
    "haproxy": "haproxy",  # `haproxy -c` checks the router config the unit tests render
    "sshd": "openssh-server",  # a real ssh:// host for the remote-engine tests
    # A throwaway PostgreSQL server for the migration tests (testkit.postgres); Debian keeps
    # initdb and pg_ctl off PATH, in /usr/lib/postgresql/<major>/bin.
    "/usr/lib/postgresql/*/bin/initdb": "postgresql",
    "psql": "postgresql-client",
}


def run(config: Config, *, say: Callable[[str], None] = print, swarm: bool = False) -> Report:
    """Set the machine up; ``swarm``: also a one-node swarm for the ``swarm`` environment."""
    report = Report(say=say)
    missing = missing_packages(TEST_TOOLS)
    if not missing:
        report.skipped(f"Debian packages: {', '.join(sorted(set(TEST_TOOLS.values())))} present")
    elif is_root():
        apt_install(missing, report)
    else:
        report.skipped(f"{', '.join(missing)} missing and not root: integration tests need them")
    client = ensure_engine(report)
    base = ensure_base_image(client, config, report)
    ensure_pgtools_image(client, config, base, report)
    if swarm:
        from conveyor import localswarm  # noqa: PLC0415 - it builds on this module

        localswarm.ensure(report, client, [base])
    return report
