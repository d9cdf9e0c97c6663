"""Fixtures the unit tests share."""

from __future__ import annotations

import http.server
import threading
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data() -> dict[str, Any]:
    """The shipped deploy.toml as a document of its own, for a test to change and parse."""
    return tomllib.loads((ROOT / "deploy.toml").read_text())


@pytest.fixture
def serve() -> Iterator[Callable[[type[http.server.BaseHTTPRequestHandler]], int]]:
    """Serve HTTP on 127.0.0.1 with a handler class, on a free port it returns; stopped after
    the test."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(handler: type[http.server.BaseHTTPRequestHandler]) -> int:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return int(httpd.server_address[1])

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()
