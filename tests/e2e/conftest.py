"""End-to-end fixtures: the release built into a temp dist as ``conveyor-test/…``, and proof
that the run left the engine, dist/ and .conveyor/ as it found them (see sandbox.untouched)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import artifacts, images
from conveyor.config import Config
from testkit import sandbox

ROOT = Path(__file__).resolve().parents[2]
USER_FOLDERS = (ROOT / "dist", ROOT / ".conveyor")
TOOL_CACHES = ("cache", "scan-venv")


@pytest.fixture(scope="session", autouse=True)
def engine_untouched(docker_client: Any) -> Iterator[None]:
    """Fail the session if it changed anything it does not own, or left a container behind."""
    with sandbox.untouched(docker_client, USER_FOLDERS, skip=TOOL_CACHES) as problems:
        yield
    if problems:
        pytest.fail("the suite touched what it does not own:\n  " + "\n  ".join(problems))


@pytest.fixture(scope="session")
def release_folder(repo_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dist/<version>/ of the checkout under test, built into a temp dir."""
    config = sandbox.isolated(repo_config, tmp_path_factory.mktemp("build") / "dist")
    return artifacts.build(config, say=lambda line: None)


@pytest.fixture(scope="session")
def release_images(repo_config: Config, docker_client: Any, release_folder: Path) -> dict[str, Any]:
    """The api and web images of that release, as ``conveyor-test/…`` (not pushed)."""
    config = sandbox.isolated(repo_config, release_folder.parent)
    return images.build_images(config, docker_client, release_folder, push_to_registry=False)
