"""Flags on a swarm: the flag service's task writes the published file only over an older one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest

from conveyor import flagstate, swarmflags
from conveyor.errors import ConveyorError

FILE = b'{"flags": {"new-notes-view": {"state": "ENABLED"}}}\n'


def run_task(volume: Path, stamp: int, content: bytes = FILE) -> None:
    """The task's real script under sh, its volume a folder, ``sleep`` made to return."""
    env = dict(item.split("=", 1) for item in swarmflags.task_env("api", content, stamp))
    env["FLAGS_DIR"] = str(volume)
    script = swarmflags.WRITE.replace("exec sleep infinity", "exit 0")
    subprocess.run(["sh", "-c", script], env={**os.environ, **env}, check=True, timeout=10)


def held_now(volume: Path) -> tuple[bytes, str]:
    stamp = (volume / flagstate.stamp_file("api")).read_text().strip()
    return (volume / "api.json").read_bytes(), stamp


def test_a_new_node_gets_the_published_file_and_its_stamp(tmp_path: Path) -> None:
    run_task(tmp_path, 200)
    assert held_now(tmp_path) == (FILE, "200")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".stamp-api", "api.json"]


def test_a_task_of_an_older_change_never_undoes_a_newer_file(tmp_path: Path) -> None:
    newer = b'{"flags": {}}\n'
    run_task(tmp_path, 300, newer)  # conveyor's direct write stamps alike
    run_task(tmp_path, 200)  # Swarm starts the older change's task late
    assert held_now(tmp_path) == (newer, "300")
    run_task(tmp_path, 300, FILE)  # the same change's task restarted: nothing rewritten
    assert held_now(tmp_path) == (newer, "300")
    run_task(tmp_path, 400)
    assert held_now(tmp_path) == (FILE, "400")


def test_an_empty_or_garbled_stamp_counts_as_none(tmp_path: Path) -> None:
    for held in ("", "garbled\n"):
        (tmp_path / flagstate.stamp_file("api")).write_text(held)
        run_task(tmp_path, 100)
        assert held_now(tmp_path) == (FILE, "100")


def test_a_write_is_stamped_newer_than_what_a_machine_ahead_published() -> None:
    """A clock behind another CI runner's must not make a new change lose to an old one."""
    labels = {"api": {swarmflags.STAMP_LABEL: "5000"}}

    def get(name: str) -> Any:
        image = name.rsplit("-", 1)[-1]
        if image not in labels:
            raise docker.errors.NotFound(name)
        return SimpleNamespace(attrs={"Spec": {"Labels": labels[image]}})

    manager = SimpleNamespace(services=SimpleNamespace(get=get))
    env = SimpleNamespace(name="staging")
    assert swarmflags.next_stamp(manager, env, ["api", "web"], now=100) == 5001
    assert swarmflags.next_stamp(manager, env, ["api"], now=9000) == 9000
    assert swarmflags.next_stamp(manager, env, ["web"], now=100) == 100


def test_a_service_name_longer_than_swarm_allows_is_refused() -> None:
    assert swarmflags.service_name("staging", "api") == "conveyor-staging-flags-api"
    with pytest.raises(ConveyorError, match="shorten"):
        swarmflags.service_name("e" * 50, "api")
