"""Fixtures the unit tests share."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data() -> dict[str, Any]:
    """The shipped deploy.toml as a document of its own, for a test to change and parse."""
    return tomllib.loads((ROOT / "deploy.toml").read_text())
