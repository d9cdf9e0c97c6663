from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

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
