"""Flags on the real server: a file replaced under load reaches it within the bound with no
failed request, and a corrupt file costs one line on stderr, not a traceback per poll."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

FLAG = "new-notes-view"
BOUND = 2.0
REPO_FLAGS = Path(__file__).resolve().parents[2] / "flags.json"

Start = Callable[..., Any]


def write_flags(path: Path, percent: int | None = None, *, raw: bytes | None = None) -> None:
    if raw is None:
        definitions = json.loads(REPO_FLAGS.read_text())
        definitions["flags"][FLAG]["targeting"] = {
            "fractional": [["on", percent], ["off", 100 - (percent or 0)]]
        }
        raw = json.dumps(definitions).encode()
    incoming = path.with_name(f".incoming-{time.time_ns()}")
    incoming.write_bytes(raw)
    os.replace(incoming, path)


class Load:
    """Requests in a loop from another thread, as alice, counting what did not answer 2xx."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, trust_env=False, timeout=5.0)
        self.stop = threading.Event()
        self.sent = 0
        self.failures: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for path in ("/api/flags", "/api/notes"):
                try:
                    response = self.http.get(path, headers={"X-User": "alice"})
                    if response.status_code >= 300:
                        self.failures.append(f"{path}: {response.status_code}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{path}: {exc!r}")
                self.sent += 1

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.http.close()


def test_a_replaced_flags_file_reaches_the_server_under_load_with_no_failure(
    start_refapi: Start, tmp_path: Path
) -> None:
    flags_file = tmp_path / "flags" / "api.json"
    flags_file.parent.mkdir()
    write_flags(flags_file, 0)
    server = start_refapi(FLAGS_FILE=str(flags_file))
    server.wait_for("/readyz", 200)

    def alice_has_it() -> bool:
        return bool(
            server.http.get("/api/flags", headers={"X-User": "alice"}).json()["flags"][FLAG]
        )

    assert not alice_has_it()
    with Load(str(server.http.base_url)) as load:
        time.sleep(0.3)
        write_flags(flags_file, 100)
        written = time.monotonic()
        while not alice_has_it():
            assert time.monotonic() - written < BOUND, "the server never saw the change"
            time.sleep(0.02)
        seen = time.monotonic() - written
        time.sleep(0.3)

    assert seen < BOUND
    assert load.sent > 20
    assert load.failures == []
    metrics = server.get("/metrics").text
    assert f'refapi_flag_requests_total{{flag="{FLAG}",variant="on"}}' in metrics
    assert f'refapi_flag_errors_total{{flag="{FLAG}",variant="off"}} 0' in metrics
    assert f"refapi: flags loaded from {flags_file}" in server.stderr


def test_a_corrupt_flags_file_is_one_line_on_stderr_and_changes_nothing(
    start_refapi: Start, tmp_path: Path
) -> None:
    flags_file = tmp_path / "api.json"
    write_flags(flags_file, 100)
    server = start_refapi(FLAGS_FILE=str(flags_file))
    server.wait_for("/readyz", 200)

    write_flags(flags_file, raw=b"{not json")
    time.sleep(4 * 0.5 + 0.2)

    assert server.get("/api/flags").json()["flags"][FLAG] is True
    about_it = [line for line in server.stderr.splitlines() if str(flags_file) in line]
    assert about_it[-1].startswith(f"refapi: flags file {flags_file}: not JSON (")
    assert about_it[-1].endswith("; serving the last good flags")
    assert len([line for line in about_it if "not JSON" in line]) == 1
    assert "Traceback" not in server.stderr
