"""A throwaway Docker daemon the tests own: another "host" with its own socket and data root.

Chaos tests stop, kill and restart it (DECISIONS: daemon restarts, full volumes and swarm run
on their own dockerd), so it is started, stopped and restarted here, with or without
``--live-restore``. It shares the machine's network namespace (``--bridge=none``, host
networking): what it runs answers on 127.0.0.1 like the main engine's containers.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors

from conveyor import images


class DockerdFailed(RuntimeError):
    pass


class Dockerd:
    def __init__(
        self,
        *,
        live_restore: bool = True,
        prefix: str = "conveyor-h2",
        netns: str | None = None,
        extra_args: Sequence[str] = (),
        seed: Path | None = None,
        parent: Path | None = None,
    ) -> None:
        if shutil.which("dockerd") is None:
            raise DockerdFailed("dockerd is not installed — run scripts/setup as root")
        # Short: a unix socket's path must fit in 108 bytes (pytest's tmp paths do not).
        # Letters and digits only after the prefix: containerd namespaces are named after it.
        parent = parent or Path(tempfile.gettempdir())
        self.folder = parent / f"{prefix}-{secrets.token_hex(4)}"
        self.folder.mkdir()
        self.socket = self.folder / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.live_restore = live_restore
        # A network namespace under /run/netns (testkit.swarm's nodes): dockerd and its
        # containerd run inside it, so do host-network containers; the sockets stay files here.
        self.netns = netns
        self.extra_args = tuple(extra_args)
        self.containerd_socket = self.folder / "containerd.sock"
        self.process: subprocess.Popen[bytes] | None = None
        self.containerd: subprocess.Popen[bytes] | None = None
        self.client: Any = None
        # A stopped daemon's data root (:func:`seed`) this one starts as a clone of.
        self.seed = seed

    @property
    def data_root(self) -> Path:
        return self.folder / "data"

    @property
    def log_path(self) -> Path:
        return self.folder / "dockerd.log"

    def argv(self) -> list[str]:
        name = self.folder.name
        return [
            "dockerd",
            "-H",
            self.url,
            "--data-root",
            str(self.data_root),
            "--exec-root",
            str(self.folder / "exec"),
            "--pidfile",
            str(self.folder / "docker.pid"),
            "--bridge=none",
            "--iptables=false",
            "--containerd",
            str(self.containerd_socket),
            "--containerd-namespace",
            f"h2-{name}",
            "--containerd-plugins-namespace",
            f"h2p-{name}",
            *(["--live-restore"] if self.live_restore else []),
            *self.extra_args,
        ]

    def start(self, *, timeout: float = 60.0) -> Any:
        """Start the daemon (again) and return a client once it answers."""
        if self.seed is not None and not self.data_root.exists():
            clone_data_root(self.seed, self.data_root)
        self._ensure_containerd(timeout)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self._inside(self.argv()),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                client = docker.DockerClient(base_url=self.url, timeout=30)
                client.ping()
                break
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise DockerdFailed(
                        f"dockerd at {self.url} did not start: {self.log_tail()}"
                    ) from None
                time.sleep(0.2)
        self.client = client
        return client

    def _ensure_containerd(self, timeout: float) -> None:
        """containerd runs on its own, as containerd.service does beside docker.service: a
        killed dockerd leaves it (and the containers) running, and a new one reconnects.
        (dockerd 20.10 cannot restart beside the containerd it started itself and left.)"""
        if self.containerd is not None and self.containerd.poll() is None:
            return
        config = self.folder / "containerd.toml"
        config.write_text("version = 2\n", encoding="utf-8")
        with (self.folder / "containerd.log").open("ab") as log:
            self.containerd = subprocess.Popen(
                self._inside(
                    [
                        "containerd",
                        "--config",
                        str(config),
                        "--root",
                        str(self.folder / "containerd-root"),
                        "--state",
                        str(self.folder / "containerd-state"),
                        "--address",
                        str(self.containerd_socket),
                    ]
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while not self.containerd_socket.exists():
            if self.containerd.poll() is not None or time.monotonic() > deadline:
                raise DockerdFailed(f"containerd for {self.url} did not start")
            time.sleep(0.05)

    def _inside(self, argv: list[str]) -> list[str]:
        """``argv`` run in this daemon's network namespace, if it has one. nsenter, not
        ``ip netns exec``: that remounts /sys and dockerd then finds no devices cgroup."""
        if self.netns is None:
            return argv
        return ["nsenter", f"--net=/run/netns/{self.netns}", *argv]

    def stop(self, *, timeout: float = 60.0) -> None:
        """A clean shutdown (SIGTERM): with live-restore its containers keep running."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL, as a crashed or OOM-killed daemon: containerd and the containers stay."""
        self._signal(signal.SIGKILL, 30.0)

    def restart(self, *, live_restore: bool | None = None) -> Any:
        self.stop()
        if live_restore is not None:
            self.live_restore = live_restore
        return self.start()

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def remove(self) -> None:
        """Remove every container, stop the daemon and undo what it mounted; delete it all."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def close(self) -> None:
        """Remove every container, stop the daemon and undo what it mounted; keep its files."""
        if self.process is not None and self.process.poll() is None and self.client is not None:
            # A swarm node's agent removes its own task containers as it leaves the swarm: one
            # gone or being removed meanwhile must not leave the daemon and its mounts behind.
            with contextlib.suppress(docker.errors.APIError, OSError):
                for container in self.client.containers.list(all=True):
                    with contextlib.suppress(docker.errors.APIError):
                        container.remove(force=True)
        if self.client is not None:
            self.client.close()
        self.stop(timeout=30)
        if self.containerd is not None and self.containerd.poll() is None:
            self.containerd.terminate()
            try:
                self.containerd.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.containerd.kill()
        # Shims of containers nobody removed (a test that failed with the daemon down).
        pattern = f"containerd-shim.* -address {self.containerd_socket}"
        subprocess.run(["pkill", "-9", "-f", pattern], check=False, capture_output=True)
        # dockerd leaves mounts behind (its data root, the default netns): deepest first.
        mounts = Path("/proc/mounts").read_text().split("\n")
        inside = sorted({m.split()[1] for m in mounts if f" {self.folder}/" in m}, reverse=True)
        for mount in inside:
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)


def seed(client: Any, tags: Sequence[str], parent: Path) -> Path:
    """The data root of a stopped daemon (in ``parent``) that holds ``tags``, copied from
    ``client``'s engine: a :class:`Dockerd` given it as ``seed`` starts with those images,
    as a host that pulled them long ago. Loading the base and router images into a new daemon
    took 4.1 s (and 1.7 s to save them); cloning this, 0.1 s."""
    daemon = Dockerd(live_restore=False, prefix="seed", parent=parent)
    try:
        daemon.start()
        for tag in tags:
            images.copy_image(client, daemon.client, tag)
    except BaseException:
        daemon.remove()
        raise
    daemon.close()
    return daemon.data_root


def clone_data_root(source: Path, target: Path) -> None:
    """``target``, a data root with ``source``'s images: the files of their layers hard-linked
    (no daemon writes into a layer: a container writes to a layer of its own), everything else
    (metadata, databases) copied, so neither daemon ever changes the other's. No engine ID:
    the new daemon makes its own."""
    subprocess.run(["cp", "-a", "--link", os.fspath(source), os.fspath(target)], check=True)
    layers = target / "overlay2"
    for folder, subfolders, files in os.walk(target):
        if Path(folder).parent == layers:
            subfolders[:] = [name for name in subfolders if name != "diff"]
        for name in files:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                copy = path.with_name(f"{name}.copy")
                shutil.copy2(path, copy)
                copy.replace(path)
    (target / "engine-id").unlink(missing_ok=True)
