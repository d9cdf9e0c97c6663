"""Alembic migrations shipped inside the package and driven without an alembic.ini, and the
runner behind ``refapi migrate``: one runner at a time, bounded lock waits, a kinds table.

The deployed image has no alembic.ini and may run from any working directory, so the
script location is this package's own directory and the connection is handed to env.py.

A run reads as its steps: take the runner lock (a PostgreSQL session advisory lock, or a
lock file next to a SQLite database), set the session's lock and statement timeouts, then in
one transaction: read the current revision (a second runner finds the first one's work
done), create and backfill the kinds table, run the step's pending revisions and record
each one's kind. A lock wait that exceeds lock_timeout rolls that transaction back and is
retried a few times, so other sessions never queue longer than lock_timeout behind it.
"""

from __future__ import annotations

import fcntl
import io
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, inspect, select, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from refapi.database import describe_failure
from refapi.errors import MigrationError
from refapi.schema import KINDS, Applied, Chain, Revision, Step, ahead_of, reaches_head
from refapi.settings import MigrationSettings

SCRIPT_LOCATION = Path(__file__).parent
LOCK_POLL_SECONDS = 0.05
# pg_advisory_lock's key for "the migration runner" ("refapi" in ASCII); scoped per database.
ADVISORY_LOCK_KEY = 0x726566617069
# SQLSTATE lock_not_available: a lock wait exceeded lock_timeout.
LOCK_NOT_AVAILABLE = "55P03"
RETRY_BACKOFF_SECONDS = 0.5

