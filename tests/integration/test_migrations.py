"""Schema-aware releases (issue 12) on a real engine and a real SQLite database, under load.

Test releases add revisions to the reference API's real chain: ``m2`` an expand revision
(a new table and column) followed by a contract one (dropping that table), ``m9-bad`` an expand
revision that fails, ``m9-slow`` one that takes seconds (to be killed in). Every deploy runs the
migration phase in a one-off container, after a backup, before the new color starts.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from conveyor import health
from testkit import sandbox
from testkit.loadgen import KeepAliveLoad, proof_load
from testkit.migrating import MigratingReleases, give
from testkit.postgres import PostgresServer, PostgresUnavailable, postgres_server, server_bindir
from testkit.steps import ok

SQLITE = '{ backup = "sqlite:/data/refapi.db", timeout = 60 }'


def failed(result: Any) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    line = str(result.stderr.strip().splitlines()[-1])
    assert line.startswith("conveyor: "), result.stderr
    return line


def served(env: Any) -> str | None:
    answer = health.probe("127.0.0.1", env.public(), "/api/version")
    return None if answer.body is None else answer.body.get("version")


def request(env: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", env.public(), timeout=10)
    try:
        payload = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if payload else {}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def post_note(env: Any, text: str) -> dict[str, Any]:
    status, body = request(env, "POST", "/api/notes", {"text": text})
    assert status == 201, body
    return dict(body)


def note_texts(env: Any) -> list[str]:
    status, body = request(env, "GET", "/api/notes")
    assert status == 200, body
    return [note["text"] for note in body]


def history(env: Any) -> list[dict[str, Any]]:
    return list(json.loads(ok(env.cli("history", "--env", env.name, "--json")).stdout))


def load_on(env: Any) -> KeepAliveLoad:
    return proof_load(env.public())


def deploy(env: Any, version: str, *extra: str) -> Any:
    return env.cli("deploy", "--env", env.name, "--version", version, *extra)


def test_expand_then_rollback_then_contract_then_restore(
    make_environment: Any, migrating: MigratingReleases
) -> None:
    """The whole life of a schema change: an expand revision deployed under load (the old
    color keeps serving on the new schema), a rollback that just switches, the contract run
    by `migrate --contract`, then a rollback across it refused up front and allowed with a
    restore that brings the data back."""
    env = make_environment(ready=20, verify=2, migrations=SQLITE)
    v1 = give(env, migrating, "m1.0.0")
    v2 = give(env, migrating, "m2.0.0", "m2")
    ok(deploy(env, v1))
    post_note(env, "written on 1.0.0")

    plan = ok(deploy(env, v2, "--dry-run")).stdout
    assert "run e1a000000001 (expand: add scratch table and notes.color)" in plan, plan
    assert "left pending c1a000000001 (contract: drop scratch)" in plan, plan

    with load_on(env) as load:
        moved = ok(deploy(env, v2))
    assert load.result.failures == 0, load.result.as_dict()
    assert "the live release m1.0.0 accepts the new schema" in moved.stdout, moved.stdout
    record = history(env)[-1]
    schema = record["schema"]["api"]
    assert [r["revision"] for r in schema["ran"]] == ["e1a000000001"]
    assert schema["pending_contract"] == ["c1a000000001"]
    assert schema["backup"]["id"] == f"{record['id']}-api" and schema["backup"]["bytes"] > 0
    assert set(record["phases"]) >= {"backup", "migrate", "compat"}
    status = ok(env.cli("status", "--env", env.name)).stdout
    assert "schema api: e1a000000001" in status and "c1a000000001" in status, status

    # Back to m1.0.0: its code accepts a schema ahead by an expand revision — a plain switch.
    dry = ok(env.cli("rollback", "--env", env.name, "--dry-run")).stdout
    assert "m1.0.0 accepts api's database" in dry, dry
    with load_on(env) as load:
        ok(env.cli("rollback", "--env", env.name))
    assert load.result.failures == 0, load.result.as_dict()
    assert served(env) == v1

    # Forward again (nothing left to migrate), then commit to the contract.
    again = ok(deploy(env, v2)).stdout
    assert "nothing to migrate" in again, again
    post_note(env, "written on 2.0.0 before the contract")
    contract_plan = ok(env.cli("migrate", "--env", env.name, "--contract", "--dry-run")).stdout
    assert "c1a000000001 (contract: drop scratch)" in contract_plan, contract_plan
    ok(env.cli("migrate", "--env", env.name, "--contract"))
    post_note(env, "written after the contract")

    # A rollback across the contract is refused before anything is touched.
    before = history(env)
    line = failed(env.cli("rollback", "--env", env.name))
    assert "refused" in line and "c1a000000001" in line, line
    assert "--restore-backup" in line and "--allow-schema-mismatch" in line, line
    assert history(env) == before and served(env) == v2

    backup_id = line.split("--restore-backup ")[1].split()[0]
    with load_on(env) as load:
        ok(env.cli("rollback", "--env", env.name, "--restore-backup", backup_id))
    assert served(env) == v1
    texts = note_texts(env)
    assert "written on 1.0.0" in texts, texts
    assert "written after the contract" not in texts, texts  # the restore's price, as said


def test_a_failing_migration_leaves_the_old_release_serving(
    make_environment: Any, migrating: MigratingReleases
) -> None:
    env = make_environment(ready=20, verify=1, migrations=SQLITE)
    v1 = give(env, migrating, "m1.0.0")
    bad = give(env, migrating, "m9.0.0-badmig", "bad")
    ok(deploy(env, v1))
    post_note(env, "kept")
    with load_on(env) as load:
        line = failed(deploy(env, bad))
    assert load.result.failures == 0, load.result.as_dict()
    assert "failed in migrate" in line and "m1.0.0 (r0001) is still serving" in line, line
    record = history(env)[-1]
    assert record["outcome"] == "failed" and record["failed_phase"] == "migrate"
    assert record["schema"]["api"]["outcome"] == "migration-failed"
    assert "no_such_function" in record["schema"]["api"]["error_tail"]
    assert served(env) == v1 and "kept" in note_texts(env)
    names = [c.name for c in env_containers(env)]
    assert not any("-migrate-" in n for n in names), names  # the one-off is gone


def test_an_expand_step_never_runs_a_contract_the_live_release_does_not_know(
    make_environment: Any, migrating: MigratingReleases
) -> None:
    """A contract revision slipped into the expand step (what the lint forbids): refused before
    the backup, since the live release's recorded chain does not know it. Nothing changes."""
    env = make_environment(ready=20, verify=1, migrations=SQLITE)
    v1 = give(env, migrating, "m1.0.0")
    bad = give(env, migrating, "m9.0.2-contractfirst", "contract-first")
    ok(deploy(env, v1))
    with load_on(env) as load:
        line = failed(deploy(env, bad))
    assert load.result.failures == 0, load.result.as_dict()
    assert "contract revision c2f000000001" in line and "does not know" in line, line
    record = history(env)[-1]
    assert record["failed_phase"] == "migrate" and record["schema"]["api"]["backup"] is None
    assert served(env) == v1
    assert health.probe("127.0.0.1", env.service_port("api", "blue"), "/readyz").status == 200


