from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from refapi.app import FailureSchedule
from refapi.migrations import head_revision
from refapi.settings import Fault, database_url


def test_healthz_reports_the_version(client: TestClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": "1.2.3"}


def test_readyz_when_migrated(client: TestClient) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "version": "1.2.3",
        "commit": "c0ffee",
        "database": "ok",
        "migration": head_revision(),
        "schema": f"schema at this release's head {head_revision()}",
    }


def test_readyz_is_503_when_the_schema_is_behind(make_client: Callable[..., TestClient]) -> None:
    client = make_client(migrate=False)

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "not ready",
        "reason": f"database has no schema; this release needs {head_revision()} — "
        "run `refapi migrate expand`",
        "version": "1.2.3",
        "commit": "c0ffee",
    }


def test_readyz_is_503_and_healthz_200_when_the_database_is_unreachable(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    unreachable = database_url(f"sqlite:///{tmp_path / 'missing-dir' / 'refapi.db'}")
    client = make_client(migrate=False, database_url=unreachable)

    ready = client.get("/readyz")

    assert ready.status_code == 503
    assert ready.json()["reason"].startswith("database unreachable: ")
    assert "unable to open database file" in ready.json()["reason"]
    assert client.get("/healthz").status_code == 200


def test_version(client: TestClient) -> None:
    assert client.get("/api/version").json() == {"version": "1.2.3", "commit": "c0ffee"}


def test_a_note_round_trips(client: TestClient) -> None:
    before = datetime.now(UTC)

    created = client.post("/api/notes", json={"text": "ship it"})

    assert created.status_code == 201
    note = created.json()
    assert set(note) == {"id", "text", "created_at", "pinned"}
    assert note["text"] == "ship it"
    assert note["pinned"] is False
    created_at = datetime.fromisoformat(note["created_at"])
    assert created_at.tzinfo is not None
    assert before <= created_at <= datetime.now(UTC)
    assert client.get(f"/api/notes/{note['id']}").json() == note
    assert client.get("/api/notes").json() == [note]


def test_notes_are_listed_newest_first(client: TestClient) -> None:
    ids = [client.post("/api/notes", json={"text": f"note {n}"}).json()["id"] for n in range(3)]

    listed = client.get("/api/notes").json()

    assert [note["id"] for note in listed] == ids[::-1]
    assert [note["text"] for note in listed] == ["note 2", "note 1", "note 0"]
    assert [note["id"] for note in client.get("/api/notes?limit=2").json()] == ids[:0:-1]


def test_pinned_notes_are_listed_first_then_newest(client: TestClient) -> None:
    old_pin = client.post("/api/notes", json={"text": "old pin", "pinned": True}).json()
    plain = client.post("/api/notes", json={"text": "plain"}).json()
    new_pin = client.post("/api/notes", json={"text": "new pin", "pinned": True}).json()

    listed = client.get("/api/notes").json()

    assert [note["id"] for note in listed] == [new_pin["id"], old_pin["id"], plain["id"]]
    assert [note["pinned"] for note in listed] == [True, True, False]
    assert client.get(f"/api/notes/{old_pin['id']}").json()["pinned"] is True


def test_notes_survive_a_restart(make_client: Callable[..., TestClient]) -> None:
    first = make_client()
    note = first.post("/api/notes", json={"text": "durable"}).json()

    second = make_client()

    assert second.get(f"/api/notes/{note['id']}").json() == note


def test_an_unknown_note_is_404(client: TestClient) -> None:
    response = client.get("/api/notes/999")

    assert response.status_code == 404
    assert response.json() == {"detail": "note 999 not found"}


@pytest.mark.parametrize("length", [1, 1000])
def test_note_text_at_the_limits_is_accepted(client: TestClient, length: int) -> None:
    response = client.post("/api/notes", json={"text": "x" * length})

    assert response.status_code == 201
    assert response.json()["text"] == "x" * length


@pytest.mark.parametrize(
    "body",
    [{"text": ""}, {"text": "x" * 1001}, {}, {"text": 5}, {"text": "x", "pinned": "perhaps"}],
)
def test_invalid_notes_are_422_and_not_stored(client: TestClient, body: object) -> None:
    assert client.post("/api/notes", json=body).status_code == 422
    assert client.get("/api/notes").json() == []


def test_fault_not_ready_fails_only_readiness(make_client: Callable[..., TestClient]) -> None:
    client = make_client(fault=Fault("not-ready"))

    ready = client.get("/readyz")

    assert ready.status_code == 503
    assert ready.json()["reason"] == "fault injected: not-ready"
    assert ready.json()["commit"] == "c0ffee"
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/version").status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/api/version", "/api/notes"])
def test_fault_fail_after_ready_fails_every_endpoint_once_due(
    make_client: Callable[..., TestClient], path: str
) -> None:
    client = make_client(fault=Fault("fail-after-ready", 0.0))

    response = client.get(path)

    assert response.status_code == 500
    assert response.json() == {"detail": "fault injected: fail-after-ready"}


