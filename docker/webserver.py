"""Serve the reference web UI's static bundle, with the health endpoints a deploy checks.

Standard library only, so the web image needs nothing installed. ``/healthz`` is liveness,
``/readyz`` says the bundle is in place and which version it is; any other path without a
file falls back to ``index.html`` (a single-page app).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

VERSION = os.environ.get("APP_VERSION", "0.0.0")
COMMIT = os.environ.get("GIT_COMMIT", "unknown")


class SiteHandler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the router reuses connections

    def _json(self, status: HTTPStatus, body: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._json(HTTPStatus.OK, {"status": "ok", "version": VERSION})
            return
        if path == "/readyz":
            index = Path(self.directory) / "index.html"
            if index.is_file():
                self._json(HTTPStatus.OK, {"status": "ready", "version": VERSION, "commit": COMMIT})
            else:
                self._json(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    {"status": "not ready", "reason": "index.html missing", "version": VERSION},
                )
            return
        if not (Path(self.directory) / path.lstrip("/")).exists():
            self.path = "/index.html"
        super().do_GET()

    def end_headers(self) -> None:
        if self.path.startswith("/assets/"):
            self.send_header("Cache-Control", "public, max-age=31536000, immutable")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        if os.environ.get("ACCESS_LOG") == "1":
            super().log_message(format, *args)


def main() -> int:
    root = os.environ.get("SITE_ROOT", "/srv/www")
    try:
        port = int(os.environ.get("PORT", "8000"))
    except ValueError:
        print(f"webserver: PORT must be a number, got {os.environ['PORT']!r}", file=sys.stderr)
        return 2
    host = os.environ.get("HOST", "127.0.0.1")
    server = ThreadingHTTPServer((host, port), partial(SiteHandler, directory=root))
    server.daemon_threads = True

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"webserver: {VERSION} serving {root} on {host}:{port}", flush=True)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
