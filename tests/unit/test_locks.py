"""When a lock's holder counts as gone."""

from __future__ import annotations

import os
import platform
import subprocess
import time

from conveyor.locks import LockInfo


def info(pid: int, host: str, beat: float | None) -> LockInfo:
    return LockInfo("alice", host, pid, time.time() - 100, "1.0", "", beat)


def test_a_live_local_holder_with_a_fresh_heartbeat_is_not_stale() -> None:
    assert info(os.getpid(), platform.node(), time.time()).stale_reason(30) is None


def test_a_dead_local_process_is_stale_at_once() -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    reason = info(child.pid, platform.node(), time.time()).stale_reason(30)
    assert reason is not None and "is gone" in reason


def test_a_remote_holder_is_judged_by_its_heartbeat() -> None:
    assert info(1, "ci-runner-7", time.time() - 5).stale_reason(30) is None
    reason = info(1, "ci-runner-7", time.time() - 45).stale_reason(30)
    assert reason is not None and "no heartbeat for 45 s" in reason
    assert "describe" not in info(1, "x", None).describe()
