"""Requests to a running canary rollout: abort or promote, left in the state volume.

The process walking a rollout's steps holds the environment's lock, so no other command may
change its routers; it reads these requests between samples instead (``conveyor.canary``),
and answers within one ``sample``. Requests are never deleted: each names its rollout's record,
so an old one cannot touch a newer rollout, and each is in the audit trail too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from conveyor import ledger as ledger_mod
from conveyor.ledger import ReleaseRecord
from conveyor.session import Session

ABORT, PROMOTE = "abort", "promote"
ACTIONS = (ABORT, PROMOTE)

REQUESTS_DIR = "rollout"


def write_request(session: Session, record: ReleaseRecord, action: str) -> None:
    """Ask the rollout of ``record`` to abort or promote (answered between samples)."""
    write_request_for(session, record.id, action, started=record.started)
    session.ledger.audit(f"rollout-{action}-requested", record=record.id, version=record.version)


def write_request_for(session: Session, target: str, action: str, *, started: float) -> None:
    """Ask whatever runs as ``target`` (a rollout's record, a flag ramp's id) to ``action``."""
    by = ledger_mod.who()
    payload = {"record": target, "action": action, "by": by, "at": max(time.time(), started)}
    name = f"{time.time_ns():020d}-{action}.json"
    session.store.write(f"{REQUESTS_DIR}/{name}", json.dumps(payload).encode())


def request_poller(session: Session, record: ReleaseRecord) -> Callable[[], tuple[str, str] | None]:
    """For the stepper: a function returning the first request naming ``record``, if any."""
    return poller_for(session, record.id, record.started)


def poller_for(
    session: Session, target: str, started: float
) -> Callable[[], tuple[str, str] | None]:
    """A function returning the first request naming ``target`` made since ``started``."""

    def poll() -> tuple[str, str] | None:
        for _path, raw in sorted(session.store.read_tree(REQUESTS_DIR).items()):
            try:
                payload = json.loads(raw)
            except ValueError:
                continue
            fresh = float(payload.get("at") or 0) >= started
            if payload.get("record") == target and payload.get("action") in ACTIONS and fresh:
                return str(payload["action"]), str(payload.get("by") or "?")
        return None

    return poll
