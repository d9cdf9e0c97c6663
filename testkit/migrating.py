"""Test releases whose api image carries extra Alembic revisions (expand, contract, failing,
slow), derived from the built release once per run and shared by every xdist worker.

    give(env, migrating, "m2.0.0", "m2")   # dist/m2.0.0 in env's dist, with revisions "m2"
"""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path
from typing import Any

from testkit import sandbox


class MigratingReleases:
    """Test releases with extra revisions, built once per run (across xdist workers)."""

    def __init__(self, client: Any, base: dict[str, Any], folder: Path) -> None:
        self.client = client
        self.base = base
        self.dist = folder / "migrating-releases"
        self.dist.mkdir(exist_ok=True)
        self.head = sandbox.schema_head(client, base["api"]["id"])

    def revisions(self, name: str) -> dict[str, str]:
        head = self.head
        expand = sandbox.revision_source(
            "e1a000000001",
            head,
            'op.create_table("scratch", sa.Column("id", sa.Integer(), primary_key=True))\n'
            'op.add_column("notes", sa.Column("color", sa.String(20), nullable=True))',
            message="add scratch table and notes.color",
        )
        return {
            "m2": {
                "e1a000000001_scratch.py": expand,
                "c1a000000001_drop_scratch.py": sandbox.revision_source(
                    "c1a000000001",
                    "e1a000000001",
                    'op.drop_table("scratch")',
                    kind="contract",
                    message="drop scratch",
                ),
            },
            "bad": {
                "e1bad0000001_bad.py": sandbox.revision_source(
                    "e1bad0000001",
                    head,
                    'op.execute("SELECT no_such_function()")',
                    message="fails",
                ),
            },
            # What the lint forbids (an expand after a contract), deployed anyway: its expand
            # step runs the contract too, and the live release refuses the schema.
            "contract-first": {
                "c2f000000001_contract.py": sandbox.revision_source(
                    "c2f000000001",
                    head,
                    'op.create_table("tmp_c", sa.Column("id", sa.Integer(), primary_key=True))',
                    kind="contract",
                    message="contract first",
                ),
                "e2f000000001_expand.py": sandbox.revision_source(
                    "e2f000000001",
                    "c2f000000001",
                    'op.add_column("notes", sa.Column("shade", sa.String(20), nullable=True))',
                    message="expand after",
                ),
            },
            "slow": {
                "e1510e000001_slow.py": sandbox.revision_source(
                    "e1510e000001",
                    head,
                    "import time\ntime.sleep(8)\n"
                    'op.add_column("notes", sa.Column("mood", sa.String(20), nullable=True))',
                    message="slow",
                ),
            },
        }[name]

    def make(self, version: str, revisions: str | None = None) -> Path:
        folder = self.dist / version
        with (self.dist / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (folder / "manifest.json").exists():
                sandbox.derive_release(
                    self.client,
                    self.base,
                    self.dist,
                    version,
                    revisions=self.revisions(revisions) if revisions else None,
                )
        return folder


def give(env: Any, migrating: MigratingReleases, version: str, revisions: str | None = None) -> str:
    shutil.copytree(migrating.make(version, revisions), env.dist / version, dirs_exist_ok=True)
    return version
