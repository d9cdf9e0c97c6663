"""Images built from dist/<version>/ run, answer /readyz with their version, and are lean."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from conveyor import artifacts, health, images, migrationsql
from conveyor.config import Config
from testkit import sandbox
from testkit.dockerd import Dockerd

OCI = "org.opencontainers.image."


@pytest.fixture
def run_container(docker_client: Any) -> Iterator[Callable[..., Any]]:
    started: list[Any] = []

    def run(image: str, **kwargs: Any) -> Any:
        container = docker_client.containers.run(image, detach=True, network_mode="host", **kwargs)
        started.append(container)
        return container

    yield run
    for container in started:
        container.remove(force=True, v=True)


def test_api_image_runs_on_host_network_and_reports_its_version(
    release_images: dict[str, Any],
    release_folder: Path,
    run_container: Callable[..., Any],
    free_port: Callable[[], int],
) -> None:
    manifest = artifacts.read_manifest(release_folder)
    port = free_port()
    container = run_container(release_images["api"]["id"], environment={"PORT": str(port)})
    ready, answer = health.wait_until(
        lambda: health.probe("127.0.0.1", port, "/readyz"),
        timeout=60,
        give_up=lambda: None if _running(container) else "container exited",
    )
    assert ready, f"{answer.describe()}\n{container.logs().decode()[-2000:]}"
    assert answer.body is not None
    assert answer.body["version"] == manifest["version"]
    assert answer.body["commit"] == manifest["commit"]
    assert answer.body["database"] == "ok"


def test_the_release_records_the_migration_sql_its_api_image_renders(
    release_images: dict[str, Any], release_folder: Path, isolated_config: Config
) -> None:
    assert migrationsql.image_command(isolated_config.images["api"])
    manifest = artifacts.verify(release_folder)  # the preview files are sealed artifacts
    entry = manifest["migrations"]["api"]
    assert entry["image_id"] == release_images["api"]["id"]
    assert "web" not in manifest["migrations"]  # no `migrate`, no migrations
    recorded = migrationsql.release_migrations(release_folder.parent, release_folder.name)
    # Rendered in the image with no network, it is what the source tree renders here.
    here = subprocess.run(
        [sys.executable, "-m", "refapi", "migrate", "sql", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert recorded["api"] == json.loads(here.stdout)["revisions"]
    sql = (release_folder / entry["sql"]).read_text()
    assert artifacts.sha256_file(release_folder / entry["sql"]) == entry["sql_sha256"]
    for revision in recorded["api"]:
        assert f"-- revision {revision['revision']} ({revision['kind']}): " in sql


def test_api_image_is_lean_labelled_and_unprivileged(
    release_images: dict[str, Any], release_folder: Path, docker_client: Any
) -> None:
    manifest = artifacts.read_manifest(release_folder)
    image = docker_client.images.get(release_images["api"]["id"])
    config = image.attrs["Config"]
    labels = config["Labels"]
    assert labels[OCI + "version"] == manifest["version"]
    assert labels[OCI + "revision"] == manifest["commit"]
    assert labels[OCI + "created"] == manifest["build_time"]
    assert labels[OCI + "title"]
    assert OCI + "source" in labels
    assert config["User"] == "app"
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    # No compiler, no pip and no pip cache in the runtime image.
    container = docker_client.containers.run(
        release_images["api"]["id"],
        [
            "sh",
            "-c",
            "command -v gcc cc pip pip3; ls /root/.cache/pip 2>/dev/null; "
            "python3 -c 'import pip' 2>/dev/null && echo has-pip; id -u",
        ],
        network_mode="none",
        detach=True,
    )
    try:
        container.wait(timeout=60)
        probe = container.logs().decode()
    finally:
        container.remove(force=True, v=True)  # and the anonymous volume of VOLUME /data
    assert probe.split() == ["10001"], probe


def test_web_image_serves_the_bundle_and_health(
    release_images: dict[str, Any],
    release_folder: Path,
    run_container: Callable[..., Any],
    free_port: Callable[[], int],
) -> None:
    manifest = artifacts.read_manifest(release_folder)
    port = free_port()
    container = run_container(release_images["web"]["id"], environment={"PORT": str(port)})
    ready, answer = health.wait_until(
        lambda: health.probe("127.0.0.1", port, "/readyz"), timeout=30
    )
    assert ready, container.logs().decode()
    assert answer.body is not None and answer.body["version"] == manifest["version"]
    page = health.probe("127.0.0.1", port, "/")
    assert page.status == 200


def test_tags_never_include_latest(release_images: dict[str, Any], docker_client: Any) -> None:
    for entry in release_images.values():
        tags = docker_client.images.get(entry["id"]).tags
        assert tags, entry
        assert not any(tag.endswith(":latest") for tag in tags), tags


def test_push_to_a_real_registry_then_pull_by_digest_runs_that_version(
    isolated_config: Config,
    docker_client: Any,
    release_folder: Path,
    registry: str,
    monkeypatch: pytest.MonkeyPatch,
    second_dockerd: Dockerd,
    free_port: Callable[[], int],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("CONVEYOR_REGISTRY", registry)
    # A copy: the pushed digest goes into its manifest, not into the release other tests share.
    release_folder = Path(shutil.copytree(release_folder, tmp_path / release_folder.name))
    results = images.build_images(isolated_config, docker_client, release_folder, only=["api"])
    entry = results["api"]
    assert entry["reference"].startswith(f"{registry}/{sandbox.PREFIX}/api@sha256:")
    manifest = artifacts.read_manifest(release_folder)
    assert manifest["images"]["api"]["digest"] == entry["digest"]
    # Another engine pulls it by digest alone, as a host without the image does. (On this one
    # the image is the one other tests are running now: its names cannot be taken away.)
    host = second_dockerd.client
    with contextlib.suppress(docker.errors.ImageNotFound):
        host.images.remove(entry["id"], force=True)  # put there by an earlier test
    pulled = host.images.pull(entry["reference"])
    assert pulled.id == entry["id"]
    port = free_port()
    container = host.containers.run(
        entry["reference"], detach=True, network_mode="host", environment={"PORT": str(port)}
    )
    try:
        ready, answer = health.wait_until(
            lambda: health.probe("127.0.0.1", port, "/readyz"), timeout=60
        )
        assert ready, container.logs().decode()
        assert answer.body is not None and answer.body["version"] == manifest["version"]
    finally:
        container.remove(force=True, v=True)
        host.images.remove(entry["id"], force=True)


def _running(container: Any) -> bool:
    container.reload()
    return bool(container.status in {"created", "running"})