def test_a_live_release_that_refuses_the_new_schema_stops_the_deploy(
    make_environment: Any, migrating: MigratingReleases
) -> None:
    """The compat phase, for a live release whose chain no record knows (deployed before
    conveyor ran its migrations, migrating on start): after the expand step it must still pass
    readiness. Here it does not; the deploy stops before any new color starts, says how to put
    the schema back, and the restore does."""
    env = make_environment(ready=20, verify=1)  # no [migrations]: the api migrates on start
    v1 = give(env, migrating, "m1.0.0")
    bad = give(env, migrating, "m9.0.2-contractfirst", "contract-first")
    ok(deploy(env, v1))
    post_note(env, "kept")
    adopt = env.config_path.read_text(encoding="utf-8")
    adopt = adopt.replace(
        'kind = "python-service"',
        'kind = "python-service"\nmigrate = ' + json.dumps(sandbox.MIGRATE_COMMAND),
        1,
    )
    adopt = adopt.replace(
        f'volumes = {{ "conveyor-{env.name}-api-data" = "/data" }}\n',
        f'volumes = {{ "conveyor-{env.name}-api-data" = "/data" }}\nmigrations = {SQLITE}\n',
    )
    env.config_path.write_text(adopt, encoding="utf-8")
    with load_on(env) as load:
        line = failed(deploy(env, bad))
    assert load.result.failures == 0, load.result.as_dict()
    assert "failed in compat" in line and "fails on the new schema" in line, line
    assert f"invoke restore --env {env.name} --backup r0002-api" in line, line
    assert not [c.name for c in env_containers(env) if "-green-" in c.name]  # none started
    assert served(env) == v1
    assert health.probe("127.0.0.1", env.service_port("api", "blue"), "/readyz").status == 503

    ok(env.cli("restore", "--env", env.name, "--backup", "r0002-api", "--yes"))
    assert health.probe("127.0.0.1", env.service_port("api", "blue"), "/readyz").status == 200
    assert note_texts(env) == ["kept"]


