"""The ledger's event folding, sealing and queries, on an in-memory store."""

from __future__ import annotations

from typing import Any

from conveyor import ledger
from conveyor.ledger import Ledger, ReleaseRecord


class MemoryStore:
    """Stands in for the state volume: the same write/read_tree surface, in a dict."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def write(self, path: str, data: bytes) -> None:
        self.files[path] = data

    def read_tree(self, path: str) -> dict[str, bytes]:
        return {k: v for k, v in self.files.items() if k.startswith(path + "/")}


def record(rid: str, version: str, outcome: str, image: str, started: float) -> ReleaseRecord:
    return ReleaseRecord(
        id=rid,
        environment="staging",
        kind="deploy",
        version=version,
        commit="c" * 40,
        services={"api": {"image_id": image}},
        who="tester",
        started=started,
        outcome=outcome,
    )


def make() -> tuple[Ledger, MemoryStore]:
    store = MemoryStore()
    return Ledger(store), store  # type: ignore[arg-type]


def test_the_newest_event_of_a_release_wins() -> None:
    book, _ = make()
    r = record("r0001", "1.0", ledger.RUNNING, "sha256:a", 1.0)
    book.write(r)
    r.outcome = ledger.SUCCEEDED
    r.ended = 5.0
    book.write(r)
    [only] = book.records()
    assert only.outcome == ledger.SUCCEEDED and only.duration == 4.0
    assert book.next_id() == "r0002"


def test_a_torn_or_tampered_event_is_ignored_and_reported() -> None:
    book, store = make()
    r = record("r0001", "1.0", ledger.SUCCEEDED, "sha256:a", 1.0)
    book.write(r)
    r2 = record("r0002", "2.0", ledger.RUNNING, "sha256:b", 2.0)
    book.write(r2)
    [path2] = [p for p in store.files if "/r0002/" in p]
    store.files[path2] = store.files[path2][: len(store.files[path2]) // 2]  # torn write
    [path1] = [p for p in store.files if "/r0001/" in p]
    store.files[path1] = store.files[path1].replace(b"tester", b"mallory")  # checksum breaks
    assert book.records() == []
    assert sorted(book.unreadable) == sorted([path1, path2])


def test_live_and_previous_skip_failures_and_identical_images() -> None:
    records = [
        record("r0001", "1.0", ledger.SUCCEEDED, "sha256:a", 1),
        record("r0002", "2.0", ledger.SUCCEEDED, "sha256:b", 2),
        record("r0003", "2.0", ledger.SUCCEEDED, "sha256:b", 3),  # redeploy of the same images
        record("r0004", "3.0", ledger.FAILED, "sha256:c", 4),
    ]
    live = ledger.current_live(records)
    previous = ledger.previous_live(records)
    assert live is not None and live.id == "r0003"
    assert previous is not None and previous.id == "r0001"


def test_audit_events_round_trip() -> None:
    book, _ = make()
    book.audit("unlock", holder={"owner": "bob"})
    events: list[dict[str, Any]] = book.audit_events()
    assert events[0]["kind"] == "unlock" and events[0]["holder"] == {"owner": "bob"}
