"""Where an environment keeps its state: a volume on its primary Docker engine.

CI runners are thrown away and a laptop is not the truth, so the ledger, the audit trail and
saved logs live with the environment: in a named volume mounted by a small container that is
created but never started. Files go in and out through the engine's archive API, which works
on stopped containers and on remote engines alike.
"""

from __future__ import annotations

import io
import tarfile
import time
from typing import Any

import docker.errors

from conveyor.containers import Container

STATE_DIR = "/state"


def put_file(container: Container, folder: str, name: str, data: bytes) -> None:
    """Write one file into a container (running or not) with a single archive upload."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = int(time.time())
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))
    container.put_archive(folder, buffer.getvalue())


def get_file(container: Container, path: str) -> bytes | None:
    """One file's bytes from a container, or None when it is not there."""
    try:
        stream, _stat = container.get_archive(path)
    except docker.errors.NotFound:
        return None
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        handle = tar.extractfile(members[0]) if members else None
        return handle.read() if handle else None


def state_names(env: str) -> tuple[str, str]:
    """(container, volume) names of an environment's state."""
    return f"conveyor-{env}-state", f"conveyor-{env}-state"


class StateStore:
    def __init__(self, client: Any, env: str, image: str | None) -> None:
        self.client = client
        self.env = env
        self.image = image
        self.container_name, self.volume_name = state_names(env)
        self._container: Container | None = None

    def _find(self) -> Container | None:
        if self._container is None:
            try:
                self._container = self.client.containers.get(self.container_name)
            except docker.errors.NotFound:
                return None
        return self._container

    def _create(self) -> Container:
        if self.image is None:
            raise RuntimeError("state store needs an image to create its container")
        try:
            container: Container = self.client.containers.create(
                self.image,
                ["true"],
                name=self.container_name,
                labels={"conveyor.env": self.env, "conveyor.role": "state"},
                volumes={self.volume_name: {"bind": STATE_DIR, "mode": "rw"}},
                network_mode="none",
            )
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # created by a concurrent writer: use theirs
                raise
            container = self.client.containers.get(self.container_name)
        return container

    def _for_writing(self) -> Container:
        container = self._find()
        if container is None:
            container = self._container = self._create()
        return container

    def exists(self) -> bool:
        return self._find() is not None

    def write(self, path: str, data: bytes) -> None:
        """Write one file (relative to the state dir) in a single archive upload."""
        put_file(self._for_writing(), STATE_DIR, path, data)

    def read_tree(self, path: str) -> dict[str, bytes]:
        """Every file under ``path`` (relative), keyed by its path relative to the state dir."""
        container = self._find()
        if container is None:
            return {}
        try:
            stream, _stat = container.get_archive(f"{STATE_DIR}/{path}")
        except docker.errors.NotFound:
            return {}
        raw = b"".join(stream)
        files: dict[str, bytes] = {}
        parent = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    handle = tar.extractfile(member)
                    if handle is not None:
                        files[parent + member.name] = handle.read()
        return files