def env_containers(env: Any) -> list[Any]:
    client = docker.from_env()
    return list(client.containers.list(all=True, filters={"label": f"conveyor.env={env.name}"}))


def test_killed_during_the_migration_the_next_deploy_converges(
    make_environment: Any, migrating: MigratingReleases, crash: Any
) -> None:
    """SIGKILL while the migration's one-off container runs: the next deploy waits for it,
    closes the dead run's record and finds the schema already migrated (run exactly once)."""
    env = make_environment(ready=20, verify=1, migrations=SQLITE)
    v1 = give(env, migrating, "m1.0.0")
    slow = give(env, migrating, "m9.0.1-slowmig", "slow")
    ok(deploy(env, v1))
    # Killed 3 s into the 8 s revision: its one-off container runs on without the deploy.
    crash.kill_at(env, "migrate", "deploy", "--env", env.name, "--version", slow, after=3)
    assert served(env) == v1
    with load_on(env) as load:
        result = ok(deploy(env, slow))
    assert load.result.failures == 0, load.result.as_dict()
    assert served(env) == slow
    records = history(env)
    assert [r["outcome"] for r in records] == ["succeeded", "interrupted", "succeeded"], records
    assert "left by an interrupted run" in result.stdout, result.stdout
    # The leftover finished the revision; the next deploy found nothing left to run.
    assert "nothing to migrate" in result.stdout, result.stdout
    assert records[-1]["schema"]["api"]["after"] == "e1510e000001"
    assert not [c.name for c in env_containers(env) if "-migrate-" in c.name]


# --- PostgreSQL: a real server on 127.0.0.1, its URL a file secret ---------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    try:
        server_bindir()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL tests cannot run: {exc} — run scripts/setup")
        pytest.skip(str(exc))
    with postgres_server() as server:
        yield server


def postgres_environment(make_environment: Any, postgres: PostgresServer, **limits: Any) -> Any:
    """An environment whose api reads its database URL from a secret delivered as a file."""
    url = postgres.create_database(f"conveyor_{secrets.token_hex(4)}")
    settings = {"backup": "postgres:DATABASE_URL", "timeout": 60, **limits}
    migrations = "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in settings.items()) + " }"
    env = make_environment(
        ready=20,
        verify=1,
        migrations=migrations,
        api_env='SECRET_FILE_WAIT = "30"',
        api_secrets='DATABASE_URL = { from = "env:TEST_PG_URL", as = "file" }',
    )
    env.secret_env = {"TEST_PG_URL": url}
    env.database = url.rsplit("/", 1)[1]
    return env


def pg_cli(env: Any, *argv: str) -> Any:
    return env.cli(*argv, env=env.secret_env)


