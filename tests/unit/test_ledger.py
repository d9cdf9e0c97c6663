"""The ledger's event folding, sealing and queries, on an in-memory store."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest

from conveyor import ledger, terms
from conveyor.errors import ConfigError
from conveyor.ledger import Ledger, ReleaseRecord


class MemoryStore:
    """Stands in for the state volume: the same write/read_tree surface, in a dict."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def write(self, path: str, data: bytes) -> None:
        self.files[path] = data

    def write_using_reserve(self, path: str, data: bytes) -> None:
        self.files[path] = data

    def write_setting_reserve(self, path: str, data: bytes) -> None:
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
    r = record("r0001", "1.0", terms.RUNNING, "sha256:a", 1.0)
    book.write(r)
    r.outcome = terms.SUCCEEDED
    r.ended = 5.0
    book.write(r)
    [only] = book.records()
    assert only.outcome == terms.SUCCEEDED and only.duration == 4.0
    assert ledger.next_id(book.records()) == "r0002"


def test_a_torn_or_tampered_event_is_ignored_and_reported() -> None:
    book, store = make()
    r = record("r0001", "1.0", terms.SUCCEEDED, "sha256:a", 1.0)
    book.write(r)
    r2 = record("r0002", "2.0", terms.RUNNING, "sha256:b", 2.0)
    book.write(r2)
    [path2] = [p for p in store.files if "/r0002/" in p]
    store.files[path2] = store.files[path2][: len(store.files[path2]) // 2]  # torn write
    [path1] = [p for p in store.files if "/r0001/" in p]
    store.files[path1] = store.files[path1].replace(b"tester", b"mallory")  # checksum breaks
    assert book.records() == []
    assert sorted(book.unreadable) == sorted([path1, path2])


def test_live_and_previous_skip_failures_and_identical_images() -> None:
    records = [
        record("r0001", "1.0", terms.SUCCEEDED, "sha256:a", 1),
        record("r0002", "2.0", terms.SUCCEEDED, "sha256:b", 2),
        record("r0003", "2.0", terms.SUCCEEDED, "sha256:b", 3),  # redeploy of the same images
        record("r0004", "3.0", terms.FAILED, "sha256:c", 4),
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


# --- the trust boundary: an HMAC key over every event ---------------------------------------

KEY = "k" * 32


def forge(store: MemoryStore, path: str, edit: Any, *, drop_hmac: bool = False) -> None:
    """A hostile edit: change the payload and recompute the checksum, as anyone with access
    to the engine can (only the key is out of their reach)."""
    sealed = json.loads(store.files[path])
    edit(sealed["record"])
    body = json.dumps(sealed["record"], sort_keys=True, separators=(",", ":")).encode()
    sealed["sha256"] = hashlib.sha256(body).hexdigest()
    if drop_hmac:
        sealed.pop("hmac", None)
    store.files[path] = json.dumps(sealed).encode()


def test_without_a_key_a_recomputed_checksum_passes_which_is_why_the_boundary_is_the_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ledger.LEDGER_KEY_ENV, raising=False)
    book, store = make()
    book.write(record("r0001", "1.0", terms.SUCCEEDED, "sha256:a", 1.0))
    [path] = store.files
    forge(store, path, lambda r: r.update(who="mallory"))
    [only] = book.records()
    assert only.who == "mallory" and book.forged == [] and book.unreadable == []


def test_with_a_key_a_forged_event_is_rejected_and_reported_and_the_genuine_one_stands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ledger.LEDGER_KEY_ENV, KEY)
    book, store = make()
    r = record("r0001", "1.0", terms.RUNNING, "sha256:a", 1.0)
    book.write(r)
    r.outcome, r.ended = terms.FAILED, 2.0
    book.write(r)
    newest = max(store.files)
    assert b'"hmac"' in store.files[newest]
    forge(store, newest, lambda rec: rec.update(outcome=terms.SUCCEEDED))
    [only] = book.records()
    assert only.outcome == terms.RUNNING  # the forged "succeeded" is not believed
    assert book.forged == [newest] and book.unreadable == []
    [line] = book.integrity()
    assert line.startswith("FORGED ledger events") and newest in line


