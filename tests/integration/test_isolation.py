"""The suite shares the engine with the user's own environments: the guard that proves it.

``engine_untouched`` (conftest) fails the session when anything the suite does not own has
changed. These tests make sure that guard can fail: each kind of change it must see is made
to objects of this test's own, under a name outside the sandbox's namespace. Only lines about
those objects count: other xdist workers may be deploying meanwhile.
"""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path
from typing import Any

import docker.errors

from conveyor import images
from conveyor.config import Config
from testkit import sandbox


def test_the_guard_sees_every_change_to_what_the_suite_does_not_own(
    docker_client: Any, repo_config: Config, tmp_path: Path
) -> None:
    base = docker_client.images.get(images.resolve_base_image(docker_client, repo_config))
    name = f"guard-{secrets.token_hex(3)}"
    folder = tmp_path / "dist"
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")
    docker_client.volumes.create(name)
    base.tag(f"{name}/base", "1")
    container = docker_client.containers.run(
        base.id,
        ["sleep", "300"],
        name=name,
        detach=True,
        network_mode="none",
        volumes={name: {"bind": "/state", "mode": "rw"}},
    )
    leaked = None
    # Two images without a name, as the user's earlier builds leave them.
    unnamed = [container.commit(changes=[f"LABEL guard={name}-{n}"]) for n in range(2)]

    def mine(problems: list[str]) -> list[str]:
        keys = [name, str(folder), *(i.id[7:19] for i in unnamed)]
        keys += [leaked.id[:12]] if leaked else []
        return [line for line in problems if any(key in line for key in keys)]

    try:
        with sandbox.untouched(docker_client, [folder]) as problems:
            # The sandbox's own names may come and go freely.
            base.tag(f"{sandbox.PREFIX}/guard", name)
            docker_client.images.remove(f"{sandbox.PREFIX}/guard:{name}")
            # The suite's build may come out as an unnamed image of the user's (the same
            # content, from the build cache): it gets the suite's name and stays.
            unnamed[0].tag(f"{sandbox.PREFIX}/guard", f"{name}-built")
        assert mine(problems) == []

        with sandbox.untouched(docker_client, [folder]) as problems:
            container.restart(timeout=0)
            assert container.exec_run(["sh", "-c", "echo event >> /state/ledger"]).exit_code == 0
            docker_client.images.remove(f"{name}/base:1")
            base.tag(f"{name}/added", "1")
            (folder / "manifest.json").write_text('{"changed": true}')
            leaked = docker_client.containers.create(base.id, ["true"], network_mode="none")
            docker_client.volumes.create(f"{name}-new")
            docker_client.images.remove(unnamed[1].id)
        text = "\n".join(mine(problems))
        assert f"container {name} (" in text and "'started'" in text, text
        assert f"volume {name}: added ledger" in text, text
        assert f"image tag {name}/base:1 was removed" in text, text
        assert f"image tag {name}/added:1 was added" in text, text
        assert f"{folder}: changed manifest.json" in text, text
        assert f"({leaked.id[:12]}, created) appeared and is still there" in text, text
        assert f"volume {name}-new appeared and is still there" in text, text
        assert f"untagged image {unnamed[1].id[7:19]} was removed" in text, text
        assert len(mine(problems)) == 8, text

        with sandbox.untouched(docker_client) as problems:
            container.remove(force=True)
            docker_client.volumes.get(name).remove()
        removed = [
            f"container {name} ({container.id[:12]}) was removed",
            f"volume {name} was removed",
        ]
        assert sorted(mine(problems)) == removed, problems
    finally:
        for cleanup in (
            lambda: leaked and leaked.remove(force=True),
            lambda: container.remove(force=True),
            lambda: docker_client.volumes.get(name).remove(force=True),
            lambda: docker_client.volumes.get(f"{name}-new").remove(force=True),
            lambda: docker_client.images.remove(f"{name}/added:1"),
            lambda: docker_client.images.remove(f"{name}/base:1"),
            lambda: docker_client.images.remove(f"{sandbox.PREFIX}/guard:{name}-built"),
            lambda: docker_client.images.remove(unnamed[1].id),
        ):
            with contextlib.suppress(docker.errors.NotFound):
                cleanup()