KINDS_TABLE = "schema_revisions"
_kinds_metadata = MetaData()
schema_revisions = Table(
    KINDS_TABLE,
    _kinds_metadata,
    Column("revision", String(64), primary_key=True),
    Column("down_revision", String(64), nullable=True),
    Column("kind", String(16), nullable=False),
    # Not in the protocol's four columns: lets older code name what it finds ahead of it.
    Column("message", Text, nullable=True),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

Say = Callable[[str], None]


def say_on_stderr(line: str) -> None:
    print(f"migrate: {line}", file=sys.stderr, flush=True)


def alembic_config(
    connection: Connection | None = None,
    *,
    location: Path = SCRIPT_LOCATION,
    output: io.StringIO | None = None,
) -> Config:
    config = Config(output_buffer=output)
    # configparser interpolation would choke on a '%' in the install path.
    config.set_main_option("script_location", str(location).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def load_chain(location: Path = SCRIPT_LOCATION) -> Chain:
    """This code's revisions, base first, each with its kind; one head and no merges."""
    scripts = ScriptDirectory.from_config(alembic_config(location=location))
    heads = scripts.get_heads()
    if len(heads) != 1:
        found = ", ".join(heads) or "none"
        raise MigrationError(f"expected one head revision in {location / 'versions'}: {found}")
    revisions: list[Revision] = []
    for script in reversed(list(scripts.walk_revisions())):
        down = script.down_revision
        if isinstance(down, (tuple, list)):
            raise MigrationError(f"revision {script.revision} merges {down}; keep history linear")
        kind = getattr(script.module, "kind", "expand")
        if kind not in KINDS:
            raise MigrationError(
                f"revision {script.revision}: kind = {kind!r}; expected 'expand' or 'contract'"
            )
        message = script.doc.strip().splitlines()[0].rstrip(".") if script.doc.strip() else ""
        revisions.append(Revision(script.revision, down, kind, message))
    return Chain(tuple(revisions))


def head_revision(location: Path = SCRIPT_LOCATION) -> str:
    return load_chain(location).head


def current_revision(connection: Connection) -> str | None:
    """The revision stamped in the database, or None if it was never migrated."""
    return MigrationContext.configure(connection).get_current_revision()


def recorded_revisions(connection: Connection) -> dict[str, Applied]:
    """The kinds table, or nothing when this database predates it."""
    if not inspect(connection).has_table(KINDS_TABLE):
        return {}
    rows = connection.execute(
        select(
            schema_revisions.c.revision,
            schema_revisions.c.down_revision,
            schema_revisions.c.kind,
            schema_revisions.c.message,
        )
    )
    return {row.revision: Applied(*row) for row in rows}


@dataclass(frozen=True)
class Observed:
    """The schema as a release sees it: the stamped revision and, when it is one this code
    does not know, the kinds table that says what it is."""

    current: str | None
    recorded: dict[str, Applied]


def observe(connection: Connection, chain: Chain) -> Observed:
    current = current_revision(connection)
    recorded = {} if chain.knows(current) else recorded_revisions(connection)
    return Observed(current, recorded)


@dataclass(frozen=True)
class RunResult:
    before: str | None
    after: str
    ran: list[Revision]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "before": self.before,
            "after": self.after,
            "ran": [{"revision": r.revision, "kind": r.kind} for r in self.ran],
            "seconds": round(self.seconds, 3),
        }


def run(
    engine: Engine,
    step: Step,
    limits: MigrationSettings | None = None,
    *,
    location: Path = SCRIPT_LOCATION,
    say: Say = say_on_stderr,
) -> RunResult:
    """Run the step's pending revisions (expand: up to expand_head; contract: up to head)."""
    limits = limits or MigrationSettings()
    where = engine.url.render_as_string(hide_password=True)
    chain = load_chain(location)
    started = time.monotonic()
    try:
        with _runner_lock(engine, limits, say) as connection:
            before, ran = _run_with_retries(
                connection, chain, step, limits=limits, location=location, say=say
            )
            after = current_revision(connection)
            connection.commit()
    except (SQLAlchemyError, CommandError, OSError) as exc:
        raise MigrationError(f"cannot migrate {where}: {describe_failure(exc)}") from exc
    except MigrationError as exc:
        raise MigrationError(f"cannot migrate {where}: {exc}") from exc
    if after is None:
        raise MigrationError(f"cannot migrate {where}: no revision stamped after upgrade")
    return RunResult(before, after, ran, time.monotonic() - started)


def upgrade_to_head(
    engine: Engine, limits: MigrationSettings | None = None, *, say: Say | None = None
) -> str:
    """Bring the database to the head revision and return it (bare ``refapi migrate``)."""
    return run(engine, "contract", limits, say=say or (lambda _line: None)).after


def _run_with_retries(
    connection: Connection,
    chain: Chain,
    step: Step,
    *,
    limits: MigrationSettings,
    location: Path,
    say: Say,
) -> tuple[str | None, list[Revision]]:
    attempts = 1 + (limits.lock_retries if _is_postgres(connection) else 0)
    for attempt in range(1, attempts + 1):
        try:
            with connection.begin():
                return _run_once(connection, chain, step, location, say)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            if attempt == attempts:
                raise MigrationError(
                    f"gave up after {attempts} attempts, each waiting "
                    f"MIGRATE_LOCK_TIMEOUT={limits.lock_timeout:g}s for a lock that another "
                    f"session holds ({describe_failure(exc.orig or exc)}) — run it again once "
                    "that session is done"
                ) from None
            backoff = RETRY_BACKOFF_SECONDS * attempt
            say(
                f"a lock wait exceeded {limits.lock_timeout:g}s (attempt {attempt} of "
                f"{attempts}); retrying in {backoff:g}s"
            )
            time.sleep(backoff)
    raise AssertionError("unreachable")  # pragma: no cover


def _run_once(
    connection: Connection, chain: Chain, step: Step, location: Path, say: Say
) -> tuple[str | None, list[Revision]]:
    """One attempt, inside the caller's transaction."""
    current = current_revision(connection)
    recorded = _ensure_kinds_table(connection, chain, current)
    pending = _pending(chain, step, current, recorded)
    if not pending:
        say(f"nothing to run for {step}: the database is at {current}")
        return current, []
    say(
        f"running {len(pending)} revision(s) from {current} to {pending[-1].revision}: "
        + ", ".join(f"{r.revision} ({r.kind})" for r in pending)
    )
    ran: list[Revision] = []

    def record(*, step: Any, **_: Any) -> None:
        revision = chain.get(step.up_revision_id)
        _record_kind(connection, revision)
        ran.append(revision)
        say(f"applied {revision.revision} ({revision.kind}): {revision.message}")

    config = alembic_config(connection, location=location)
    config.attributes["on_version_apply"] = record
    command.upgrade(config, pending[-1].revision)
    return current, ran


def _pending(
    chain: Chain, step: Step, current: str | None, recorded: dict[str, Applied]
) -> list[Revision]:
    if chain.knows(current):
        return chain.between(current, chain.target(step))
    # A newer release migrated already; fine as long as it built on this code's head.
    if reaches_head(chain, ahead_of(chain, current, recorded)):
        return []
    raise MigrationError(
        f"the database is at revision {current}, which this code does not know and cannot "
        f"trace back to its head {chain.head}"
    )


def _ensure_kinds_table(
    connection: Connection, chain: Chain, current: str | None
) -> dict[str, Applied]:
    """Create the kinds table if this database predates it, and record the kinds of this
    chain's revisions that are applied but missing from it."""
    schema_revisions.create(connection, checkfirst=True)
    recorded = recorded_revisions(connection)
    if chain.knows(current):
        for revision in chain.revisions[: chain.index(current) + 1]:
            if revision.revision not in recorded:
                _record_kind(connection, revision)
                recorded[revision.revision] = _applied(revision)
    return recorded


def _applied(revision: Revision) -> Applied:
    return Applied(revision.revision, revision.down_revision, revision.kind, revision.message)


def _record_kind(connection: Connection, revision: Revision) -> None:
    # A revision downgraded by hand and applied again replaces its old row.
    connection.execute(
        schema_revisions.delete().where(schema_revisions.c.revision == revision.revision)
    )
    connection.execute(
        schema_revisions.insert().values(
            revision=revision.revision,
            down_revision=revision.down_revision,
            kind=revision.kind,
            message=revision.message,
            applied_at=datetime.now(UTC),
        )
    )


def _is_postgres(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


@contextmanager
def _runner_lock(engine: Engine, limits: MigrationSettings, say: Say) -> Iterator[Connection]:
    """A connection that is the only migration runner of its database."""
    if engine.url.get_backend_name() == "postgresql":
        with engine.connect() as connection, _advisory_lock(connection, limits, say):
            yield connection
        return
    with _sqlite_migration_lock(engine.url, limits.runner_wait, say), engine.connect() as conn:
        yield conn


@contextmanager
def _advisory_lock(connection: Connection, limits: MigrationSettings, say: Say) -> Iterator[None]:
    """A session advisory lock, polled so that the wait is bounded and narrated; then the
    session's timeouts, so no statement of the migration queues longer than lock_timeout."""
    deadline = time.monotonic() + limits.runner_wait
    said = False
    key = {"key": ADVISORY_LOCK_KEY}
    while not connection.execute(text("SELECT pg_try_advisory_lock(:key)"), key).scalar():
        connection.commit()
        if time.monotonic() >= deadline:
            raise MigrationError(
                f"another migration holds the runner lock (pg advisory lock {ADVISORY_LOCK_KEY})"
                f" and did not finish within MIGRATE_RUNNER_WAIT={limits.runner_wait:g}s"
            )
        if not said:
            say("another migration is running; waiting for the runner lock")
            said = True
        time.sleep(LOCK_POLL_SECONDS * 5)
    try:
        # SET takes no bind parameters; both values are numbers we parsed.
        lock_ms = round(limits.lock_timeout * 1000)
        statement_ms = round(limits.statement_timeout * 1000)
        connection.execute(text(f"SET lock_timeout = {lock_ms}"))
        connection.execute(text(f"SET statement_timeout = {statement_ms}"))
        connection.commit()
        yield
    finally:
        # A pooled connection must not keep the lock or the timeouts. If the connection
        # broke, the pool discards it and the server drops the session's lock itself.
        with suppress(SQLAlchemyError):
            if connection.in_transaction():
                connection.rollback()
            connection.execute(text("RESET lock_timeout"))
            connection.execute(text("RESET statement_timeout"))
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), key)
            connection.commit()


@contextmanager
def _sqlite_migration_lock(url: URL, wait: float, say: Say) -> Iterator[None]:
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
        deadline = time.monotonic() + wait
        said = False
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise MigrationError(
                        f"another migration holds the runner lock {lock_file.name} and did "
                        f"not finish within MIGRATE_RUNNER_WAIT={wait:g}s; is one stuck?"
                    ) from None
                if not said:
                    say(f"another migration is running; waiting for {lock_file.name}")
                    said = True
                time.sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def render_sql(location: Path = SCRIPT_LOCATION, dialect: str = "postgresql") -> list[str]:
    """Each revision's upgrade SQL, rendered offline on its own (from its down_revision)."""
    rendered: list[str] = []
    for revision in load_chain(location).revisions:
        output = io.StringIO()
        config = alembic_config(location=location, output=output)
        config.attributes["dialect"] = dialect
        span = f"{revision.down_revision}:{revision.revision}"
        command.upgrade(config, span if revision.down_revision else revision.revision, sql=True)
        rendered.append(output.getvalue())
    return rendered
