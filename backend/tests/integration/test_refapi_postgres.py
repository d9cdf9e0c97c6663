"""The migration runner against a real PostgreSQL 15 (testkit.postgres): one runner at a time,
bounded lock waits that never leave other sessions queued longer than lock_timeout, the kinds
table and its backfill, and the server itself on PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command

from refapi import migrations
from refapi.database import create_engine
from refapi.settings import database_url
from testkit.postgres import PostgresServer

CREATE_NOTES = "396cf1b1c322"
PINNED = "7d3f2a9c41be"


def refapi(
    url: str, *args: str, site: Path | None = None, **variables: str
) -> subprocess.Popen[str]:
    env = {**os.environ, "DATABASE_URL": url, **variables}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.Popen(
        [sys.executable, "-m", "refapi", "migrate", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


@pytest.fixture
def at_create_notes(pg_url: str) -> str:
    """A database as today's releases leave it: at the first revision, no kinds table."""
    engine = create_engine(database_url(pg_url))
    with engine.begin() as connection:
        command.upgrade(migrations.alembic_config(connection), CREATE_NOTES)
    engine.dispose()
    return pg_url


def test_plan_expand_and_current_on_postgresql(pg_url: str, postgres: PostgresServer) -> None:
    code, out, err = finish(refapi(pg_url, "plan", "--json"))
    assert code == 0, err
    plan = json.loads(out)
    assert (plan["database"], plan["current"], plan["pending"]) == (
        "postgresql",
        None,
        [CREATE_NOTES, PINNED],
    )

    code, out, err = finish(refapi(pg_url, "expand"))

    assert code == 0, err
    assert json.loads(out)["ran"] == [
        {"revision": CREATE_NOTES, "kind": "expand"},
        {"revision": PINNED, "kind": "expand"},
    ]
    code, out, err = finish(refapi(pg_url, "current", "--json"))
    assert json.loads(out)["compatible"] is True
    rows = postgres.psql(
        "SELECT revision, coalesce(down_revision, '-'), kind FROM schema_revisions "
        "ORDER BY applied_at",
        database=pg_url.rsplit("/", 1)[1],
    ).stdout.split()
    assert rows == [f"{CREATE_NOTES}|-|expand", f"{PINNED}|{CREATE_NOTES}|expand"]


def test_an_existing_database_gets_its_kinds_table_backfilled(
    at_create_notes: str, postgres: PostgresServer
) -> None:
    database = at_create_notes.rsplit("/", 1)[1]
    exists = "SELECT to_regclass('schema_revisions') IS NOT NULL"
    assert postgres.psql(exists, database=database).stdout.strip() == "f"

    code, out, err = finish(refapi(at_create_notes, "expand"))

    assert code == 0, err
    result = json.loads(out)
    assert (result["before"], result["after"]) == (CREATE_NOTES, PINNED)
    assert result["ran"] == [{"revision": PINNED, "kind": "expand"}]
    rows = postgres.psql(
        "SELECT revision, kind FROM schema_revisions ORDER BY applied_at", database=database
    ).stdout.split()
    assert rows == [f"{CREATE_NOTES}|expand", f"{PINNED}|expand"]


def test_two_expands_at_once_one_runs_the_other_waits_then_finds_nothing(
    pg_url: str, refapi_copy: Callable[..., Path]
) -> None:
    site = refapi_copy(("e1", "add color"), sleep=2.0)

    first = refapi(pg_url, "expand", site=site)
    time.sleep(0.3)
    second = refapi(pg_url, "expand", site=site)
    results = [finish(first), finish(second)]

    assert [code for code, _, _ in results] == [0, 0], results
    ran = [[r["revision"] for r in json.loads(out)["ran"]] for _, out, _ in results]
    # Which one wins the runner lock is up to the scheduler (the second process can start
    # first on a loaded machine): one runs everything, the other waits and finds nothing.
    assert sorted(ran) == [[], [CREATE_NOTES, PINNED, "e1"]], ran
    waited = results[ran.index([])]
    assert "waiting for the runner lock" in waited[2]
    assert json.loads(waited[1])["before"] == "e1"


