"""Where an environment keeps its state: a volume on its primary Docker engine.

CI runners are thrown away and a laptop is not the truth, so the ledger, the audit trail and
saved logs live with the environment: in a named volume mounted by a small container that is
created but never started. Files go in and out through the engine's archive API, which works
on stopped containers and on remote engines alike.

A volume can fill up or turn read-only. The engine extracts an upload file by file and leaves a
file it could not finish where it was, so a write would otherwise show a torn event. Every
write is therefore staged: one upload holds the data under ``.incoming/`` and then a hard link
to it under the real name, which the engine creates only after the data is complete — a reader
sees the whole file or none. A refused write raises ``StateUnwritable`` with what to do. A
small reserve file lets a run that has already changed something record how it ended on a
full volume (``reserve``, ``write_using_reserve``).
"""

from __future__ import annotations

import io
import secrets
import tarfile
import time
from typing import Any

import docker.errors

from conveyor.containers import Container
from conveyor.errors import StateUnwritable

STATE_DIR = "/state"
# Staged uploads (see the module's docstring); no reader looks here. Each write leaves one
# name behind: a second link to its file (no space), or a torn file after a refused write.
INCOMING = ".incoming"
# Set aside while there is room, given back when a run must record how it ended.
RESERVE = ".reserve"
RESERVE_BYTES = 64 * 1024  # a record's event takes one 4 KiB block
# What a write under each top folder is, for messages.
WHAT = {
    "ledger": "the release ledger",
    "audit": "the audit trail",
    "logs": "a release's logs",
    "rollout": "a rollout request",
}


def put_file(container: Container, folder: str, name: str, data: bytes) -> None:
    """Write one file into a container (running or not) with a single archive upload."""
    put_files(container, folder, {name: data})


def put_files(container: Container, folder: str, files: dict[str, bytes]) -> None:
    """Write files into one folder of a container with a single archive upload, in order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(time.time())
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    container.put_archive(folder, buffer.getvalue())


def put_staged(
    container: Container,
    folder: str,
    path: str,
    data: bytes,
    *,
    first: tuple[str, bytes] | None = None,
) -> None:
    """Write ``folder/path`` so that it appears complete or not at all: the data under
    ``folder/.incoming/`` first, then, in the same upload, a hard link under ``path`` that the
    engine makes only once the data is written (it stops at the first error). ``first``, a
    (name, data) pair, is written before both, plainly."""
    staged = f"{INCOMING}/{time.time_ns():020d}-{secrets.token_hex(4)}"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        if first is not None:
            name, body = first
            before = tarfile.TarInfo(name)
            before.size = len(body)
            before.mtime = int(time.time())
            before.mode = 0o644
            tar.addfile(before, io.BytesIO(body))
        info = tarfile.TarInfo(staged)
        info.size = len(data)
        info.mtime = int(time.time())
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(path)
        link.type = tarfile.LNKTYPE
        link.linkname = staged
        link.mtime = info.mtime
        link.mode = 0o644
        tar.addfile(link)
    container.put_archive(folder, buffer.getvalue())


def refusal(exc: Exception) -> tuple[str, str]:
    """(what the volume said, what to do) for an engine's error on a write."""
    text = str(getattr(exc, "explanation", None) or exc).lower()
    if "no space left" in text or "disk quota" in text:
        return "it is full (no space left on device)", "free space on it"
    if "read-only file system" in text:
        return "it is read-only", "make it writable"
    if "permission denied" in text or "operation not permitted" in text:
        return "the engine may not write to it (permission denied)", "make it writable"
    return f"the engine refused the write ({str(exc)[:200]})", "fix the volume"


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
    def __init__(self, client: Any, env: str, image: str | None, host: str | None = None) -> None:
        self.client = client
        self.env = env
        self.image = image
        # The primary host's name, for messages (the volume lives on its engine).
        self.host = host
        self.container_name, self.volume_name = state_names(env)
        self._container: Container | None = None
        # Set once this store gave its reserve back: the volume is full, say so.
        self.reserve_used = False

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
        """Write one file (relative to the state dir), complete or not at all; a volume that
        refuses it (full, read-only) raises ``StateUnwritable``."""
        try:
            put_staged(self._for_writing(), STATE_DIR, path, data)
        except docker.errors.APIError as exc:
            raise self.unwritable(exc, path) from None

    def write_using_reserve(self, path: str, data: bytes) -> None:
        """``write``, but on a full volume give the reserve back and try once more: for
        recording what already happened (a switch, a verify, how a run ended)."""
        container = self._for_writing()
        try:
            put_staged(container, STATE_DIR, path, data)
            return
        except docker.errors.APIError as exc:
            refused = exc
        if "no space left" in str(refused).lower() and self._release_reserve(container):
            self.reserve_used = True
            try:
                put_staged(container, STATE_DIR, path, data)
                return
            except docker.errors.APIError as exc:
                refused = exc
        raise self.unwritable(refused, path) from None

    def unwritable(self, exc: Exception, path: str) -> StateUnwritable:
        said, action = refusal(exc)
        what = WHAT.get(path.split("/", 1)[0], path)
        where = f"on host {self.host}" if self.host else "on the environment's primary engine"
        return StateUnwritable(
            f"cannot write {what} to the state volume {self.volume_name} {where}: {said}", action
        )

    def write_setting_reserve(self, path: str, data: bytes) -> None:
        """``write``, with the reserve set aside first in the same upload (it replaces the last
        one, so it needs no more room than that had): for a run's first record, before it
        changes anything. A volume without room for both refuses the record too."""
        try:
            put_staged(
                self._for_writing(), STATE_DIR, path, data, first=(RESERVE, bytes(RESERVE_BYTES))
            )
        except docker.errors.APIError as exc:
            raise self.unwritable(exc, path) from None

    def _release_reserve(self, container: Container) -> bool:
        """Give the reserve's space back (an empty file replaces it); whether that worked."""
        try:
            put_file(container, STATE_DIR, RESERVE, b"")
        except docker.errors.APIError:
            return False
        return True

    def sync(self) -> dict[str, int]:
        """Bring copies of this state up to date (:mod:`conveyor.replicas`): one volume has
        none."""
        return {}

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
