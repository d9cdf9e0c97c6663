"""testkit.loadgen as a command (how benchmarks run load inside a network namespace): it runs
until its stdin closes and reports each target's requests and failures as JSON."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


class Answer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b'{"version": "1.2.3"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(serve: Callable[[type[http.server.BaseHTTPRequestHandler]], int]) -> int:
    return serve(Answer)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_command_loads_every_target_until_stdin_closes(server: int) -> None:
    refused = closed_port()
    targets = [f"127.0.0.1:{server}", f"127.0.0.1:{refused}"]
    load = subprocess.Popen(
        [sys.executable, "-m", "testkit.loadgen", *targets, "--rate=50", "--max-seconds=20"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.fspath(ROOT)},
    )
    assert load.stdout is not None
    assert load.stdout.readline().strip() == "started"
    time.sleep(1.0)
    out, _ = load.communicate(timeout=30)
    results = json.loads(out)
    served, failed = results[targets[0]], results[targets[1]]
    assert served["requests"] >= 20 and served["failures"] == 0, served
    assert set(served["versions"]) == {"1.2.3"}
    assert failed["requests"] == failed["failures"] >= 20, failed
    assert set(failed["errors"]) == {"ConnectionRefusedError"}
    assert len(failed["failure_times"]) == failed["failures"]
    assert failed["seconds"] < 10, "it stopped when stdin closed, not at --max-seconds"