@pytest.fixture
def blocker(postgres: PostgresServer, at_create_notes: str) -> Iterator[Callable[[str], Any]]:
    """Another session holding a lock on notes in an open transaction."""
    connections: list[Any] = []

    def hold(mode: str) -> Any:
        connection = postgres.connect(autocommit=False, database=at_create_notes.rsplit("/", 1)[1])
        connection.execute(f"LOCK TABLE notes IN {mode} MODE")
        connections.append(connection)
        return connection

    yield hold
    for connection in connections:
        connection.rollback()
        connection.close()


def test_a_held_table_lock_makes_the_migration_give_up_in_one_line(
    at_create_notes: str, blocker: Callable[[str], Any]
) -> None:
    blocker("ACCESS EXCLUSIVE")
    began = time.monotonic()

    code, out, err = finish(
        refapi(
            at_create_notes,
            "expand",
            MIGRATE_LOCK_TIMEOUT="0.5",
            MIGRATE_LOCK_RETRIES="2",
        )
    )

    assert code == 1, err
    assert out == ""
    assert "Traceback" not in err
    failures = [line for line in err.splitlines() if line.startswith("refapi:")]
    assert len(failures) == 1, err
    assert failures[0].startswith("refapi: cannot migrate postgresql+psycopg://conveyor:***@")
    assert "gave up after 3 attempts, each waiting MIGRATE_LOCK_TIMEOUT=0.5s" in failures[0]
    assert "lock timeout" in failures[0]
    assert err.count("a lock wait exceeded 0.5s") == 2
    # three waits of 0.5 s and backoffs of 0.5 s and 1 s
    assert 2.5 <= time.monotonic() - began < 20
    code, out, _ = finish(refapi(at_create_notes, "current", "--json"))
    assert json.loads(out)["current"] == CREATE_NOTES


def test_other_sessions_never_wait_longer_than_lock_timeout_behind_the_migration(
    at_create_notes: str, blocker: Callable[[str], Any], postgres: PostgresServer
) -> None:
    """A long reader holds ACCESS SHARE; the migration's ALTER TABLE queues for ACCESS
    EXCLUSIVE, and every new reader queues behind that request. lock_timeout bounds it.

    (With the blocker holding ACCESS EXCLUSIVE itself, readers would wait for the blocker,
    whatever the migration does; so this is the case where the migration is to blame.)"""
    blocker("ACCESS SHARE")
    lock_timeout = 1.0
    waits: list[float] = []
    migrating = refapi(
        at_create_notes,
        "expand",
        MIGRATE_LOCK_TIMEOUT=str(lock_timeout),
        MIGRATE_LOCK_RETRIES="3",
    )
    reader = postgres.connect(database=at_create_notes.rsplit("/", 1)[1])

    def read_while_migrating() -> None:
        while migrating.poll() is None:
            began = time.monotonic()
            reader.execute("SELECT count(*) FROM notes").fetchone()
            waits.append(time.monotonic() - began)
            time.sleep(0.05)

    reading = threading.Thread(target=read_while_migrating)
    reading.start()
    code, _, err = finish(migrating)
    reading.join(10)
    reader.close()

    assert code == 1, err
    assert len(waits) > 10
    assert max(waits) > 0.3, "no read ever queued behind the migration's lock request"
    assert max(waits) < lock_timeout + 0.5, sorted(waits)[-5:]


def test_the_server_serves_pinned_notes_on_postgresql(
    pg_url: str, start_refapi: Callable[..., Any]
) -> None:
    server = start_refapi(DATABASE_URL=pg_url)

    ready = server.wait_for("/readyz", 200)
    server.post("/api/notes", {"text": "plain"})
    server.post("/api/notes", {"text": "pinned", "pinned": True})

    assert ready["migration"] == PINNED
    assert [(n["text"], n["pinned"]) for n in server.get("/api/notes").json()] == [
        ("pinned", True),
        ("plain", False),
    ]
