"""Artifacts: reproducible builds, the dirty flag, the store (local and OCI), retention."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conveyor import artifacts, config, images, store
from conveyor.errors import ImageError
from conveyor.operations import history
from testkit import sandbox

ROOT = Path(__file__).resolve().parents[2]
REPRODUCIBLE = (".whl", ".tar.gz")


def clone_and_build(tmp: Path, name: str) -> Path:
    clone = tmp / name
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    return artifacts.build(config.load(clone / "deploy.toml"), say=lambda line: None)


def test_the_same_commit_builds_byte_identical_artifacts_anywhere(tmp_path: Path) -> None:
    first = clone_and_build(tmp_path, "one")
    second = clone_and_build(tmp_path, "two")
    assert first.name == second.name, "same commit, same version"
    ones = artifacts.read_manifest(first)["files"]
    twos = artifacts.read_manifest(second)["files"]
    compared = [name for name in ones if name.endswith(REPRODUCIBLE)]
    assert len(compared) == 3, compared  # wheel, sdist, frontend bundle
    for name in compared:
        assert ones[name]["sha256"] == twos[name]["sha256"], name
    assert not artifacts.read_manifest(first)["dirty"]

    (tmp_path / "one" / "backend" / "src" / "refapi" / "__init__.py").write_text("# changed\n")
    dirty = artifacts.build(
        config.load(tmp_path / "one" / "deploy.toml"), only="backend", say=print
    )
    manifest = artifacts.read_manifest(dirty)
    assert manifest["dirty"] is True
    assert manifest["version"].endswith(".dirty")
    assert manifest["image_tags"] == [manifest["version"].replace("+", "-")], "no sha- tag"


def test_build_and_image_store_versions_locally_and_in_the_registry(
    tmp_path: Path, registry: str, docker_client: Any, test_releases: Any
) -> None:
    config_path = tmp_path / "deploy.toml"
    config_path.write_text(
        (ROOT / "deploy.toml")
        .read_text()
        .replace('store = "local"', 'store = "registry"')
        .replace('path = ".conveyor/artifacts"', f'path = "{tmp_path / "store"}"')
    )
    cfg = config.load(config_path)
    os.environ["CONVEYOR_REGISTRY"] = registry
    try:
        stored = store.publish(cfg, test_releases.made["1.0.0"])
        local, remote = stored
        assert local.version == remote.version == "1.0.0"
        assert local.manifest_sha256 == remote.manifest_sha256
        assert remote.images["api"].startswith("sha256:")
        assert remote.where == f"{registry}/conveyor/artifacts:1.0.0"
        fetched = store.stores(cfg)[1].fetch("1.0.0", tmp_path / "fetched")
        assert artifacts.verify(fetched)["version"] == "1.0.0"
        result = subprocess.run(
            [
                "python",
                "-m",
                "conveyor",
                "--config",
                str(config_path),
                "artifacts",
                "list",
                "--json",
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ},
        )
        rows = json.loads(result.stdout)
        assert {row["where"] for row in rows} == {local.where, remote.where}
        assert all(row["images"]["api"] == remote.images["api"] for row in rows)
    finally:
        del os.environ["CONVEYOR_REGISTRY"]


def test_retention_never_deletes_the_live_or_the_rollback_version(
    make_environment: Any, test_releases: Any, tmp_path: Path
) -> None:
    env = make_environment()
    with env.config_path.open("a") as handle:
        handle.write(f'\n[artifacts]\npath = "{tmp_path / "store"}"\nkeep = 1\n')
    cfg = env.config
    for version in ("1.0.0", "2.0.0", "3.0.0", "9.0.1+notready"):
        store.publish(cfg, test_releases.made[version])
    assert env.cli("deploy", "--env", env.name, "--version", "1.0.0").returncode == 0
    assert env.cli("deploy", "--env", env.name, "--version", "2.0.0").returncode == 0

    deleted = store.prune(cfg, lambda name: history(cfg, name), say=lambda line: None)
    assert deleted == ["3.0.0"]
    remaining = {v.version for v in store.stores(cfg)[0].list()}
    assert remaining == {"9.0.1+notready", "2.0.0", "1.0.0"}, "newest, live and rollback kept"


def test_an_unreachable_ledger_prunes_nothing(tmp_path: Path, test_releases: Any) -> None:
    config_path = tmp_path / "deploy.toml"
    config_path.write_text(
        (ROOT / "deploy.toml")
        .read_text()
        .replace('path = ".conveyor/artifacts"', f'path = "{tmp_path / "store"}"')
        .replace("keep = 10", "keep = 1")
    )
    cfg = config.load(config_path)
    for version in ("1.0.0", "2.0.0"):
        store.publish(cfg, test_releases.made[version])
    result = subprocess.run(
        ["python", "-m", "conveyor", "--config", str(config_path), "artifacts", "prune"],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "CONVEYOR_PRODUCTION_DOCKER_HOST"},
    )
    assert result.returncode != 0
    assert "nothing pruned" in result.stderr and "production" in result.stderr
    assert len(store.stores(cfg)[0].list()) == 2


def test_a_dead_registry_fails_the_push_clearly_and_keeps_local_artifacts(
    release_folder: Path, test_project: Path, tmp_path: Path
) -> None:
    port = sandbox.allocate_ports(1)[0]
    result = subprocess.run(
        [
            "python",
            "-m",
            "conveyor",
            "--config",
            str(test_project),
            "image",
            "--version",
            release_folder.name,
            "--only",
            "api",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "CONVEYOR_REGISTRY": f"127.0.0.1:{port}"},
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("conveyor: push of 127.0.0.1:") and "registry running" in last, last
    assert artifacts.verify(release_folder)["version"] == release_folder.name


def test_no_engine_and_no_base_image_each_say_what_to_run(
    release_folder: Path, test_project: Path, repo_config: config.Config, docker_client: Any
) -> None:
    result = subprocess.run(
        [
            "python",
            "-m",
            "conveyor",
            "--config",
            str(test_project),
            "image",
            "--version",
            release_folder.name,
        ],
        cwd=test_project.parent,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "conveyor: no Docker engine at unix:///nonexistent/docker.sock — run scripts/setup"
        )
    )
    missing = dataclasses.replace(
        repo_config,
        build=dataclasses.replace(
            repo_config.build,
            base_image="localhost/conveyor-missing:1",
            offline_base_image="localhost/conveyor-missing:2",
        ),
    )
    with pytest.raises(ImageError, match=r"cannot be pulled.*run scripts/setup"):
        images.resolve_base_image(docker_client, missing)
