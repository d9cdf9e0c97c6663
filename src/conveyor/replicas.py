"""A swarm environment's state on every manager, so its ledger survives losing one.

A swarm keeps its own state on every manager (Raft), and conveyor's ledger must survive what
the swarm survives (DECISIONS): the state volume is copied to every host of the environment
that is a manager. The first host's copy is the primary, as on hosts: the lock lives there and
its refusals stop a command as they do on a single engine.

- **Writes** go to every copy, the primary first; a copy that refuses one stops the command
  with one line naming its host, before a deploy switches anything (the ledger's first record
  is written before any change).
- **Reads** are the union of all copies. Every file is written once under a name of its own
  (events, audit entries, logs, requests), so copies never disagree on a file; if they did, the
  primary's would stand. A file one copy lacks (a manager promoted since, a write cut short)
  is still read.
- **Sync** runs under the lock, before a command changes anything: it writes to each copy
  what the others hold and it lacks, so a newly promoted manager holds the whole ledger after
  the next deploy, rollback or recover.

If the first manager is lost, list a surviving manager first in deploy.toml's hosts: its copy
is the ledger, whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conveyor.state import StateStore

# What sync copies: the release ledger and the audit trail. Saved logs and rollout requests
# are read where they were written, by the run that wrote them.
SYNCED = ("ledger", "audit")


def merged(trees: Sequence[dict[str, bytes]]) -> dict[str, bytes]:
    """The union of the copies' files; where two hold the same path, the first's stands."""
    union: dict[str, bytes] = {}
    for tree in reversed(trees):
        union.update(tree)
    return union


def missing(trees: Sequence[dict[str, bytes]]) -> list[dict[str, bytes]]:
    """Per copy, the files the others hold and it lacks."""
    union = merged(trees)
    return [{path: union[path] for path in union.keys() - tree.keys()} for tree in trees]


class ReplicatedStore(StateStore):
    """The primary's state store, with a copy on each other manager."""

    def __init__(
        self, client: Any, env: str, image: str | None, host: str, copies: list[StateStore]
    ) -> None:
        self.copies = copies
        super().__init__(client, env, image, host=host)

    @property
    def image(self) -> str | None:
        return self._image

    @image.setter
    def image(self, value: str | None) -> None:
        # The router image creates the state container on each copy's engine as well.
        self._image = value
        for copy in self.copies:  # set before StateStore.__init__ sets the image
            copy.image = value

    def exists(self) -> bool:
        return super().exists() or any(copy.exists() for copy in self.copies)

    def write(self, path: str, data: bytes) -> None:
        super().write(path, data)
        for copy in self.copies:
            copy.write(path, data)

    def write_using_reserve(self, path: str, data: bytes) -> None:
        super().write_using_reserve(path, data)
        for copy in self.copies:
            copy.write_using_reserve(path, data)

    def write_setting_reserve(self, path: str, data: bytes) -> None:
        super().write_setting_reserve(path, data)
        for copy in self.copies:
            copy.write_setting_reserve(path, data)

    def read_tree(self, path: str) -> dict[str, bytes]:
        return merged(self._trees(path))

    def _trees(self, path: str) -> list[dict[str, bytes]]:
        return [super().read_tree(path), *(copy.read_tree(path) for copy in self.copies)]

    def sync(self) -> dict[str, int]:
        """Copy to each copy (the primary included) the ledger and audit files it lacks; per
        host that got any, how many."""
        copied: dict[str, int] = {}
        for folder in SYNCED:
            stores: list[StateStore] = [self, *self.copies]
            for store, lacking in zip(stores, missing(self._trees(folder)), strict=True):
                for path, data in sorted(lacking.items()):
                    StateStore.write(store, path, data)
                if lacking:
                    name = store.host or "?"
                    copied[name] = copied.get(name, 0) + len(lacking)
        return copied
