"""Add notes.pinned.

An expand revision: a boolean with a server default, so the previous release (which inserts
notes without it) keeps working on this schema, and PostgreSQL adds it without a rewrite.

Revision ID: 7d3f2a9c41be
Revises: 396cf1b1c322
Create Date: 2026-12-01 09:12:05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7d3f2a9c41be"
down_revision: str | Sequence[str] | None = "396cf1b1c322"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
kind = "expand"


def upgrade() -> None:
    op.add_column(
        "notes",
        sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    with op.batch_alter_table("notes") as batch:
        batch.drop_column("pinned")
