"""In-process fixtures: the FastAPI app behind a TestClient, no server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from fastapi.testclient import TestClient

from refapi.app import create_app
from refapi.database import create_engine
from refapi.migrations import upgrade_to_head
from refapi.settings import Settings


@pytest.fixture
def make_client(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    """Start the app (lifespan included) on its own SQLite file; migrated unless told not to."""
    with ExitStack() as stack:

        def make(*, migrate: bool = True, **overrides: Any) -> TestClient:
            settings = make_settings(**overrides)
            engine = create_engine(settings.database_url)
            stack.callback(engine.dispose)
            if migrate:
                upgrade_to_head(engine)
            return stack.enter_context(TestClient(create_app(settings, engine)))

        yield make


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()