def test_postgres_expand_under_load_then_backup_and_restore_round_trip(
    make_environment: Any, migrating: MigratingReleases, postgres: PostgresServer
) -> None:
    env = postgres_environment(make_environment, postgres)
    v1 = give(env, migrating, "m1.0.0")
    v2 = give(env, migrating, "m2.0.0", "m2")
    ok(pg_cli(env, "deploy", "--env", env.name, "--version", v1))
    post_note(env, "before 2.0.0")
    with load_on(env) as load:
        ok(pg_cli(env, "deploy", "--env", env.name, "--version", v2))
    assert load.result.failures == 0, load.result.as_dict()
    record = history(env)[-1]
    backup = record["schema"]["api"]["backup"]
    assert backup["kind"] == "postgres" and backup["bytes"] > 0, backup
    columns = postgres.psql(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'notes'",
        database=env.database,
    ).stdout.split()
    assert "color" in columns
    post_note(env, "after 2.0.0")

    dry = ok(pg_cli(env, "restore", "--env", env.name, "--backup", backup["id"], "--dry-run"))
    assert "is lost" in dry.stdout, dry.stdout
    assert "after 2.0.0" in note_texts(env)
    ok(pg_cli(env, "restore", "--env", env.name, "--backup", backup["id"]))
    tables = postgres.psql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'", database=env.database
    ).stdout.split()
    assert "scratch" not in tables, tables  # all of the backup's schema, nothing newer
    revision = postgres.psql("SELECT version_num FROM alembic_version", database=env.database)
    assert revision.stdout.strip() == migrating.head
    texts = [
        r
        for r in postgres.psql("SELECT text FROM notes", database=env.database).stdout.splitlines()
    ]
    assert texts == ["before 2.0.0"], texts
    events = ok(pg_cli(env, "status", "--env", env.name, "--json"))
    assert json.loads(events.stdout)["schema"]["api"]["after"] == migrating.head  # restored


def test_a_table_lock_held_elsewhere_makes_the_migration_give_up_cleanly(
    make_environment: Any, migrating: MigratingReleases, postgres: PostgresServer
) -> None:
    """A long transaction reads notes; the migration's ALTER TABLE queues behind it for
    lock_timeout, retries, gives up: the deploy fails cleanly, the old release serves, and a
    third session's reads never wait longer than lock_timeout behind the migration's request."""
    env = postgres_environment(make_environment, postgres, lock_timeout=0.5, lock_retries=2)
    v1 = give(env, migrating, "m1.0.0")
    v2 = give(env, migrating, "m2.0.0", "m2")
    ok(pg_cli(env, "deploy", "--env", env.name, "--version", v1))
    post_note(env, "kept")
    holder = postgres.connect(autocommit=False, database=env.database)
    holder.execute("SELECT count(*) FROM notes").fetchall()  # ACCESS SHARE, held open
    waits: list[float] = []
    stop = threading.Event()

    def read_notes() -> None:
        reader = postgres.connect(database=env.database)
        try:
            while not stop.is_set():
                began = time.monotonic()
                reader.execute("SELECT count(*) FROM notes").fetchall()
                waits.append(time.monotonic() - began)
                time.sleep(0.05)
        finally:
            reader.close()

    reading = threading.Thread(target=read_notes)
    reading.start()
    try:
        with load_on(env) as load:
            line = failed(pg_cli(env, "deploy", "--env", env.name, "--version", v2))
    finally:
        stop.set()
        reading.join(timeout=30)
        holder.rollback()
        holder.close()
    assert load.result.failures == 0, load.result.as_dict()
    assert "failed in migrate" in line and "m1.0.0 (r0001) is still serving" in line, line
    assert "lock" in line.lower(), line
    assert served(env) == v1 and note_texts(env) == ["kept"]
    assert waits and max(waits) < 0.5 + 0.5, f"a reader waited {max(waits):.2f} s"
    record = history(env)[-1]
    assert record["failed_phase"] == "migrate" and "lock" in record["schema"]["api"]["error_tail"]
