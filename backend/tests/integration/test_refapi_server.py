"""The real server as the deploy tool sees it: a process, a port, signals and exit codes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from refapi.migrations import head_revision

Start = Callable[..., Any]


def test_serves_probes_and_notes(start_refapi: Start) -> None:
    server = start_refapi()

    ready = server.wait_for("/readyz", 200)

    assert ready == {
        "status": "ready",
        "version": "9.8.7",
        "commit": "feedface",
        "database": "ok",
        "migration": head_revision(),
        "schema": f"schema at this release's head {head_revision()}",
    }
    assert server.get("/healthz").json() == {"status": "ok", "version": "9.8.7"}
    assert server.get("/api/version").json() == {"version": "9.8.7", "commit": "feedface"}
    created = server.post("/api/notes", {"text": "from a real server"})
    assert created.status_code == 201
    note = created.json()
    assert server.get(f"/api/notes/{note['id']}").json() == note
    assert server.get("/api/notes").json() == [note]
    assert server.get("/api/notes/999").status_code == 404


def test_two_copies_run_side_by_side_on_separate_databases(start_refapi: Start) -> None:
    blue = start_refapi(db="blue.db", GIT_COMMIT="blue")
    green = start_refapi(db="green.db", GIT_COMMIT="green")

    assert blue.wait_for("/readyz", 200)["commit"] == "blue"
    assert green.wait_for("/readyz", 200)["commit"] == "green"
    blue.post("/api/notes", {"text": "only in blue"})

    assert [note["text"] for note in blue.get("/api/notes").json()] == ["only in blue"]
    assert green.get("/api/notes").json() == []


def test_two_copies_starting_at_once_on_one_sqlite_file_both_migrate(start_refapi: Start) -> None:
    first = start_refapi(db="shared.db")
    second = start_refapi(db="shared.db")

    assert first.wait_for("/readyz", 200)["migration"] == head_revision()
    assert second.wait_for("/readyz", 200)["migration"] == head_revision()
    note = first.post("/api/notes", {"text": "shared"}).json()
    assert second.get(f"/api/notes/{note['id']}").json() == note


def test_readyz_is_503_until_the_schema_is_migrated(start_refapi: Start) -> None:
    server = start_refapi(MIGRATE_ON_START="0")

    not_ready = server.wait_for("/readyz", 503)

    assert not_ready == {
        "status": "not ready",
        "reason": f"database has no schema; this release needs {head_revision()} — "
        "run `refapi migrate expand`",
        "version": "9.8.7",
        "commit": "feedface",
    }
    assert server.get("/healthz").status_code == 200
    migrate = start_refapi("migrate")
    assert migrate.wait_for_exit() == 0, migrate.logs()
    assert server.wait_for("/readyz", 200, timeout=5)["migration"] == head_revision()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_shuts_down_gracefully_with_exit_0(
    start_refapi: Start, stop_signal: signal.Signals
) -> None:
    server = start_refapi()
    server.wait_for("/readyz", 200)

    assert server.stop(stop_signal) == 0, server.logs()
    assert "Application shutdown complete." in server.stderr
    assert "Traceback" not in server.stderr


def test_a_bad_port_exits_2_with_one_line(start_refapi: Start) -> None:
    server = start_refapi(PORT="abc")

    assert server.wait_for_exit() == 2
    assert server.stderr.splitlines() == [
        "refapi: PORT='abc' is not a port number; expected an integer 1-65535"
    ]


def test_a_port_in_use_exits_3(start_refapi: Start) -> None:
    first = start_refapi()
    first.wait_for("/readyz", 200)

    second = start_refapi(PORT=str(first.port), db="second.db")

    assert second.wait_for_exit() == 3
    assert "address already in use" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.get("/healthz").status_code == 200


def test_the_console_script_reports_a_bad_port_the_same_way(tmp_path: Path) -> None:
    console_script = Path(sys.executable).with_name("refapi")

    result = subprocess.run(
        [console_script],
        env={"PORT": "abc", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "refapi: PORT='abc' is not a port number; expected an integer 1-65535"
    ]


def test_fault_not_ready_keeps_readyz_503(start_refapi: Start) -> None:
    server = start_refapi(REFAPI_FAULT="not-ready")

    assert server.wait_for("/healthz", 200) == {"status": "ok", "version": "9.8.7"}
    ready = server.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["reason"] == "fault injected: not-ready"


def test_fault_crash_exits_3_with_one_line(start_refapi: Start, tmp_path: Path) -> None:
    server = start_refapi(REFAPI_FAULT="crash")

    assert server.wait_for_exit() == 3
    assert server.stderr.splitlines() == ["refapi: fault injected: crash"]
    assert not (tmp_path / "refapi.db").exists()


def test_an_unknown_fault_exits_2_with_one_line(start_refapi: Start) -> None:
    server = start_refapi(REFAPI_FAULT="explode")

    assert server.wait_for_exit() == 2
    assert server.stderr.splitlines() == [
        "refapi: REFAPI_FAULT='explode' is not a known fault; "
        "expected none, not-ready, crash, fail-after-ready=N, fail-ratio=R, slow=MS "
        "or flag-on-fails"
    ]


def test_fault_fail_ratio_fails_every_fifth_request_and_no_probe(start_refapi: Start) -> None:
    server = start_refapi(REFAPI_FAULT="fail-ratio=0.2")

    server.wait_for("/readyz", 200)
    statuses = []
    for _ in range(20):
        statuses.append(server.get("/api/version").status_code)
        assert server.get("/healthz").status_code == 200
        assert server.get("/readyz").status_code == 200

    assert statuses == [200, 200, 200, 200, 500] * 4


def test_fault_fail_after_ready_breaks_every_endpoint_after_n_seconds(start_refapi: Start) -> None:
    server = start_refapi(REFAPI_FAULT="fail-after-ready=2")

    server.wait_for("/readyz", 200)
    assert server.post("/api/notes", {"text": "before the fault"}).status_code == 201
    broken_at = time.monotonic()
    server.wait_for("/readyz", 500, timeout=10)

    assert time.monotonic() - broken_at < 10
    for path in ("/healthz", "/readyz", "/api/version", "/api/notes", "/api/notes/1"):
        response = server.get(path)
        assert (path, response.status_code) == (path, 500)
        assert response.json() == {"detail": "fault injected: fail-after-ready"}
    assert server.post("/api/notes", {"text": "after"}).status_code == 500
