"""The release ledger: who deployed what, when, how long each phase took, and how it ended.

Append-only events, one small file each, written with a single upload and sealed with a
checksum. A record's state is its newest valid event, so a crash mid-write can at worst leave
one unreadable event, which is reported and ignored: the ledger is never half-written.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import secrets
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from conveyor.state import StateStore

LEDGER_DIR = "ledger"
AUDIT_DIR = "audit"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
INTERRUPTED = "interrupted"


def who() -> str:
    """The person (or CI actor) behind this run."""
    actor = os.environ.get("GITHUB_ACTOR")
    if actor:
        return actor
    try:
        name = subprocess.run(
            ["git", "config", "user.email"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        name = ""
    return name or getpass.getuser()


@dataclass
class ReleaseRecord:
    id: str
    environment: str
    kind: str
    version: str
    commit: str
    services: dict[str, dict[str, Any]]
    who: str
    started: float
    dirty: bool = False
    hosts: list[str] = field(default_factory=list)
    ended: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    outcome: str = RUNNING
    failed_phase: str | None = None
    reason: str | None = None
    rollback_of: str | None = None
    previous: str | None = None
    scan: dict[str, Any] | None = None
    approval: dict[str, Any] | None = None
    commit_time: int | None = None
    logs: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    def digests(self) -> dict[str, str]:
        return {name: str(svc.get("image_id", "")) for name, svc in self.services.items()}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReleaseRecord:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def _seal(payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    checksum = hashlib.sha256(body.encode()).hexdigest()
    return json.dumps({"sha256": checksum, "record": payload}, sort_keys=True).encode()


def _unseal(raw: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
        payload = data["record"]
        body = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    except (ValueError, KeyError, TypeError):
        return None
    if hashlib.sha256(body.encode()).hexdigest() != data.get("sha256"):
        return None
    return payload if isinstance(payload, dict) else None


class Ledger:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.unreadable: list[str] = []

    def write(self, record: ReleaseRecord) -> None:
        # Nanosecond stamp plus randomness: events never overwrite each other.
        name = f"{time.time_ns():020d}-{secrets.token_hex(3)}-{record.outcome}.json"
        self.store.write(f"{LEDGER_DIR}/{record.id}/{name}", _seal(record.as_dict()))

    def records(self) -> list[ReleaseRecord]:
        """Every release, oldest first, each in its newest valid state."""
        latest: dict[str, tuple[str, dict[str, Any]]] = {}
        self.unreadable = []
        for path, raw in self.store.read_tree(LEDGER_DIR).items():
            parts = path.split("/")
            if len(parts) != 3:
                continue
            payload = _unseal(raw)
            if payload is None:
                self.unreadable.append(path)
                continue
            release, event = parts[1], parts[2]
            if release not in latest or event > latest[release][0]:
                latest[release] = (event, payload)
        records = [ReleaseRecord.from_dict(payload) for _event, payload in latest.values()]
        return sorted(records, key=lambda r: (r.started, r.id))

    def next_id(self) -> str:
        return next_id(self.records())

    def audit(self, kind: str, **details: Any) -> None:
        payload = {"kind": kind, "at": time.time(), "who": who(), **details}
        name = f"{time.time_ns():020d}-{secrets.token_hex(3)}-{kind}.json"
        self.store.write(f"{AUDIT_DIR}/{name}", _seal(payload))

    def audit_events(self) -> list[dict[str, Any]]:
        events = []
        for path, raw in sorted(self.store.read_tree(AUDIT_DIR).items()):
            payload = _unseal(raw)
            if payload is None:
                self.unreadable.append(path)
            else:
                events.append(payload)
        return events

    def save_log(self, release: str, name: str, text: str) -> str:
        path = f"logs/{release}/{name}.log"
        self.store.write(path, text.encode(errors="replace"))
        return path


def next_id(records: list[ReleaseRecord]) -> str:
    numbers = [int(r.id[1:]) for r in records if r.id[1:].isdigit()]
    return f"r{max(numbers, default=0) + 1:04d}"


def current_live(records: list[ReleaseRecord]) -> ReleaseRecord | None:
    """The newest release that completed successfully: what should be serving."""
    done = [r for r in records if r.outcome == SUCCEEDED]
    return done[-1] if done else None


def previous_live(records: list[ReleaseRecord]) -> ReleaseRecord | None:
    """The newest successful release before the live one with different images."""
    live = current_live(records)
    if live is None:
        return None
    for record in reversed([r for r in records if r.outcome == SUCCEEDED]):
        if record.id != live.id and record.digests() != live.digests():
            return record
    return None
