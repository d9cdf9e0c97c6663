"""Fixtures shared by refapi's unit and integration tests."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import refapi
from refapi.migrations import head_revision
from refapi.settings import Settings, database_url

REFAPI_ENV_VARS = (
    "PORT",
    "HOST",
    "DATABASE_URL",
    "APP_VERSION",
    "GIT_COMMIT",
    "MIGRATE_ON_START",
    "ACCESS_LOG",
    "REFAPI_FAULT",
    "MIGRATE_LOCK_TIMEOUT",
    "MIGRATE_STATEMENT_TIMEOUT",
    "MIGRATE_LOCK_RETRIES",
    "MIGRATE_RUNNER_WAIT",
    "FLAGS_FILE",
)


@pytest.fixture(autouse=True)
def _no_refapi_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PORT or DATABASE_URL in the developer's shell must not leak into a test."""
    for name in REFAPI_ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'refapi.db'}"


@pytest.fixture
def make_settings(sqlite_url: str) -> Callable[..., Settings]:
    """Settings pointing at a fresh SQLite file, with any field overridden."""

    def make(**overrides: Any) -> Settings:
        fields: dict[str, Any] = {
            "database_url": database_url(sqlite_url),
            "version": "1.2.3",
            "commit": "c0ffee",
        }
        fields.update(overrides)
        return Settings(**fields)

    return make


REVISION_TEMPLATE = '''"""{message}"""

import time

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = {down!r}
kind = "{kind}"


def upgrade() -> None:
    time.sleep({sleep})
    {body}


def downgrade() -> None:
    pass
'''

# What a test revision can do: (kind, message, upgrade body).
TEST_REVISIONS = {
    "add color": (
        "expand",
        "Add notes.color",
        "op.add_column('notes', sa.Column('color', sa.String(20), nullable=True))",
    ),
    "add size": (
        "expand",
        "Add notes.size",
        "op.add_column('notes', sa.Column('size', sa.Integer(), nullable=True))",
    ),
    "drop color": (
        "contract",
        "Drop notes.color",
        "with op.batch_alter_table('notes') as batch:\n        batch.drop_column('color')",
    ),
}


@pytest.fixture
def refapi_copy(tmp_path: Path) -> Callable[..., Path]:
    """A copy of the refapi package whose chain goes on past the shipped head with test
    revisions, given as ``(revision_id, what)`` with ``what`` a key of TEST_REVISIONS; each
    sleeps ``sleep`` seconds first. Returns the copy's site directory: in-process, pass
    ``site / "refapi/migrations"`` as ``location``; in a subprocess, put it on PYTHONPATH.
    The shipped package never carries these revisions."""

    def make(*revisions: tuple[str, str], sleep: float = 0.0) -> Path:
        site = tmp_path / f"site-{len(list(tmp_path.glob('site-*')))}"
        shutil.copytree(
            Path(refapi.__file__).parent,
            site / "refapi",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        down = head_revision()
        for revision, what in revisions:
            kind, message, body = TEST_REVISIONS[what]
            source = REVISION_TEMPLATE.format(
                message=message, revision=revision, down=down, kind=kind, sleep=sleep, body=body
            )
            (site / "refapi/migrations/versions" / f"{revision}_test.py").write_text(source)
            down = revision
        return site

    return make
