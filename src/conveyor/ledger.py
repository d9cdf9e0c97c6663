"""The release ledger: who deployed what, when, how long each phase took, and how it ended.

Append-only events, one small file each, written with a single upload and sealed with a
checksum. A record's state is its newest valid event, so a crash mid-write can at worst leave
one unreadable event, which is reported and ignored: the ledger is never half-written.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import time
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigError, StateUnwritable
from conveyor.terms import FAILED, ROLLBACK, RUNNING, SUCCEEDED, RecordKind, RecordOutcome

if TYPE_CHECKING:
    # The engine side: a ledger is read and written through it, but its records and lineage
    # are plain data, so this module imports without the docker SDK.
    from conveyor.state import StateStore

LEDGER_DIR = "ledger"
AUDIT_DIR = "audit"


def who() -> str:
    """The person (or CI actor) behind this run: GitHub's actor in CI, else CONVEYOR_ACTOR,
    else git's user.email, else the login name. Outside CI this is honour-based: anyone can
    set these, so a local approval proves only what the approver says about themselves."""
    for variable in ("GITHUB_ACTOR", "CONVEYOR_ACTOR"):
        actor = os.environ.get(variable, "").strip()
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
    kind: RecordKind
    version: str
    commit: str
    services: dict[str, dict[str, Any]]
    who: str
    started: float
    dirty: bool = False
    hosts: list[str] = field(default_factory=list)
    ended: float | None = None
    # Seconds per phase (terms.Phase); read back from JSON, so plain strings.
    phases: dict[str, float] = field(default_factory=dict)
    outcome: RecordOutcome = RUNNING
    failed_phase: str | None = None
    reason: str | None = None
    rollback_of: str | None = None
    previous: str | None = None
    scan: dict[str, Any] | None = None
    approval: dict[str, Any] | None = None
    commit_time: int | None = None
    logs: list[str] = field(default_factory=list)
    # The release a rollback returned to (a record id); None for a deploy.
    rollback_to: str | None = None
    # The containers that serve this record, per host and service. A rollback that restarts
    # kept containers names the ones it restarted, so kept containers always belong to records.
    containers: dict[str, dict[str, str]] = field(default_factory=dict)
    # Hosts whose router was (about to be) switched to this record: written before the switch.
    switched: list[str] = field(default_factory=list)
    # Every host passed its verify window: the release is good even if drain was cut short.
    verified: bool = False
    # Per service with migrations: the schema before and after, this release's chain of
    # revisions with their kinds, what ran (and how long), the backup taken first, and the
    # contract revisions left pending (see conveyor.schemaphase).
    schema: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The previous release left running out of rotation after this deploy (``keep_warm``):
    # {"record", "version", "until" (epoch), "containers": {host: {service: name}}}.
    warm: dict[str, Any] = field(default_factory=dict)
    # How an automatic rollback went back, e.g. "instant: switched back to the running
    # previous color in 4 ms, no container started".
    undo: str | None = None
    # Under strategy "canary": {"steps", "interval", "percent" (the canary's share now),
    # "state" (starting, stepping, promoting, promoted, aborted), "windows" (every verdict
    # with its numbers), "reason", "promoted_by"}.
    canary: dict[str, Any] = field(default_factory=dict)
    # With feature flags: {"definitions": {image: flagd definitions built with the release},
    # "state": {image: the flag file this deploy wrote, the environment's percentages kept}}.
    flags: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    @property
    def is_verified(self) -> bool:
        """Passed verify on every host: succeeded, or verified before its process died."""
        return self.outcome == SUCCEEDED or (self.verified and self.outcome != FAILED)

    def warm_containers(self, host: str) -> dict[str, str]:
        """The previous release's containers this deploy kept warm on ``host``, by service
        (for a host it does not list, see :func:`_for_host`)."""
        by_host = self.warm.get("containers") if isinstance(self.warm, dict) else None
        containers = _for_host(by_host, host) if isinstance(by_host, dict) else None
        if not isinstance(containers, dict):
            return {}
        return {str(k): str(v) for k, v in containers.items()}

    def container(self, host: str, service: str) -> str | None:
        """``host``'s container of ``service`` in this release (see :func:`_for_host`)."""
        containers = _for_host(self.containers, host)
        return containers.get(service) if isinstance(containers, dict) else None

    def canary_summary(self) -> str:
        """``25% pass, 50% pass → promoted`` for a canary rollout; empty otherwise."""
        canary: Any = self.canary  # read back from JSON: a hostile event may hold anything
        if not isinstance(canary, dict) or not canary:
            return ""
        windows = [w for w in canary.get("windows") or [] if isinstance(w, dict)]
        steps = ", ".join(
            f"{w.get('percent')}% {w.get('outcome')}"
            + (f" [{w.get('rule')}]" if w.get("outcome") != "pass" else "")
            for w in windows
        )
        state = canary.get("state")
        return f"{steps} → {state}" if steps else str(state or "")

    def migration_summary(self) -> str:
        """``api: b → c ran c (expand); backup r0004-api`` when this record changed a schema."""
        parts = []
        for service, raw in self.schema.items():
            entry: Any = raw  # read back from JSON: a hostile event may hold anything here
            if not isinstance(entry, dict):
                continue  # shown as nothing, never a crash
            restored = entry.get("restored")
            if isinstance(restored, dict):
                parts.append(f"{service}: restored backup {restored.get('id')}")
                continue
            ran = [r for r in entry.get("ran") or [] if isinstance(r, dict)]
            if not ran:
                continue
            revisions = ", ".join(f"{r.get('revision')} ({r.get('kind')})" for r in ran)
            backup = entry.get("backup")
            backup = backup.get("id") if isinstance(backup, dict) else None
            parts.append(
                f"{service}: {entry.get('before')} → {entry.get('after')} ran {revisions}"
                + (f"; backup {backup}" if backup else "")
            )
        return "; ".join(parts)

    def digests(self) -> dict[str, str]:
        return {name: str(svc.get("image_id", "")) for name, svc in self.services.items()}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReleaseRecord:
        """The record an event holds; ValueError when it is none (a required key missing, a
        value of the wrong JSON type), so a hostile event is reported rather than a traceback."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        wrong = sorted(k for k, v in known.items() if not _fits(v, _RECORD_TYPES[k]))
        required = [f.name for f in fields(cls) if MISSING is f.default is f.default_factory]
        missing = [name for name in required if name not in known]
        if wrong or missing:
            raise ValueError(f"not a release record (wrong type: {wrong}, missing: {missing})")
        return cls(**known)


_RECORD_TYPES = typing.get_type_hints(ReleaseRecord)


def _for_host(by_host: dict[str, Any], host: str) -> Any:
    """``by_host[host]``; for a host the record does not list, the first listed host's entry.

    A swarm node that joined after a release runs that release's tasks too (Swarm schedules a
    global service everywhere), and a color's service has one name on every node: without this
    the node would take the release's warm service for a leftover and remove it, for every
    node. On hosts a container of the record can exist only where the record ran, so the name
    matches nothing on a host added since.
    """
    if host in by_host:
        return by_host[host]
    return next(iter(by_host.values()), None)


def _fits(value: Any, hint: Any) -> bool:
    """Whether the JSON ``value`` is of the type ``hint`` (a ReleaseRecord field's) names."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (types.UnionType, typing.Union):
        return any(_fits(value, arg) for arg in args)
    if origin is typing.Literal:  # an outcome a newer conveyor wrote still reads
        return type(value) is str
    if origin is dict:
        return type(value) is dict and all(_fits(v, args[1]) for v in value.values())
    if origin is list:
        return type(value) is list and all(_fits(v, args[0]) for v in value)
    if hint is float:  # a time or a duration: finite, and within what a float holds
        return type(value) in (int, float) and -1e18 < value < 1e18
    return type(value) is hint  # str, int, bool, None: exactly as JSON gives them


# --- sealing: a checksum always, an HMAC when CONVEYOR_LEDGER_KEY is set ------------------
#
# The checksum catches torn writes and accidental edits; anyone who can reach the engine can
# recompute it. With a key, each event also carries HMAC-SHA256(key, body): an event whose HMAC
# does not match is *forged* — rejected and reported, never skipped silently. Events written
# before the key was turned on carry no HMAC: they stay readable as *unsigned*, but only if
# they predate the first signed event; an unsigned event written after signing began is forged.

LEDGER_KEY_ENV = "CONVEYOR_LEDGER_KEY"
MIN_KEY_LENGTH = 16
SIGNED = "signed"  # HMAC checked and matching
UNSIGNED = "unsigned"  # no HMAC, key set: written before the key (or forged, see above)
UNCHECKED = "unchecked"  # HMAC present but no key here to check it: checksum only
CHECKSUM = "checksum"  # no HMAC, no key: checksum only (the default)
FORGED = "forged"  # HMAC present and wrong
UNREADABLE = "unreadable"  # torn, not JSON, or the checksum does not match
CLOCK_SLACK = 300.0  # seconds another machine's clock may differ when judging unsigned events


def ledger_key() -> bytes | None:
    """The HMAC key from CONVEYOR_LEDGER_KEY, or None; a short key is refused, not weakened."""
    raw = os.environ.get(LEDGER_KEY_ENV, "")
    if not raw:
        return None
    if len(raw) < MIN_KEY_LENGTH:
        raise ConfigError(
            f"{LEDGER_KEY_ENV} is shorter than {MIN_KEY_LENGTH} characters — use a random "
            f"secret, e.g. the output of: python3 -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return raw.encode()


def signature(key: bytes, body: bytes) -> str:
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def _seal(payload: dict[str, Any]) -> bytes:
    body = _canonical(payload)
    sealed: dict[str, Any] = {"sha256": hashlib.sha256(body).hexdigest(), "record": payload}
    key = ledger_key()
    if key is not None:
        sealed["hmac"] = signature(key, body)
    return json.dumps(sealed, sort_keys=True).encode()


def _unseal(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """(payload, seal): the payload is None when the event is unreadable or forged."""
    try:
        data = json.loads(raw)
        payload = data["record"]
        body = _canonical(payload)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None, UNREADABLE
    if not isinstance(payload, dict) or hashlib.sha256(body).hexdigest() != data.get("sha256"):
        return None, UNREADABLE
    mac = data.get("hmac")
    key = ledger_key()
    if key is None:
        return payload, (CHECKSUM if mac is None else UNCHECKED)
    if mac is None:
        return payload, UNSIGNED
    if not isinstance(mac, str) or not hmac.compare_digest(mac, signature(key, body)):
        return None, FORGED
    return payload, SIGNED


def _stamp(path: str) -> str:
    """The write-time stamp that starts an event's file name (nanoseconds, zero-padded)."""
    return path.rsplit("/", 1)[-1].split("-", 1)[0]


def _by_stamp(item: tuple[str, bytes]) -> tuple[str, str]:
    return _stamp(item[0]), item[0]


def _event_time(payload: dict[str, Any]) -> float:
    """The newest time an event's payload claims (an audit event's or a record's)."""
    times = [payload.get(k) for k in ("at", "started", "ended")]
    # Clamped: an unsigned event may claim any number, even one no float holds.
    stamps = (float(max(-1e18, min(t, 1e18))) for t in times if isinstance(t, int | float))
    return max(stamps, default=0.0)


class Ledger:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.unreadable: list[str] = []
        # With CONVEYOR_LEDGER_KEY set: events rejected as forged, and events accepted though
        # unsigned (written before the key). Without it: signed events nobody could check.
        self.forged: list[str] = []
        self.unsigned: list[str] = []
        self.unchecked: list[str] = []

    def write(
        self, record: ReleaseRecord, *, set_reserve: bool = False, use_reserve: bool = False
    ) -> None:
        """Append one event of ``record``: it appears whole or not at all. A full or read-only
        state volume raises ``StateUnwritable``. ``set_reserve`` (a run's first record) sets
        aside room on the volume to record how the run ends; ``use_reserve`` (for recording
        what already happened: a switch, a verify, how a run ended) spends it if need be."""
        # Nanosecond stamp plus randomness: events never overwrite each other.
        name = f"{time.time_ns():020d}-{secrets.token_hex(3)}-{record.outcome}.json"
        path = f"{LEDGER_DIR}/{record.id}/{name}"
        if set_reserve:
            self.store.write_setting_reserve(path, _seal(record.as_dict()))
        elif use_reserve:
            self.store.write_using_reserve(path, _seal(record.as_dict()))
        else:
            self.store.write(path, _seal(record.as_dict()))

    def records(self) -> list[ReleaseRecord]:
        """Every release, oldest first, each in its newest valid state."""
        latest: dict[str, tuple[str, ReleaseRecord]] = {}
        tree = {
            path: raw
            for path, raw in self.store.read_tree(LEDGER_DIR).items()
            if len(path.split("/")) == 3
        }
        for path, payload in self._verified(LEDGER_DIR, tree):
            try:
                record = ReleaseRecord.from_dict(payload)
            except ValueError:  # sealed, but no record: an older event of it still stands
                self.unreadable.append(path)
                continue
            _dir, release, event = path.split("/")
            if release not in latest or event > latest[release][0]:
                latest[release] = (event, record)
        records = [record for _event, record in latest.values()]
        return sorted(records, key=lambda r: (r.started, r.id))

    def audit(self, kind: str, **details: Any) -> None:
        payload = {"kind": kind, "at": time.time(), "who": who(), **details}
        name = f"{time.time_ns():020d}-{secrets.token_hex(3)}-{kind}.json"
        self.store.write(f"{AUDIT_DIR}/{name}", _seal(payload))

    def audit_events(self, *, signed_only: bool = False) -> list[dict[str, Any]]:
        """The audit trail, oldest first. ``signed_only`` (with a key set) keeps only events
        whose HMAC was checked: what a gate should trust."""
        verified = self._verified(AUDIT_DIR, self.store.read_tree(AUDIT_DIR))
        if signed_only and ledger_key() is not None:
            return [payload for path, payload in verified if path not in self.unsigned]
        return [payload for _path, payload in verified]

    def _verified(self, folder: str, tree: dict[str, bytes]) -> list[tuple[str, dict[str, Any]]]:
        """The readable, genuine events of one folder, oldest first; the rest are reported in
        ``unreadable`` and ``forged`` (each list keeps only this folder's latest reading)."""
        for found in (self.unreadable, self.forged, self.unsigned, self.unchecked):
            found[:] = [p for p in found if not p.startswith(folder + "/")]
        opened = [(path, *_unseal(raw)) for path, raw in sorted(tree.items(), key=_by_stamp)]
        # Signing began with the first signed event: an unsigned event written after it is not
        # genuine, whether by its file name's stamp or by the time its payload claims (with
        # some slack for another machine's clock).
        first = next(((p, pl) for p, pl, seal in opened if seal == SIGNED and pl), None)
        kept = []
        for path, payload, seal in opened:
            if payload is None:
                (self.forged if seal == FORGED else self.unreadable).append(path)
                continue
            if (
                seal == UNSIGNED
                and first is not None
                and (
                    _stamp(path) > _stamp(first[0])
                    or _event_time(payload) > _event_time(first[1]) + CLOCK_SLACK
                )
            ):
                self.forged.append(path)
                continue
            if seal == UNSIGNED:
                self.unsigned.append(path)
            elif seal == UNCHECKED:
                self.unchecked.append(path)
            kept.append((path, payload))
        return kept

    def integrity(self) -> list[str]:
        """Lines for ``status``: what the last reading rejected or could not vouch for."""
        lines = []
        if self.forged:
            lines.append(
                f"FORGED ledger events (rejected — their HMAC does not match "
                f"{LEDGER_KEY_ENV}, or they are unsigned but newer than signing): "
                f"{', '.join(self.forged)} — someone who can reach the engine wrote them; "
                f"find out who, then move them out of the state volume"
            )
        if self.unsigned:
            lines.append(
                f"unsigned ledger events (written before {LEDGER_KEY_ENV} was set; trusted by "
                f"checksum only): {len(self.unsigned)}"
            )
        if self.unchecked:
            lines.append(
                f"{len(self.unchecked)} ledger events are signed, but {LEDGER_KEY_ENV} is not set "
                f"here, so their signatures were not checked"
            )
        return lines

    def save_log(self, release: str, name: str, text: str) -> str | None:
        """A failed run's container log beside its record; None when the volume refuses it
        (full, read-only): the run's own copy under .conveyor/logs stands, and the record
        that says how the run ended matters more than its logs."""
        path = f"logs/{release}/{name}.log"
        try:
            self.store.write(path, text.encode(errors="replace"))
        except StateUnwritable:
            return None
        return path


def next_id(records: list[ReleaseRecord]) -> str:
    numbers = [int(r.id[1:]) for r in records if r.id[1:].isdigit()]
    return f"r{max(numbers, default=0) + 1:04d}"


def lineage(records: list[ReleaseRecord]) -> tuple[list[ReleaseRecord], set[str]]:
    """The verified releases in effect, oldest first (the last is live), and the ids of
    records a later rollback undid.

    A deploy pushes its record. A rollback to a record still in effect cuts everything after
    it (those are rolled back) and takes its place; a rollback to a record no longer in effect
    (undoing a rollback) is pushed like a deploy. Failed, interrupted and running records that
    never passed verify are never in effect.
    """
    stack: list[ReleaseRecord] = []
    undone: set[str] = set()
    origin: dict[str, str] = {}
    for record in sorted(records, key=lambda r: (r.started, r.id)):
        origin[record.id] = origin.get(record.rollback_to or "", record.rollback_to or record.id)
        if not record.is_verified:
            continue
        if record.kind == ROLLBACK and record.rollback_to:
            wanted = origin[record.id]
            at = next((i for i, r in enumerate(stack) if origin[r.id] == wanted), None)
            if at is not None:
                undone.update(r.id for r in stack[at + 1 :])
                del stack[at:]
        stack.append(record)
    return stack, undone


def rolled_back_ids(records: list[ReleaseRecord]) -> set[str]:
    """Records that a later rollback undid."""
    return lineage(records)[1]


def current_live(records: list[ReleaseRecord]) -> ReleaseRecord | None:
    """The release that should be serving: the newest verified one still in effect."""
    stack, _undone = lineage(records)
    return stack[-1] if stack else None


def previous_live(records: list[ReleaseRecord]) -> ReleaseRecord | None:
    """What a rollback returns to: the newest release in effect before the live one, with
    different images. Never a failed, interrupted or rolled-back record."""
    stack, _undone = lineage(records)
    if not stack:
        return None
    live = stack[-1]
    for record in reversed(stack[:-1]):
        if record.digests() != live.digests():
            return record
    return None
