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
    by = ledger_mod.who()
    payload = {"record": record.id, "action": action, "by": by, "at": time.time()}
    name = f"{time.time_ns():020d}-{action}.json"
    session.store.write(f"{REQUESTS_DIR}/{name}", json.dumps(payload).encode())
    session.ledger.audit(f"rollout-{action}-requested", record=record.id, version=record.version)


def request_poller(session: Session, record: ReleaseRecord) -> Callable[[], tuple[str, str] | None]:
    """For the stepper: a function returning the first request naming ``record``, if any."""

    def poll() -> tuple[str, str] | None:
        for _path, raw in sorted(session.store.read_tree(REQUESTS_DIR).items()):
            try:
                payload = json.loads(raw)
            except ValueError:
                continue
            fresh = float(payload.get("at") or 0) >= record.started
            if payload.get("record") == record.id and payload.get("action") in ACTIONS and fresh:
                return str(payload["action"]), str(payload.get("by") or "?")
        return None

    return poll
