"""How alembic runs refapi's migrations.

refapi hands over its own connection (see refapi.migrations.upgrade_to_head). When a
developer runs the alembic CLI from backend/ (configured by [tool.alembic] in
backend/pyproject.toml), there is none, and DATABASE_URL is used as the app would.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from refapi.database import create_engine
from refapi.models import Base
from refapi.settings import Settings


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


given: Connection | None = context.config.attributes.get("connection")
if given is not None:
    run_migrations(given)
else:
    engine = create_engine(Settings.from_env().database_url)
    try:
        with engine.begin() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()
