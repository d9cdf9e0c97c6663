"""A local HTTP server that records every request: the stand-in for a chat webhook (apprise's
``json://``) and for GitHub's REST API, which cannot be reached from here.

Imported by the governance tests (unit and integration); it holds no tests itself.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes


@dataclass
class RecordingServer:
    """Answers ``routes[(method, path)]`` (status, JSON) or 201 ``{"id": n}``; records all."""

    port: int = 0
    requests: list[Request] = field(default_factory=list)
    routes: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    _next_id: int = 100

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bodies(self, path_prefix: str = "") -> list[Any]:
        return [r.body for r in self.requests if r.path.startswith(path_prefix)]

    def answer(self, method: str, path: str) -> tuple[int, Any]:
        if (method, path) in self.routes:
            return self.routes[(method, path)]
        self._next_id += 1
        return (201 if method == "POST" else 200), {"id": self._next_id}


@contextmanager
def recording_server() -> Iterator[RecordingServer]:
    state = RecordingServer()
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            with lock:
                state.requests.append(
                    Request(self.command, self.path, dict(self.headers.items()), body, raw)
                )
                status, answer = state.answer(self.command, self.path.split("?")[0])
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = _handle  # noqa: N815 - http.server's names

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
