"""A benchmark's own environment: the repo's release built as conveyor-test/… images into a
temporary folder, 1.0.0 and 2.0.0 derived from it, and a sandbox deploy.toml on free ports.

A benchmark never touches the user's dist/, tags or environments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor import artifacts, config, images
from conveyor.console import Console
from testkit import sandbox

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class BenchEnvironment:
    config: config.Config
    name: str
    ports: list[int]


def prepare(client: Any, folder: Path, *, verify: float, drain: float) -> BenchEnvironment:
    """Build, derive the two versions and write the environment's deploy.toml under ``folder``."""
    quiet = Console(quiet=True)
    repo = sandbox.isolated(config.load(ROOT / "deploy.toml"), folder / "build" / "dist")
    built_folder = artifacts.build(repo, say=lambda line: None)
    built = images.build_images(repo, client, built_folder, push_to_registry=False, out=quiet)
    dist = folder / "dist"
    for version in ("1.0.0", "2.0.0"):
        sandbox.derive_release(client, built, dist, version)
    name = sandbox.new_name()
    ports = sandbox.allocate_ports(sandbox.PORTS_NEEDED)
    path = folder / "deploy.toml"
    path.write_text(
        sandbox.environment_toml(
            name,
            ports,
            dist,
            ROOT / "docker",
            [{"name": "local", "docker": "local"}],
            verify=verify,
            drain=drain,
        )
    )
    return BenchEnvironment(config=config.load(path), name=name, ports=ports)
