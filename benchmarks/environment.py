"""A benchmark's own environments: the repo's release built as conveyor-test/… images into a
temporary folder, releases derived from it (other versions, injected faults), and sandbox
deploy.toml files on free ports.

A benchmark never touches the user's dist/, tags or environments.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors

from conveyor import artifacts, config, images
from conveyor.console import Console
from testkit import sandbox

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class BenchEnvironment:
    config: config.Config
    name: str
    ports: list[int]
    path: Path  # its deploy.toml, for the CLI's --config


@dataclass
class Releases:
    """Releases derived from one build into one dist folder, and the tags they made."""

    client: Any
    base: dict[str, Any]
    dist: Path
    tags: list[str] = field(default_factory=list)

    def derive(
        self, version: str, *, fault: str | None = None, revisions: dict[str, str] | None = None
    ) -> str:
        """dist/<version>/ whose images report ``version`` (and run with the refapi ``fault``)."""
        sandbox.derive_release(
            self.client, self.base, self.dist, version, fault=fault, revisions=revisions
        )
        tag = version.replace("+", "-")
        self.tags += [f"{sandbox.PREFIX}/{name}:{tag}" for name in ("api", "web")]
        return version

    def remove(self) -> None:
        """Untag every derived release (their images go with the last tag)."""
        for tag in self.tags:
            with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                self.client.images.remove(tag)


def build(client: Any, folder: Path) -> Releases:
    """Build the repo's release under ``folder``; releases derived from it go to folder/dist."""
    quiet = Console(quiet=True)
    repo = sandbox.isolated(config.load(ROOT / "deploy.toml"), folder / "build" / "dist")
    built_folder = artifacts.build(repo, say=lambda line: None)
    built = images.build_images(repo, client, built_folder, push_to_registry=False, out=quiet)
    return Releases(client, built, folder / "dist")


def write_environment(
    folder: Path, dist: Path, hosts: list[dict[str, Any]] | None = None, **options: Any
) -> BenchEnvironment:
    """A sandbox environment (new name, free ports) in folder/<name>/deploy.toml, loaded; on
    this machine's engine unless ``hosts`` says otherwise.

    ``options`` are :func:`testkit.sandbox.environment_toml`'s (verify, drain, canary, …)."""
    name = sandbox.new_name()
    ports = sandbox.allocate_ports(sandbox.PORTS_NEEDED)
    path = folder / name / "deploy.toml"
    path.parent.mkdir(parents=True)
    path.write_text(
        sandbox.environment_toml(
            name,
            ports,
            dist,
            ROOT / "docker",
            hosts or [{"name": "local", "docker": "local"}],
            **options,
        ),
        encoding="utf-8",
    )
    return BenchEnvironment(config=config.load(path), name=name, ports=ports, path=path)


def prepare(client: Any, folder: Path, *, verify: float, drain: float) -> BenchEnvironment:
    """Build, derive 1.0.0 and 2.0.0 and write one environment's deploy.toml under ``folder``."""
    made = build(client, folder)
    for version in ("1.0.0", "2.0.0"):
        made.derive(version)
    return write_environment(folder, made.dist, verify=verify, drain=drain)