def test_fault_fail_after_ready_serves_normally_until_due(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(fault=Fault("fail-after-ready", 3600.0))

    assert client.get("/readyz").status_code == 200
    assert client.post("/api/notes", json={"text": "still fine"}).status_code == 201


def test_fault_fail_ratio_fails_exactly_that_share_evenly_spread(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(fault=Fault("fail-ratio", 0.2))
    statuses = []

    for k in range(1, 1001):
        statuses.append(client.get("/api/version").status_code)
        if k % 10 == 0:
            assert client.get("/readyz").status_code == 200

    failed = [k for k, status in enumerate(statuses, start=1) if status == 500]
    assert failed == list(range(5, 1001, 5))
    assert statuses.count(200) == 800


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_fault_fail_ratio_spares_the_probes(
    make_client: Callable[..., TestClient], path: str
) -> None:
    client = make_client(fault=Fault("fail-ratio", 1.0))

    failed = client.get("/api/notes")

    assert failed.status_code == 500
    assert failed.json() == {"detail": "fault injected: fail-ratio"}
    assert [client.get(path).status_code for _ in range(5)] == [200] * 5


@pytest.mark.parametrize("ratio", [0.2, 0.29, 0.001, 0.333, 0.75, 1.0])
def test_failure_schedule_fails_floor_of_n_times_the_ratio(ratio: float) -> None:
    schedule = FailureSchedule(ratio)

    fails = [schedule.next_fails() for _ in range(10_000)]

    exact = Fraction(str(ratio))
    failed_so_far = list(itertools.accumulate(fails))
    assert failed_so_far == [math.floor(n * exact) for n in range(1, 10_001)]


def test_failure_schedule_spreads_failures_evenly() -> None:
    schedule = FailureSchedule(0.29)

    fails = [schedule.next_fails() for _ in range(1000)]

    # Any 100 requests in a row hold 29 failures, not a burst.
    assert {sum(fails[start : start + 100]) for start in range(901)} == {29}


def test_failure_schedule_counts_every_request_once_across_threads() -> None:
    schedule = FailureSchedule(0.5)
    start = threading.Barrier(8)

    def count_failures() -> int:
        start.wait()
        return sum(schedule.next_fails() for _ in range(2000))

    with ThreadPoolExecutor(max_workers=8) as pool:
        total = sum(pool.map(lambda _: count_failures(), range(8)))

    assert total == 8000


def _timed_get(client: TestClient, path: str) -> tuple[int, float]:
    began = time.monotonic()
    status = client.get(path).status_code
    return status, time.monotonic() - began


@pytest.mark.parametrize("path", ["/api/version", "/api/notes"])
def test_fault_slow_delays_ordinary_requests(
    make_client: Callable[..., TestClient], path: str
) -> None:
    client = make_client(fault=Fault("slow", 200.0))

    status, seconds = _timed_get(client, path)

    assert status == 200
    assert seconds >= 0.19


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_fault_slow_does_not_delay_the_probes(
    make_client: Callable[..., TestClient], path: str
) -> None:
    client = make_client(fault=Fault("slow", 200.0))
    client.get(path)  # the first call pays one-off costs that are no part of the fault

    status, seconds = _timed_get(client, path)

    assert status == 200
    assert seconds < 0.15


def test_fault_slow_does_not_block_other_requests_while_it_waits(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(fault=Fault("slow", 1000.0))
    client.get("/healthz")

    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(_timed_get, client, "/api/version")
        time.sleep(0.1)  # let the slow request reach its sleep
        probe_status, probe_seconds = _timed_get(client, "/healthz")
        assert not slow.done()

    assert probe_status == 200
    assert probe_seconds < 0.5
    assert slow.result() >= (200, 0.99)
