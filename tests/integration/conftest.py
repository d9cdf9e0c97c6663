"""Release fixtures for integration tests: artifacts and images built once per run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conveyor import artifacts, images
from conveyor.config import Config


@pytest.fixture(scope="session")
def release_folder(repo_config: Config) -> Path:
    """dist/<version>/ of the checkout under test, built by the real build."""
    return artifacts.build(repo_config, say=lambda line: None)


@pytest.fixture(scope="session")
def release_images(repo_config: Config, docker_client: Any, release_folder: Path) -> dict[str, Any]:
    """The api and web images of that release, built by the real docker engine (not pushed)."""
    return images.build_images(repo_config, docker_client, release_folder, push_to_registry=False)
