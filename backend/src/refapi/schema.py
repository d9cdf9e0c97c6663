"""A release's migration chain, and what it makes of a database's schema. Pure: no database.

Each revision is ``expand`` (additive: the previous release still works after it) or
``contract`` (destructive: drop or rename a column or table, narrow a type, NOT NULL without
a default), declared by ``kind = "contract"`` at module level; absent means expand.

``migrate expand`` runs everything pending up to ``expand_head``: the chain without its
trailing run of contract revisions (so an earlier release's contract revisions that precede
it run too). ``migrate contract`` runs the rest. A release's code must work on its
``expand_head`` and on its head, and on a newer schema that only added expand revisions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["expand", "contract"]
KINDS: tuple[Kind, ...] = ("expand", "contract")
Step = Literal["expand", "contract"]


@dataclass(frozen=True)
class Revision:
    """One revision of this code's chain."""

    revision: str
    down_revision: str | None
    kind: Kind
    message: str

    def describe(self) -> str:
        return f"{self.revision} ({self.message})" if self.message else self.revision


@dataclass(frozen=True)
class Applied:
    """A row of the database's kinds table (schema_revisions): what some release applied."""

    revision: str
    down_revision: str | None
    kind: str  # "expand", "contract", or "unknown" when the table has no row for it
    message: str | None = None

    def describe(self) -> str:
        return f"{self.revision} ({self.message})" if self.message else self.revision


@dataclass(frozen=True)
class Chain:
    """This code's revisions, base first (the history is linear)."""

    revisions: tuple[Revision, ...]

    @property
    def head(self) -> str:
        return self.revisions[-1].revision

    @property
    def expand_head(self) -> str:
        """The last revision that ``migrate expand`` reaches: all but the trailing contracts.

        A chain that is all contract revisions has none; its base stands in for it, so
        readiness still demands a migrated database."""
        for revision in reversed(self.revisions):
            if revision.kind == "expand":
                return revision.revision
        return self.revisions[0].revision

    def index(self, revision: str | None) -> int:
        """Position in the chain; -1 for an empty database. Only for revisions it knows."""
        if revision is None:
            return -1
        return [r.revision for r in self.revisions].index(revision)

    def knows(self, revision: str | None) -> bool:
        return revision is None or any(r.revision == revision for r in self.revisions)

    def get(self, revision: str) -> Revision:
        return self.revisions[self.index(revision)]

    def between(self, current: str | None, target: str) -> list[Revision]:
        """The revisions after ``current`` up to and including ``target`` (both known)."""
        return list(self.revisions[self.index(current) + 1 : self.index(target) + 1])

    def target(self, step: Step) -> str:
        return self.expand_head if step == "expand" else self.head


def ahead_of(chain: Chain, current: str | None, recorded: Mapping[str, Applied]) -> list[Applied]:
    """Revisions applied in the database that this code does not know, oldest first.

    Walks down_revision links in the kinds table from ``current`` until a revision this
    chain knows. A revision with no row ends the walk with kind "unknown"."""
    ahead: list[Applied] = []
    revision = current
    while revision is not None and not chain.knows(revision) and len(ahead) <= len(recorded):
        row = recorded.get(revision)
        if row is None:
            ahead.append(Applied(revision, None, "unknown"))
            break
        ahead.append(row)
        revision = row.down_revision
    return ahead[::-1]


def reaches_head(chain: Chain, ahead: list[Applied]) -> bool:
    """Whether the revisions ahead sit on top of this chain's head (not on a branch)."""
    return bool(ahead) and ahead[0].kind != "unknown" and ahead[0].down_revision == chain.head


@dataclass(frozen=True)
class Compatibility:
    """Whether this code can serve on the database's schema, and why, in words."""

    compatible: bool
    why: str
    ahead: list[Applied]


def compatibility(
    chain: Chain, current: str | None, recorded: Mapping[str, Applied]
) -> Compatibility:
    """This code's readiness rule.

    The database must hold every expand revision of this code (at or after expand_head;
    missing only this release's own trailing contract revisions is fine), and anything
    applied beyond this code's head must be expand revisions only."""
    expand_head = chain.expand_head
    if current is None:
        return Compatibility(
            False,
            f"database has no schema; this release needs {expand_head} — "
            "run `refapi migrate expand`",
            [],
        )
    if chain.knows(current):
        if chain.index(current) < chain.index(expand_head):
            return Compatibility(
                False,
                f"schema behind: at {current}, this release needs {expand_head} — "
                "run `refapi migrate expand`",
                [],
            )
        if current == chain.head:
            return Compatibility(True, f"schema at this release's head {current}", [])
        waiting = ", ".join(r.describe() for r in chain.between(current, chain.head))
        return Compatibility(
            True,
            f"schema at {current}; this release's contract revisions {waiting} "
            "are not applied yet (`refapi migrate contract`)",
            [],
        )
    ahead = ahead_of(chain, current, recorded)
    if not reaches_head(chain, ahead):
        return Compatibility(
            False,
            f"schema at {current}, which this release does not know and cannot trace "
            f"back to its head {chain.head}",
            ahead,
        )
    contracts = [a for a in ahead if a.kind != "expand"]
    if contracts:
        return Compatibility(
            False,
            f"schema ahead by contract revision {contracts[0].describe()}: this release's "
            "code may not work on it",
            ahead,
        )
    listed = ", ".join(a.describe() for a in ahead)
    return Compatibility(True, f"schema ahead by expand revisions {listed}", ahead)


def plan(
    chain: Chain, current: str | None, recorded: Mapping[str, Applied], database: str
) -> dict[str, Any]:
    """The ``migrate plan --json`` document.

    ``pending_expand`` is what ``migrate expand`` would run (it may include an earlier
    release's contract revision that precedes expand_head); ``pending_contract`` is what
    only ``migrate contract`` runs. Together they are ``pending``."""
    known = chain.knows(current)
    if known:
        # Empty once current is past expand_head: the slice runs backwards.
        pending_expand = chain.between(current, chain.expand_head)
        pending = chain.between(current, chain.head)
        ahead: list[Applied] = []
    else:
        pending_expand = pending = []
        ahead = ahead_of(chain, current, recorded)

    def applied(revision: Revision) -> bool:
        if known:
            return chain.index(revision.revision) <= chain.index(current)
        return revision.revision in recorded

    pending_ids = [r.revision for r in pending]
    expand_ids = [r.revision for r in pending_expand]
    return {
        "database": database,
        "current": current,
        "head": chain.head,
        "expand_head": chain.expand_head,
        "known": known,
        "revisions": [
            {
                "revision": r.revision,
                "down_revision": r.down_revision,
                "kind": r.kind,
                "message": r.message,
                "applied": applied(r),
            }
            for r in chain.revisions
        ],
        "pending": pending_ids,
        "pending_expand": expand_ids,
        "pending_contract": pending_ids[len(expand_ids) :],
        "ahead": [{"revision": a.revision, "kind": a.kind} for a in ahead],
    }
