"""The migration protocol conveyor drives: plan, expand, contract, current, sql (SQLite).

Chains with contract revisions are built in a copy of the package (``refapi_copy``); the
shipped chain only gains the real ``notes.pinned`` expand revision.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from refapi import migrations, schema
from refapi.__main__ import main
from refapi.app import create_app
from refapi.database import create_engine
from refapi.errors import ConfigError
from refapi.settings import MigrationSettings, Settings, database_url

CREATE_NOTES = "396cf1b1c322"
PINNED = "7d3f2a9c41be"
Copy = Callable[..., Path]


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url(sqlite_url))
    yield engine
    engine.dispose()


def location(site: Path) -> Path:
    return site / "refapi/migrations"


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    assert main(["migrate", *args]) == 0
    return json.loads(capsys.readouterr().out)


def kinds(engine: Engine) -> list[tuple[str, str | None, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT revision, down_revision, kind FROM schema_revisions ORDER BY applied_at")
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def readiness(engine: Engine, chain: schema.Chain) -> schema.Compatibility:
    with engine.connect() as connection:
        observed = migrations.observe(connection, chain)
    return schema.compatibility(chain, observed.current, observed.recorded)


def test_the_shipped_chain_is_all_expand_and_ends_with_pinned() -> None:
    chain = migrations.load_chain()

    assert [(r.revision, r.kind) for r in chain.revisions] == [
        (CREATE_NOTES, "expand"),
        (PINNED, "expand"),
    ]
    assert (chain.head, chain.expand_head) == (PINNED, PINNED)


def test_plan_of_an_empty_database(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)

    assert run_json(capsys, "plan", "--json") == {
        "database": "sqlite",
        "current": None,
        "head": PINNED,
        "expand_head": PINNED,
        "known": True,
        "revisions": [
            {
                "revision": CREATE_NOTES,
                "down_revision": None,
                "kind": "expand",
                "message": "Create the notes table",
                "applied": False,
            },
            {
                "revision": PINNED,
                "down_revision": CREATE_NOTES,
                "kind": "expand",
                "message": "Add notes.pinned",
                "applied": False,
            },
        ],
        "pending": [CREATE_NOTES, PINNED],
        "pending_expand": [CREATE_NOTES, PINNED],
        "pending_contract": [],
        "ahead": [],
    }


def test_expand_then_contract_then_nothing(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)

    expanded = run_json(capsys, "expand")
    again = run_json(capsys, "contract")
    current = run_json(capsys, "current", "--json")

    assert expanded["before"] is None
    assert expanded["after"] == PINNED
    assert expanded["ran"] == [
        {"revision": CREATE_NOTES, "kind": "expand"},
        {"revision": PINNED, "kind": "expand"},
    ]
    assert isinstance(expanded["seconds"], float)
    assert set(expanded) == {"before", "after", "ran", "seconds"}
    assert (again["before"], again["after"], again["ran"]) == (PINNED, PINNED, [])
    assert current == {
        "current": PINNED,
        "head": PINNED,
        "expand_head": PINNED,
        "known": True,
        "ahead": [],
        "compatible": True,
        "why": f"schema at this release's head {PINNED}",
    }


def test_progress_goes_to_stderr_and_only_json_to_stdout(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)

    assert main(["migrate", "expand"]) == 0

    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1
    json.loads(out)
    assert f"migrate: applied {PINNED} (expand): Add notes.pinned" in err.splitlines()


def test_expand_stops_before_the_trailing_contracts(engine: Engine, refapi_copy: Copy) -> None:
    site = location(refapi_copy(("e1", "add color"), ("c1", "drop color")))
    chain = migrations.load_chain(site)

    expanded = migrations.run(engine, "expand", location=site)
    with engine.connect() as connection:
        observed = migrations.observe(connection, chain)
    planned = schema.plan(chain, observed.current, observed.recorded, "sqlite")
    contracted = migrations.run(engine, "contract", location=site)

    assert chain.expand_head == "e1"
    assert [r.revision for r in expanded.ran] == [CREATE_NOTES, PINNED, "e1"]
    assert expanded.after == "e1"
    assert planned["pending"] == ["c1"]
    assert planned["pending_expand"] == []
    assert planned["pending_contract"] == ["c1"]
    assert contracted.to_json()["ran"] == [{"revision": "c1", "kind": "contract"}]
    assert contracted.after == "c1"
    assert kinds(engine)[-2:] == [("e1", PINNED, "expand"), ("c1", "e1", "contract")]


def test_expand_runs_an_earlier_contract_that_precedes_expand_head(
    engine: Engine, refapi_copy: Copy
) -> None:
    """Release N's contract runs at the start of release N+1's deploy."""
    site = location(refapi_copy(("e1", "add color"), ("c1", "drop color"), ("e2", "add size")))
    migrations.run(engine, "expand", location=migrations.SCRIPT_LOCATION)
    chain = migrations.load_chain(site)
    with engine.connect() as connection:
        planned = schema.plan(chain, migrations.current_revision(connection), {}, "sqlite")

    result = migrations.run(engine, "expand", location=site)

    assert planned["pending_expand"] == ["e1", "c1", "e2"]
    assert planned["pending_contract"] == []
    assert [(r.revision, r.kind) for r in result.ran] == [
        ("e1", "expand"),
        ("c1", "contract"),
        ("e2", "expand"),
    ]


def test_a_database_from_before_the_kinds_table_is_backfilled(engine: Engine) -> None:
    with engine.begin() as connection:
        command.upgrade(migrations.alembic_config(connection), CREATE_NOTES)

    result = migrations.run(engine, "expand")

    assert [r.revision for r in result.ran] == [PINNED]
    assert kinds(engine) == [(CREATE_NOTES, None, "expand"), (PINNED, CREATE_NOTES, "expand")]


@pytest.fixture
def serve_shipped(make_settings: Callable[..., Settings]) -> Iterator[Callable[[], TestClient]]:
    """The shipped release serving on the test's database, unmigrated by the fixture."""
    clients: list[TestClient] = []

    def start() -> TestClient:
        settings = make_settings()
        client = TestClient(create_app(settings, create_engine(settings.database_url)))
        clients.append(client.__enter__())
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def test_ready_on_a_schema_ahead_by_expand_revisions_and_says_which(
    engine: Engine, refapi_copy: Copy, serve_shipped: Callable[[], TestClient]
) -> None:
    migrations.run(engine, "expand", location=location(refapi_copy(("e1", "add color"))))

    ready = serve_shipped().get("/readyz")

    assert ready.status_code == 200, ready.json()
    assert ready.json()["migration"] == "e1"
    assert ready.json()["schema"] == "schema ahead by expand revisions e1 (Add notes.color)"


