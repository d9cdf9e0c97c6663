"""Alembic migrations shipped inside the package and driven without an alembic.ini.

The deployed image has no alembic.ini and may run from any working directory, so the
script location is this package's own directory and the connection is handed to env.py.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from refapi.database import describe_failure
from refapi.errors import MigrationError

SCRIPT_LOCATION = Path(__file__).parent
LOCK_TIMEOUT_SECONDS = 60.0
LOCK_POLL_SECONDS = 0.05


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    # configparser interpolation would choke on a '%' in the install path.
    config.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise MigrationError(f"no migration scripts in {SCRIPT_LOCATION / 'versions'}")
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision stamped in the database, or None if it was never migrated."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(engine: Engine) -> str:
    """Bring the database to the head revision and return it."""
    where = engine.url.render_as_string(hide_password=True)
    try:
        with _sqlite_migration_lock(engine.url), engine.begin() as connection:
            command.upgrade(alembic_config(connection), "head")
            revision = current_revision(connection)
    except (SQLAlchemyError, CommandError, OSError) as exc:
        raise MigrationError(f"cannot migrate {where}: {describe_failure(exc)}") from exc
    if revision is None:
        raise MigrationError(f"cannot migrate {where}: no revision stamped after upgrade")
    return revision


@contextmanager
def _sqlite_migration_lock(url: URL) -> Iterator[None]:
    """Serialise migrations of one SQLite file across processes.

    pysqlite runs DDL outside a transaction and SQLite has no advisory locks, so two
    copies starting at once would both try to create the tables; a lock file next to
    the database makes the second one wait and then find the schema already at head.
    """
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        yield
        return
    # A relative path resolves against the working directory, exactly as SQLite's does.
    with Path(f"{database}.migrate-lock").open("a") as lock_file:
        deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise MigrationError(
                        f"another process held {lock_file.name} for over "
                        f"{LOCK_TIMEOUT_SECONDS:.0f}s; is a migration stuck?"
                    ) from None
                time.sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
