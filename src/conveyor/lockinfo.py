"""Who holds an environment's deploy lock, and whether they are still alive: no engine needed.

The lock itself (a container on the primary engine) is :mod:`conveyor.locks`; this is what a
reading of it says, so ``status`` and the planner can use it without the docker SDK.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class LockInfo:
    owner: str
    host: str
    pid: int
    since: float
    version: str
    message: str
    heartbeat: float | None
    container_id: str = ""
    # Why the holder counts as gone, judged when the lock was read; None while it is alive.
    stale: str | None = None

    @classmethod
    def from_labels(
        cls, labels: Mapping[str, str], heartbeat: float | None, container_id: str
    ) -> LockInfo:
        """What the lock container's labels say (``stale`` is judged by the reader)."""
        return cls(
            owner=labels.get("conveyor.lock.owner", "?"),
            host=labels.get("conveyor.lock.host", "?"),
            pid=int(labels.get("conveyor.lock.pid", "0") or 0),
            since=float(labels.get("conveyor.lock.since", "0") or 0),
            version=labels.get("conveyor.lock.version", "?"),
            message=labels.get("conveyor.lock.message", ""),
            heartbeat=heartbeat,
            container_id=container_id,
        )

    def describe(self) -> str:
        age = time.time() - self.since
        return (
            f"{self.owner} on {self.host} (pid {self.pid}) since {age:.0f} s ago, deploying "
            f"{self.version}" + (f": {self.message}" if self.message else "")
        )

    def summary(self, env: str) -> str:
        """The status line: held, or stale and why, with what happens to it next."""
        if self.stale is None:
            return f"held by {self.describe()} ({self.liveness()})"
        return (
            f"STALE — {self.stale}; was held by {self.describe()}. The next deploy breaks it, "
            f"or run: invoke unlock --env {env}"
        )

    def liveness(self) -> str:
        """Why the holder counts as alive, in words (for status and a refused unlock)."""
        beat = self.heartbeat if self.heartbeat is not None else self.since
        heard = f"heartbeat {max(0.0, time.time() - beat):.0f} s ago"
        if self.host == platform.node():
            return f"{heard}, process {self.pid} alive on this machine"
        return f"{heard}; its process runs on {self.host}, which this machine cannot check"

    def stale_reason(self, stale_after: float) -> str | None:
        if self.host == platform.node() and not pid_alive(self.pid):
            return f"its process {self.pid} on {self.host} is gone"
        beat = self.heartbeat if self.heartbeat is not None else self.since
        silent = time.time() - beat
        if silent > stale_after:
            return f"no heartbeat for {silent:.0f} s (limit {stale_after:.0f} s)"
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