def test_not_ready_on_a_schema_ahead_by_a_contract_revision(
    engine: Engine,
    refapi_copy: Copy,
    serve_shipped: Callable[[], TestClient],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = location(refapi_copy(("e1", "add color"), ("c1", "drop color")))
    migrations.run(engine, "contract", location=site)
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string())

    ready = serve_shipped().get("/readyz")
    current = run_json(capsys, "current", "--json")
    planned = run_json(capsys, "plan", "--json")

    assert ready.status_code == 503
    why = (
        "schema ahead by contract revision c1 (Drop notes.color): "
        "this release's code may not work on it"
    )
    assert ready.json()["reason"] == why
    assert current["compatible"] is False
    assert current["why"] == why
    assert current["known"] is False
    assert current["ahead"] == [
        {"revision": "e1", "kind": "expand"},
        {"revision": "c1", "kind": "contract"},
    ]
    assert planned["ahead"] == current["ahead"]
    assert planned["pending"] == []
    assert all(r["applied"] for r in planned["revisions"])


def test_ready_behind_head_only_by_its_own_contract_revisions(
    engine: Engine, refapi_copy: Copy
) -> None:
    site = location(refapi_copy(("e1", "add color"), ("c1", "drop color")))
    migrations.run(engine, "expand", location=site)

    verdict = readiness(engine, migrations.load_chain(site))

    assert verdict.compatible
    assert verdict.why == (
        "schema at e1; this release's contract revisions c1 (Drop notes.color) "
        "are not applied yet (`refapi migrate contract`)"
    )


def test_not_ready_behind_expand_head(
    engine: Engine, serve_shipped: Callable[[], TestClient]
) -> None:
    with engine.begin() as connection:
        command.upgrade(migrations.alembic_config(connection), CREATE_NOTES)

    ready = serve_shipped().get("/readyz")

    assert ready.status_code == 503
    assert ready.json()["reason"] == (
        f"schema behind: at {CREATE_NOTES}, this release needs {PINNED} — "
        "run `refapi migrate expand`"
    )


