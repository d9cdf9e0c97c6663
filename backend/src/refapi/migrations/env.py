"""How alembic runs refapi's migrations.

refapi hands over its own connection (see refapi.migrations.run), and a callback that
records each revision's kind in the same transaction. ``refapi migrate sql`` runs alembic
offline (``--sql``): no connection, only a dialect to render for. When a developer runs the
alembic CLI from backend/ (configured by [tool.alembic] in backend/pyproject.toml), there is
no connection, and DATABASE_URL is used as the app would.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from refapi.database import create_engine
from refapi.migrations import KINDS_TABLE
from refapi.models import Base
from refapi.settings import Settings


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Autogenerate must not propose dropping the runner's kinds table."""
    return not (type_ == "table" and name == KINDS_TABLE)


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_name=include_name,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        on_version_apply=context.config.attributes.get("on_version_apply"),
    )
    with context.begin_transaction():
        context.run_migrations()


def render_migrations(dialect: str) -> None:
    context.configure(
        dialect_name=dialect,
        target_metadata=Base.metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


given: Connection | None = context.config.attributes.get("connection")
if context.is_offline_mode():
    render_migrations(context.config.attributes.get("dialect", "postgresql"))
elif given is not None:
    run_migrations(given)
else:
    engine = create_engine(Settings.from_env().database_url)
    try:
        with engine.begin() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()
