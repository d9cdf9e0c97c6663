"""An environment's deploy lock, held on its primary engine.

The lock is a container named ``conveyor-<env>-lock``: the engine refuses a second container
of the same name, so taking the lock is atomic on the target itself. Its labels say who holds
it (user, machine, pid, time, version, message); the holder refreshes a heartbeat file inside
it. A lock whose holder is gone (its pid is dead on this machine, or its heartbeat is older
than ``lock_stale`` seconds) is broken with an audit record, never silently; a lock whose
holder is alive is removed only by ``unlock --force``, also recorded.

A holder knows its lock by the container's id, not its name: if someone removes the lock and
another deploy takes it, the name is the same but the id is not. The heartbeat notices (its
upload finds no container) and ``still_ours``/``ensure_ours`` say so before a switch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import threading
import time
from collections.abc import Callable
from typing import Any

import docker.errors

from conveyor import state
from conveyor.containers import Container, lock_name
from conveyor.errors import LockHeld, LockLost
from conveyor.lockinfo import LockInfo

HEARTBEAT = "/heartbeat"


class EnvironmentLock:
    def __init__(self, client: Any, env: str, image: str, *, stale_after: float) -> None:
        self.client = client
        self.env = env
        self.image = image
        self.stale_after = stale_after
        self.name = lock_name(env)
        self._container: Container | None = None
        self._stop = threading.Event()
        self._beater: threading.Thread | None = None
        # Set by the heartbeat when our lock container has disappeared: the lock was taken.
        self.lost: str | None = None
        self.beat_error: str | None = None

    def read(self) -> LockInfo | None:
        try:
            container = self.client.containers.get(self.name)
        except docker.errors.NotFound:
            return None
        heartbeat: float | None
        try:
            beat = state.get_file(container, HEARTBEAT)
            heartbeat = float(beat) if beat else None
        except ValueError:
            heartbeat = None
        holder = LockInfo.from_labels(container.labels, heartbeat, container.id)
        return dataclasses.replace(holder, stale=holder.stale_reason(self.stale_after))

    def _try_create(self, owner: str, version: str, message: str) -> bool:
        try:
            self._container = self.client.containers.create(
                self.image,
                ["true"],
                name=self.name,
                network_mode="none",
                labels={
                    "conveyor.env": self.env,
                    "conveyor.role": "lock",
                    "conveyor.lock.owner": owner,
                    "conveyor.lock.host": platform.node(),
                    "conveyor.lock.pid": str(os.getpid()),
                    "conveyor.lock.since": f"{time.time():.3f}",
                    "conveyor.lock.version": version,
                    "conveyor.lock.message": message[:200],
                },
            )
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                return False
            raise
        return True

    def acquire(
        self,
        owner: str,
        version: str,
        message: str = "",
        *,
        wait: float = 0.0,
        on_broken: Callable[[LockInfo, str], None] | None = None,
    ) -> None:
        """Take the lock, waiting up to ``wait`` seconds; break it only if its holder is gone."""
        deadline = time.monotonic() + wait
        while not self._try_create(owner, version, message):
            holder = self.read()
            if holder is None:
                continue  # released between our attempt and the read: try again
            stale = holder.stale
            if stale:
                if on_broken is not None:
                    on_broken(holder, stale)
                # By ID: if another deploy broke it first and took the lock, theirs survives.
                self._remove(holder.container_id)
                continue
            if time.monotonic() >= deadline:
                hint = f" after waiting {wait:.0f} s" if wait else ""
                raise LockHeld(
                    f"{self.env} is locked{hint} by {holder.describe()} — wait (--lock-wait) "
                    f"or, if that deploy is dead, run: invoke unlock --env {self.env}"
                )
            time.sleep(0.5)
        # The first heartbeat comes from the thread after one interval: until then `since`
        # stands in for it.
        self.lost = None
        self._stop.clear()
        self._beater = threading.Thread(
            target=self._beat_forever, daemon=True, name="lock-heartbeat"
        )
        self._beater.start()

    def _beat(self) -> None:
        container = self._container
        if container is None:
            return
        beat = f"{time.time():.3f}".encode()
        try:
            # By the container object, i.e. by id: a lock someone else re-created under our
            # name is not ours to refresh.
            state.put_file(container, "/", HEARTBEAT.lstrip("/"), beat)
        except docker.errors.NotFound:
            self.lost = (
                f"the lock container {container.id[:12]} was removed while this deploy held it"
            )
        except Exception as exc:
            # A slow, busy or unreachable engine: the next beat tries again. Kept for a
            # debugger; a lock that goes stale because of it is judged like any other.
            self.beat_error = f"{type(exc).__name__}: {str(exc)[:200]}"

    def _beat_forever(self) -> None:
        # The first beat comes one interval after the lock was taken: until then the `since`
        # label, set when the container was created, is the heartbeat (a reader judges a lock
        # without one by it), so a beat at once would say nothing new. It cost every deploy
        # an archive upload (~90 ms on Docker 20.10) racing the deploy's own engine calls. An
        # interval is at most a quarter of `lock_stale`, the same margin every later beat has.
        interval = max(0.5, min(5.0, self.stale_after / 4))
        while self.lost is None and not self._stop.wait(interval):
            self._beat()

    def still_ours(self) -> bool:
        """Whether the lock container under our name is still the one we created."""
        return self._why_not_ours() is None

    def ensure_ours(self) -> None:
        """Raise ``LockLost`` unless we still hold the lock; call it right before a switch."""
        why = self._why_not_ours()
        if why is not None:
            raise LockLost(
                f"{self.env}: this deploy no longer holds the lock — {why}; stopped before "
                f"switching — see who holds it now: invoke status --env {self.env}"
            )

    def _why_not_ours(self) -> str | None:
        if self._container is None:
            return "it was never taken or was already released"
        if self.lost is not None:
            return self.lost
        try:
            current = self.client.containers.get(self.name)
        except docker.errors.NotFound:
            return f"the lock container {self._container.id[:12]} was removed"
        if current.id != self._container.id:
            owner = current.labels.get("conveyor.lock.owner", "?")
            return (
                f"the lock was removed and re-taken by {owner} "
                f"(container {current.id[:12]}, ours was {self._container.id[:12]})"
            )
        return None

    def release(self) -> None:
        self._stop.set()
        if self._beater is not None:
            self._beater.join(timeout=10)
        if self._container is not None:
            with contextlib.suppress(docker.errors.NotFound):
                self._container.remove(force=True)
            self._container = None

    def _remove(self, container_id: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.client.containers.get(container_id).remove(force=True)

    def remove(self, holder: LockInfo) -> None:
        """For ``invoke unlock``: remove the lock ``holder`` describes (by container id, so a
        lock taken since it was read survives)."""
        self._remove(holder.container_id)