def test_the_previous_release_still_writes_notes_on_the_expanded_schema(engine: Engine) -> None:
    """Release 1 (no `pinned`) inserts as it always did; the server default fills the gap."""
    migrations.run(engine, "expand")

    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO notes (text, created_at) VALUES ('from v1', CURRENT_TIMESTAMP)")
        )
        assert connection.execute(text("SELECT pinned FROM notes")).scalar_one() in (0, False)


def test_an_untraceable_database_fails_expand_with_one_line(
    engine: Engine,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    migrations.run(engine, "expand")
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    monkeypatch.setenv("DATABASE_URL", sqlite_url)

    assert main(["migrate", "expand"]) == 1

    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1] == (
        f"refapi: cannot migrate {sqlite_url}: the database is at revision f00d, which this "
        f"code does not know and cannot trace back to its head {PINNED}"
    )


def test_sql_renders_each_revision_for_postgresql_without_a_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    rendered = run_json(capsys, "sql", "--json")

    assert rendered["dialect"] == "postgresql"
    assert [
        {key: r[key] for key in ("revision", "down_revision", "kind", "message")}
        for r in rendered["revisions"]
    ] == [
        {
            "revision": CREATE_NOTES,
            "down_revision": None,
            "kind": "expand",
            "message": "Create the notes table",
        },
        {
            "revision": PINNED,
            "down_revision": CREATE_NOTES,
            "kind": "expand",
            "message": "Add notes.pinned",
        },
    ]
    first, second = (r["sql"] for r in rendered["revisions"])
    assert "CREATE TABLE notes" in first
    assert "SERIAL" in first  # PostgreSQL's rendering, not SQLite's
    assert "pinned" not in first
    assert "ALTER TABLE notes ADD COLUMN pinned BOOLEAN DEFAULT false NOT NULL;" in second
    assert "CREATE TABLE notes" not in second
    assert list(tmp_path.iterdir()) == []
    assert main(["migrate", "sql"]) == 0
    assert f"-- {PINNED} (expand): Add notes.pinned" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args", [["migrate", "--json"], ["migrate", "plan", "extra"], ["migrate", "expnad"]]
)
def test_bad_migrate_arguments_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2

    assert capsys.readouterr().err.startswith("refapi: unexpected arguments")


def test_two_runners_at_once_on_sqlite_one_runs_the_other_finds_nothing(
    sqlite_url: str, refapi_copy: Copy, tmp_path: Path
) -> None:
    site = refapi_copy(("e1", "add color"), sleep=1.0)
    env = {**os.environ, "PYTHONPATH": str(site), "DATABASE_URL": sqlite_url}
    runners = [
        subprocess.Popen(
            [sys.executable, "-m", "refapi", "migrate", "expand"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [runner.communicate(timeout=60) for runner in runners]

    assert [runner.returncode for runner in runners] == [0, 0], results
    ran = sorted(len(json.loads(out)["ran"]) for out, _ in results)
    assert ran == [0, 3]
    assert [json.loads(out)["after"] for out, _ in results] == ["e1", "e1"]
    waited = [err for _, err in results if "waiting for" in err]
    assert len(waited) == 1, results


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, MigrationSettings(2.0, 0.0, 3, 300.0)),
        (
            {
                "MIGRATE_LOCK_TIMEOUT": "0.5",
                "MIGRATE_STATEMENT_TIMEOUT": "30",
                "MIGRATE_LOCK_RETRIES": "0",
                "MIGRATE_RUNNER_WAIT": "10",
            },
            MigrationSettings(0.5, 30.0, 0, 10.0),
        ),
    ],
)
def test_migration_settings(environ: dict[str, str], expected: MigrationSettings) -> None:
    assert Settings.from_env(environ).migration == expected


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "MIGRATE_LOCK_TIMEOUT",
            "soon",
            r"^MIGRATE_LOCK_TIMEOUT='soon' is not a number of seconds",
        ),
        ("MIGRATE_STATEMENT_TIMEOUT", "-1", r"^MIGRATE_STATEMENT_TIMEOUT='-1' is not a number"),
        ("MIGRATE_LOCK_RETRIES", "2.5", r"^MIGRATE_LOCK_RETRIES='2.5' is not a count"),
        ("MIGRATE_RUNNER_WAIT", "inf", r"^MIGRATE_RUNNER_WAIT='inf' is not a number of seconds"),
    ],
)
def test_bad_migration_settings_are_one_line_errors(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({variable: value})
