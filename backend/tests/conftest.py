"""Fixtures shared by refapi's unit and integration tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from refapi.settings import Settings, database_url

REFAPI_ENV_VARS = (
    "PORT",
    "HOST",
    "DATABASE_URL",
    "APP_VERSION",
    "GIT_COMMIT",
    "MIGRATE_ON_START",
    "ACCESS_LOG",
    "REFAPI_FAULT",
)


@pytest.fixture(autouse=True)
def _no_refapi_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PORT or DATABASE_URL in the developer's shell must not leak into a test."""
    for name in REFAPI_ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'refapi.db'}"


@pytest.fixture
def make_settings(sqlite_url: str) -> Callable[..., Settings]:
    """Settings pointing at a fresh SQLite file, with any field overridden."""

    def make(**overrides: Any) -> Settings:
        fields: dict[str, Any] = {
            "database_url": database_url(sqlite_url),
            "version": "1.2.3",
            "commit": "c0ffee",
        }
        fields.update(overrides)
        return Settings(**fields)

    return make