def test_a_different_key_makes_every_event_forged_not_silently_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ledger.LEDGER_KEY_ENV, KEY)
    book, store = make()
    book.write(record("r0001", "1.0", terms.SUCCEEDED, "sha256:a", 1.0))
    book.audit("approval", approval={"key": "abc"})
    monkeypatch.setenv(ledger.LEDGER_KEY_ENV, "x" * 32)
    assert book.records() == [] and book.audit_events() == []
    assert sorted(book.forged) == sorted(store.files)


def test_turning_a_key_on_shows_older_events_as_unsigned_not_forged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ledger.LEDGER_KEY_ENV, raising=False)
    book, store = make()
    book.write(record("r0001", "1.0", terms.SUCCEEDED, "sha256:a", time.time() - 60))
    book.audit("unlock", holder={"owner": "bob"})
    old = sorted(store.files)
    monkeypatch.setenv(ledger.LEDGER_KEY_ENV, KEY)
    book.write(record("r0002", "2.0", terms.SUCCEEDED, "sha256:b", time.time()))
    book.audit("approval", approval={"key": "abc"})
    assert [r.id for r in book.records()] == ["r0001", "r0002"]
    assert [e["kind"] for e in book.audit_events()] == ["unlock", "approval"]
    assert book.forged == [] and sorted(book.unsigned) == old
    assert [e["kind"] for e in book.audit_events(signed_only=True)] == ["approval"]
    assert book.integrity() == [
        f"unsigned ledger events (written before {ledger.LEDGER_KEY_ENV} was set; trusted by "
        "checksum only): 2"
    ]


def test_an_unsigned_event_written_after_signing_began_is_forged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ledger.LEDGER_KEY_ENV, KEY)
    book, store = make()
    book.audit("unlock", holder={"owner": "bob"})
    book.audit("approval", approval={"key": "abc", "by": "alice"})
    approval = max(p for p in store.files if p.endswith("-approval.json"))
    forge(store, approval, lambda rec: rec["approval"].update(by="mallory"), drop_hmac=True)
    assert [e["kind"] for e in book.audit_events()] == ["unlock"]
    assert book.forged == [approval] and book.unsigned == []


def test_an_unsigned_event_back_dated_by_its_name_is_still_judged_by_its_payload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ledger.LEDGER_KEY_ENV, KEY)
    book, store = make()
    book.audit("unlock", holder={"owner": "bob"})
    monkeypatch.delenv(ledger.LEDGER_KEY_ENV)
    sealed = ledger._seal({"kind": "approval", "at": time.time() + 3600, "who": "mallory"})
    store.files[f"{ledger.AUDIT_DIR}/{1:020d}-abcdef-approval.json"] = sealed  # named "1970"
    monkeypatch.setenv(ledger.LEDGER_KEY_ENV, KEY)
    assert [e["kind"] for e in book.audit_events()] == ["unlock"]
    assert book.forged == [f"{ledger.AUDIT_DIR}/{1:020d}-abcdef-approval.json"]


def test_signed_events_read_without_the_key_are_accepted_but_said_to_be_unchecked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ledger.LEDGER_KEY_ENV, KEY)
    book, _ = make()
    book.write(record("r0001", "1.0", terms.SUCCEEDED, "sha256:a", 1.0))
    monkeypatch.delenv(ledger.LEDGER_KEY_ENV)
    assert [r.id for r in book.records()] == ["r0001"]
    assert len(book.unchecked) == 1 and "not checked" in book.integrity()[0]


def test_a_short_key_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ledger.LEDGER_KEY_ENV, "hunter2")
    book, _ = make()
    with pytest.raises(ConfigError) as info:
        book.write(record("r0001", "1.0", terms.SUCCEEDED, "sha256:a", 1.0))
    assert "shorter than 16" in str(info.value) and "hunter2" not in str(info.value)


def test_who_is_githubs_actor_in_ci_then_conveyor_actor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_ACTOR", raising=False)
    monkeypatch.setenv("CONVEYOR_ACTOR", "alice@example.com")
    assert ledger.who() == "alice@example.com"
    monkeypatch.setenv("GITHUB_ACTOR", "octocat")
    assert ledger.who() == "octocat"
    monkeypatch.delenv("GITHUB_ACTOR")
    monkeypatch.setenv("CONVEYOR_ACTOR", " ")
    assert ledger.who() not in {"", " "}
