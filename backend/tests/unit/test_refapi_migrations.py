from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from refapi import migrations
from refapi.database import create_engine
from refapi.errors import MigrationError
from refapi.models import Base
from refapi.settings import MigrationSettings, database_url


def env_include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """env.py's filter: the runner's kinds table is not part of the models."""
    return not (type_ == "table" and name == migrations.KINDS_TABLE)


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url(sqlite_url))
    yield engine
    engine.dispose()


def test_upgrade_creates_the_schema_and_stamps_head(engine: Engine) -> None:
    assert migrations.upgrade_to_head(engine) == migrations.head_revision()

    assert "notes" in inspect(engine).get_table_names()
    with engine.connect() as connection:
        assert migrations.current_revision(connection) == migrations.head_revision()


def test_upgrade_is_idempotent(engine: Engine) -> None:
    migrations.upgrade_to_head(engine)

    assert migrations.upgrade_to_head(engine) == migrations.head_revision()


def test_the_migrations_build_exactly_the_models(engine: Engine) -> None:
    """A model change without a matching revision would deploy a schema the code cannot use."""
    migrations.upgrade_to_head(engine)

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_name": env_include_name})
        differences = compare_metadata(context, Base.metadata)

    assert differences == []


def test_every_revision_downgrades(engine: Engine) -> None:
    migrations.upgrade_to_head(engine)

    with engine.begin() as connection:
        command.downgrade(migrations.alembic_config(connection), "base")
        assert migrations.current_revision(connection) is None
    assert "notes" not in inspect(engine).get_table_names()
    assert migrations.upgrade_to_head(engine) == migrations.head_revision()


def test_an_unreachable_database_is_a_migration_error(tmp_path: Path) -> None:
    engine = create_engine(database_url(f"sqlite:///{tmp_path / 'missing' / 'refapi.db'}"))

    with pytest.raises(MigrationError, match=r"^cannot migrate sqlite:///.*missing/refapi\.db: "):
        migrations.upgrade_to_head(engine)


def test_simultaneous_migrations_of_one_sqlite_file_all_succeed(sqlite_url: str) -> None:
    """Without the migration lock every round fails with 'table ... already exists'."""
    engines = [create_engine(database_url(sqlite_url)) for _ in range(4)]
    all_at_once = threading.Barrier(len(engines), timeout=10)
    revisions: list[str] = []
    failures: list[Exception] = []

    def migrate(engine: Engine) -> None:
        all_at_once.wait()
        try:
            revisions.append(migrations.upgrade_to_head(engine))
        except MigrationError as exc:
            failures.append(exc)

    workers = [threading.Thread(target=migrate, args=(engine,)) for engine in engines]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    for engine in engines:
        engine.dispose()

    assert failures == []
    assert revisions == [migrations.head_revision()] * len(engines)


def test_a_held_sqlite_lock_makes_the_migration_wait(engine: Engine) -> None:
    lock_path = Path(f"{engine.url.database}.migrate-lock")
    finished = threading.Event()

    def migrate() -> None:
        migrations.upgrade_to_head(engine)
        finished.set()

    with lock_path.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        worker = threading.Thread(target=migrate, daemon=True)
        worker.start()

        assert not finished.wait(0.5), "migrated while another process held the lock"
        fcntl.flock(held, fcntl.LOCK_UN)

    assert finished.wait(10), "migration never resumed after the lock was released"
    worker.join(10)


def test_a_stuck_sqlite_lock_gives_up_with_a_clear_error(engine: Engine) -> None:
    with Path(f"{engine.url.database}.migrate-lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)

        with pytest.raises(
            MigrationError,
            match=r"refapi\.db\.migrate-lock and did not finish within MIGRATE_RUNNER_WAIT=0\.2s",
        ):
            migrations.upgrade_to_head(engine, MigrationSettings(runner_wait=0.2))

    with engine.connect() as connection:
        assert migrations.current_revision(connection) is None
