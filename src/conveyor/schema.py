"""A release's database schema, through the app's migration command.

conveyor and the app speak a small protocol, so any app can plug in (refapi implements it as
``python3 -m refapi migrate``):

- ``plan --json``: the current revision, the app's whole chain with each revision's kind
  (``expand``, additive; ``contract``, destructive) and what is pending;
- ``expand`` runs what is pending up to the last expand revision; ``contract`` runs the rest;
  both print ``{"before", "after", "ran", "seconds"}``;
- ``current --json``: whether *this* code accepts the database as it is (a schema ahead of it
  by expand revisions only is fine; one ahead by a contract revision is not), and why;
- ``sql --json``: every revision's SQL, rendered offline (the build keeps it for review).

The advisory lock, ``lock_timeout`` and retries live in the app's command; conveyor hands it
their settings as environment variables and runs it once per release, in a one-off container
from the release's image, under the environment's lock.
"""

from __future__ import annotations

import json
import secrets
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from conveyor import oneoff, terms
from conveyor.config import Migrations, Service
from conveyor.errors import MigrationFailed
from conveyor.hosts import service_env


@dataclass(frozen=True)
class Revision:
    revision: str
    kind: terms.RevisionKind
    message: str = ""

    def describe(self) -> str:
        return f"{self.revision} ({self.kind}{': ' + self.message if self.message else ''})"


@dataclass(frozen=True)
class SchemaPlan:
    """What ``plan --json`` says about the database and a release's code."""

    database: str
    current: str | None
    head: str
    expand_head: str
    known: bool
    revisions: tuple[Revision, ...]
    pending_expand: tuple[str, ...]
    pending_contract: tuple[str, ...]
    ahead: tuple[Revision, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> SchemaPlan:
        try:
            return cls(
                database=str(data["database"]),
                current=data["current"],
                head=str(data["head"]),
                expand_head=str(data["expand_head"]),
                known=bool(data["known"]),
                revisions=tuple(_revision(r) for r in data["revisions"]),
                pending_expand=tuple(str(r) for r in data["pending_expand"]),
                pending_contract=tuple(str(r) for r in data["pending_contract"]),
                ahead=tuple(_revision(r) for r in data.get("ahead", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MigrationFailed(
                f"the migration command's plan is not conveyor's protocol ({exc!r})"
            ) from None

    def revision(self, name: str) -> Revision:
        return next((r for r in self.revisions if r.revision == name), Revision(name, "expand"))

    def will_run(self) -> list[Revision]:
        """What ``expand`` runs: earlier releases' contract revisions included."""
        return [self.revision(name) for name in self.pending_expand]

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "current": self.current,
            "head": self.head,
            "expand_head": self.expand_head,
            "chain": [{"revision": r.revision, "kind": r.kind} for r in self.revisions],
            "pending_contract": list(self.pending_contract),
        }


@dataclass(frozen=True)
class Applied:
    """What ``expand`` or ``contract`` ran."""

    before: str | None
    after: str | None
    ran: tuple[Revision, ...]
    seconds: float
    log: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "before": self.before,
            "after": self.after,
            "ran": [{"revision": r.revision, "kind": r.kind} for r in self.ran],
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class Acceptance:
    """Whether a release's code accepts the database as it is (``current --json``)."""

    current: str | None
    compatible: bool
    why: str
    ahead: tuple[Revision, ...] = field(default_factory=tuple)

    def contract_ahead(self) -> list[Revision]:
        return [r for r in self.ahead if r.kind != "expand"]


class MigrationCommand:
    """The app's migration command for one service, run from ``image`` on one host."""

    def __init__(
        self,
        client: Any,
        env_name: str,
        service: Service,
        image: str,
        release: str,
        *,
        log_dir: Path | None = None,
    ) -> None:
        if service.migrations is None:
            raise ValueError(f"service {service.name} has no migrations")
        self.client = client
        self.env_name = env_name
        self.service = service
        self.settings: Migrations = service.migrations
        self.image = image
        self.release = release
        self.log_dir = log_dir

    def plan(self) -> SchemaPlan:
        return SchemaPlan.from_json(self._json(["plan", "--json"], "plan"))

    def expand(self) -> Applied:
        return self._apply("expand")

    def contract(self) -> Applied:
        return self._apply("contract")

    def current(self) -> Acceptance:
        data = self._json(["current", "--json"], "check")
        try:
            return Acceptance(
                current=data["current"],
                compatible=bool(data["compatible"]),
                why=str(data.get("why", "")),
                ahead=tuple(_revision(r) for r in data.get("ahead", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MigrationFailed(
                f"the migration command's answer is not conveyor's protocol ({exc!r})"
            ) from None

    # --- running the command -------------------------------------------------------------

    def _apply(self, step: str) -> Applied:
        finished = self._run([step], step, timeout=self.settings.timeout)
        if not finished.ok:
            raise MigrationFailed(
                f"{self.service.name}: `{step}` failed: {finished.last_line()}", finished.tail()
            )
        data = _last_json(finished.stdout, step)
        return Applied(
            before=data.get("before"),
            after=data.get("after"),
            ran=tuple(_revision(r) for r in data.get("ran", [])),
            seconds=float(data.get("seconds", finished.seconds)),
            log=str(finished.log) if finished.log else None,
        )

    def _json(self, args: list[str], purpose: str) -> dict[str, Any]:
        # Read-only and lock-free (a dry run asks too): a name of its own, never a clash.
        purpose = f"{purpose}-{secrets.token_hex(2)}"
        finished = self._run(args, purpose, timeout=min(self.settings.timeout, 120.0))
        if not finished.ok:
            raise MigrationFailed(
                f"{self.service.name}: `{' '.join(args)}` failed: {finished.last_line()}",
                finished.tail(),
            )
        return _last_json(finished.stdout, " ".join(args))

    def _run(self, args: list[str], purpose: str, *, timeout: float) -> oneoff.Finished:
        env = service_env(self.service) | self.settings.environment() | {"MIGRATE_ON_START": "0"}
        job = oneoff.OneOff(
            purpose=purpose,
            release=self.release,
            image=self.image,
            command=[*shlex.split(self.settings.command), *args],
            env=env,
            volumes=dict(self.service.volumes),
            timeout=timeout,
        )
        return oneoff.run(self.client, self.env_name, self.service, job, log_dir=self.log_dir)


def _revision(raw: Any) -> Revision:
    kind = raw.get("kind", "expand")
    if kind not in terms.REVISION_KINDS:
        raise ValueError(f"revision {raw.get('revision')!r} has kind {kind!r}")
    return Revision(
        str(raw["revision"]), cast(terms.RevisionKind, kind), str(raw.get("message", ""))
    )


def _last_json(stdout: str, what: str) -> dict[str, Any]:
    """The protocol's answer: the last line of stdout that is a JSON object."""
    for raw in reversed(stdout.strip().splitlines()):
        line = raw.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                break
            if isinstance(data, dict):
                return data
    try:
        whole = json.loads(stdout)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict):
        return whole
    raise MigrationFailed(f"`{what}` printed no JSON answer (is it conveyor's protocol?)")
