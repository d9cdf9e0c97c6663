"""When a lock's holder counts as gone, how a lock is shown, and when it is still ours."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import replace
from types import SimpleNamespace

import docker.errors
import pytest

from conveyor.errors import LockLost
from conveyor.lockinfo import LockInfo
from conveyor.locks import EnvironmentLock


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


def test_a_stale_lock_says_it_is_stale_why_and_what_happens_next() -> None:
    holder = replace(info(1, "ci-runner-7", time.time() - 45), stale="no heartbeat for 45 s")
    line = holder.summary("qa")
    assert line.startswith("STALE — no heartbeat for 45 s; was held by alice on ci-runner-7")
    assert "invoke unlock --env qa" in line and "held by alice" in line


def test_a_live_lock_says_why_it_counts_as_alive() -> None:
    here = info(os.getpid(), platform.node(), time.time() - 2)
    assert here.summary("qa").startswith("held by alice on")
    assert f"process {os.getpid()} alive on this machine" in here.summary("qa")
    remote = info(1, "ci-runner-7", time.time() - 2).liveness()
    assert "heartbeat 2 s ago" in remote and "cannot check" in remote


class FakeContainer:
    def __init__(self, cid: str, owner: str = "alice") -> None:
        self.id = cid
        self.labels = {"conveyor.lock.owner": owner}
        self.gone = False

    def put_archive(self, folder: str, data: bytes) -> None:
        if self.gone:
            raise docker.errors.NotFound("no such container")


class FakeContainers:
    """The engine's containers by name: just enough to hold one lock container."""

    def __init__(self) -> None:
        self.by_name: dict[str, FakeContainer] = {}

    def get(self, name: str) -> FakeContainer:
        if name not in self.by_name:
            raise docker.errors.NotFound(name)
        return self.by_name[name]


def held_lock() -> tuple[EnvironmentLock, FakeContainers]:
    containers = FakeContainers()
    lock = EnvironmentLock(SimpleNamespace(containers=containers), "qa", "img", stale_after=30)
    ours = FakeContainer("a" * 64)
    containers.by_name[lock.name] = ours
    lock._container = ours  # as acquire() leaves it
    return lock, containers


def test_the_lock_is_ours_only_while_its_container_is_the_one_we_created() -> None:
    lock, containers = held_lock()
    assert lock.still_ours()
    lock.ensure_ours()
    containers.by_name[lock.name] = FakeContainer("b" * 64, owner="bob")  # removed, re-taken
    assert not lock.still_ours()
    with pytest.raises(LockLost) as lost:
        lock.ensure_ours()
    assert "re-taken by bob" in str(lost.value) and "bbbbbbbbbbbb" in str(lost.value)
    del containers.by_name[lock.name]
    assert not lock.still_ours()


def test_the_heartbeat_notices_its_container_is_gone_and_stops_beating() -> None:
    lock, containers = held_lock()
    lock._beat()
    assert lock.lost is None
    containers.by_name[lock.name].gone = True
    containers.by_name[lock.name] = FakeContainer("c" * 64)
    lock._beat()
    assert lock.lost is not None and "was removed" in lock.lost
    assert not lock.still_ours()


def test_the_first_heartbeat_waits_an_interval_and_the_since_label_covers_it() -> None:
    lock, containers = held_lock()
    uploads: list[bytes] = []
    containers.by_name[lock.name].put_archive = lambda folder, data: uploads.append(data)  # type: ignore[method-assign]
    lock._stop.set()  # released before the first interval ended
    lock._beat_forever()
    assert uploads == []
    # A lock taken one interval (stale_after / 4) ago, not yet beaten, is not stale.
    taken = LockInfo("alice", "ci-runner-7", 1, time.time() - 30 / 4, "1.0", "", None)
    assert taken.stale_reason(30) is None
    assert LockInfo("alice", "ci-runner-7", 1, time.time() - 31, "1.0", "", None).stale_reason(30)


def test_a_lock_never_taken_is_not_ours() -> None:
    lock = EnvironmentLock(SimpleNamespace(containers=FakeContainers()), "qa", "i", stale_after=3)
    assert not lock.still_ours()
