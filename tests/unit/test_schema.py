"""The schema's side of a release, without a daemon: deploy.toml's migration settings, the
protocol's answers, the rollback decision and what status and history say."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from conveyor import backups, config, schemaphase
from conveyor.console import Console
from conveyor.errors import ConfigError, MigrationFailed
from conveyor.ledger import ReleaseRecord
from conveyor.operations import schema_lines
from conveyor.releases import Release, ServiceImage
from conveyor.schema import Acceptance, Revision, SchemaPlan, _last_json

ROOT = Path(__file__).resolve().parents[2]

PLAN = {
    "database": "sqlite",
    "current": "b",
    "head": "d",
    "expand_head": "c",
    "known": True,
    "revisions": [
        {"revision": "a", "down_revision": None, "kind": "expand", "message": "notes"},
        {"revision": "b", "down_revision": "a", "kind": "expand", "message": "pinned"},
        {"revision": "c", "down_revision": "b", "kind": "expand", "message": "add color"},
        {"revision": "d", "down_revision": "c", "kind": "contract", "message": "drop legacy"},
    ],
    "pending": ["c", "d"],
    "pending_expand": ["c"],
    "pending_contract": ["d"],
    "ahead": [],
}


def parse(data: dict[str, Any]) -> config.Config:
    return config.parse(data, Path("deploy.toml"))


def test_the_shipped_file_migrates_staging_on_sqlite_and_production_on_postgres() -> None:
    cfg = config.load(ROOT / "deploy.toml")
    staging = cfg.environment("staging").services["api"].migrations
    production = cfg.environment("production").services["api"].migrations
    assert staging is not None and production is not None
    assert staging.command == "python3 -m refapi migrate" == cfg.images["api"].migrate
    assert (staging.backup_kind, staging.backup_target) == ("sqlite", "/data/refapi.db")
    assert (production.backup_kind, production.backup_target) == ("postgres", "DATABASE_URL")
    assert production.environment() == {
        "MIGRATE_LOCK_TIMEOUT": "2",
        "MIGRATE_STATEMENT_TIMEOUT": "300",
        "MIGRATE_LOCK_RETRIES": "3",
    }
    assert cfg.environment("staging").services["web"].migrations is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["environments"]["staging"]["services"]["api"].pop("migrations"),
            r"\[environments.staging.services.api.migrations.backup\]: required: 'sqlite:",
        ),
        (
            lambda d: d["environments"]["staging"]["services"]["api"]["migrations"].update(
                backup="mysql:/x"
            ),
            r"migrations.backup\]: required",
        ),
        (
            lambda d: d["environments"]["staging"]["services"]["web"].update(
                migrations={"backup": "none"}
            ),
            r"image 'web' declares no migrate command",
        ),
        (
            lambda d: d["environments"]["staging"]["services"]["api"]["migrations"].update(
                command="x"
            ),
            r"declared once, on \[images.api\] migrate",
        ),
        (
            lambda d: d["environments"]["production"]["services"]["api"]["migrations"].update(
                backup="postgres:PG_URL"
            ),
            r"backup names PG_URL, which is neither an env key nor a secret",
        ),
        (
            lambda d: d["environments"]["staging"].update(
                hosts=[{"name": "a", "docker": "local"}, {"name": "b", "docker": "local"}]
            ),
            r"SQLite on 2 hosts is 2 databases",
        ),
    ],
)
def test_a_wrong_migration_setting_says_what_to_write(
    data: dict[str, Any], change: Any, message: str
) -> None:
    broken = copy.deepcopy(data)
    change(broken)
    with pytest.raises(ConfigError, match=message):
        parse(broken)


def test_a_plan_reads_what_expand_will_run_and_what_stays_pending() -> None:
    plan = SchemaPlan.from_json(PLAN)
    assert [r.describe() for r in plan.will_run()] == ["c (expand: add color)"]
    assert plan.pending_contract == ("d",)
    lines = schemaphase.describe_plan(
        config.load(ROOT / "deploy.toml").environments["staging"].services["api"], plan
    )
    assert lines[0] == "  api: schema b (sqlite); 1 revision(s) to run before the switch"
    assert lines[1:] == [
        "    run c (expand: add color)",
        "    left pending d (contract: drop legacy) (until `invoke migrate --contract` or the "
        "next deploy)",
    ]


def test_an_answer_that_is_not_the_protocol_is_one_clear_error() -> None:
    with pytest.raises(MigrationFailed, match="not conveyor's protocol"):
        SchemaPlan.from_json({"current": "a"})
    with pytest.raises(MigrationFailed, match="printed no JSON answer"):
        _last_json("INFO  [alembic] running\n", "expand")
    assert _last_json('noise\n{"after": "c"}\n', "expand") == {"after": "c"}


def record(rid: str, started: float, **extra: Any) -> ReleaseRecord:
    return ReleaseRecord(
        id=rid,
        environment="staging",
        kind="deploy",
        version=f"v{rid}",
        commit="0" * 40,
        services={},
        who="t",
        started=started,
        outcome="succeeded",
        **extra,
    )


def backup(rid: str, taken: float) -> dict[str, Any]:
    return {
        "id": f"{rid}-api",
        "service": "api",
        "kind": "sqlite",
        "file": f"/backups/{rid}-api.sqlite",
        "bytes": 8192,
        "taken": taken,
        "release": rid,
    }


def test_a_rollback_across_a_contract_is_refused_naming_the_backup_and_the_override() -> None:
    target = record("r0001", 100.0)
    newer = record("r0002", 200.0, schema={"api": {"after": "c", "backup": backup("r0002", 200)}})
    records = [target, newer]
    fine = {"api": Acceptance("c", True, "schema ahead by expand revisions c")}
    assert schemaphase.refusal("staging", target, fine, records) is None
    refused = {
        "api": Acceptance("d", False, "ahead by contract d", (Revision("d", "contract", "drop"),))
    }
    error = schemaphase.refusal("staging", target, refused, records)
    assert error is not None
    assert str(error).startswith(
        "rollback to r0001 (vr0001) refused: the database is at d, ahead of it by contract "
        "revision d (contract: drop) — --restore-backup r0002-api (taken "
    )
    assert str(error).endswith(
        "or --allow-schema-mismatch to try anyway (the target's readiness still decides)"
    )


def test_status_and_history_show_the_schema_from_deploys_and_contract_runs() -> None:
    env = config.load(ROOT / "deploy.toml").environment("staging")
    deployed = record(
        "r0002",
        200.0,
        schema={
            "api": {
                "database": "sqlite",
                "before": "b",
                "after": "c",
                "ran": [{"revision": "c", "kind": "expand"}],
                "pending_contract": ["d"],
                "backup": backup("r0002", 200),
            }
        },
    )
    assert deployed.migration_summary() == "api: b → c ran c (expand); backup r0002-api"
    latest = schemaphase.live_schema([deployed])
    assert schema_lines(env, latest) == ["  schema api: c (sqlite, by r0002); contract pending: d"]
    contracted = {"kind": "migrated", "at": 300.0, "service": "api", "step": "contract"}
    contracted |= {"before": "c", "after": "d", "ran": [], "backup": backup("r0002c", 300)}
    latest = schemaphase.live_schema([deployed], [contracted])
    assert schema_lines(env, latest) == ["  schema api: d (by contract)"]
    assert [b.id for b in schemaphase.recorded_backups([deployed], [contracted])] == [
        "r0002-api",
        "r0002c-api",
    ]


def test_the_refusal_names_the_backup_the_contract_run_itself_took() -> None:
    """Not an older one: a deploy's own backup is taken seconds after its record starts."""
    target = record("r0001", 100.0)
    expanded = record(
        "r0002", 200.0, schema={"api": {"after": "c", "backup": backup("r0002", 203)}}
    )
    contracted = record(
        "r0003",
        300.0,
        schema={
            "api": {
                "after": "e",
                "ran": [{"revision": "d", "kind": "contract"}, {"revision": "e", "kind": "expand"}],
                "backup": backup("r0003", 304),
            }
        },
    )
    records = [target, expanded, contracted]
    found = schemaphase.backup_before_contract(records, [], target, "api")
    assert found is not None and found.id == "r0003-api"
    pruned = [{"kind": "backups-pruned", "ids": ["r0003-api"]}]
    assert [b.id for b in schemaphase.recorded_backups(records, pruned)] == ["r0002-api"]


def test_a_release_knows_its_chain_through_the_record_that_deployed_it() -> None:
    chain = [{"revision": "a", "kind": "expand"}, {"revision": "b", "kind": "expand"}]
    deployed = record("r0001", 100.0, schema={"api": {"after": "b", "chain": chain}})
    rolled_back_to = record("r0003", 300.0, rollback_to="r0001")
    rolled_back_to.version = deployed.version
    assert schemaphase.release_chain([deployed, rolled_back_to], rolled_back_to, "api") == {
        "a",
        "b",
    }
    assert schemaphase.release_chain([deployed], record("r0009", 9.0), "api") is None


def test_an_expand_step_never_runs_a_contract_the_live_release_does_not_know() -> None:
    env = config.load(ROOT / "deploy.toml").environment("staging")
    phase = schemaphase.SchemaPhase(env, primary=None, targets=[], out=None)  # type: ignore[arg-type]
    plan = SchemaPlan.from_json(
        PLAN
        | {
            "revisions": [*PLAN["revisions"][:2], {"revision": "x", "kind": "contract"}],
            "pending_expand": ["x"],
        }
    )
    live = record("r0002", 200.0)
    with pytest.raises(schemaphase.SchemaFailed, match=r"contract revision x .*does not know"):
        phase.refuse_unknown_contracts(env.services["api"], plan, live, {"a", "b"})
    phase.refuse_unknown_contracts(env.services["api"], plan, live, {"a", "b", "x"})
    phase.refuse_unknown_contracts(env.services["api"], plan, live, None)  # unknown: compat


def test_status_after_a_restore_shows_the_restored_schema() -> None:
    deployed = record("r0002", 200.0, schema={"api": {"after": "c", "database": "sqlite"}})
    restored = {"kind": "restored", "at": 300.0, "backup": backup("r0002", 200) | {"revision": "b"}}
    latest = schemaphase.live_schema([deployed], [restored])
    assert latest["api"]["after"] == "b" and latest["api"]["by"] == "restore of r0002-api"


def test_a_backup_ahead_by_expands_is_restorable_one_past_a_contract_is_not() -> None:
    target_chain = [{"revision": "a", "kind": "expand"}]
    later_chain = [*target_chain, {"revision": "b", "kind": "expand"}]
    later_chain += [{"revision": "c", "kind": "contract"}, {"revision": "d", "kind": "expand"}]
    target = record("r0001", 100.0, schema={"api": {"after": "a", "chain": target_chain}})
    later = record("r0002", 200.0, schema={"api": {"after": "d", "chain": later_chain}})

    def at(revision: str) -> backups.Backup:
        return backups.Backup.from_dict(backup("r0002", 200) | {"revision": revision})

    assert schemaphase.contract_between([target, later], target, at("a")) is None
    assert schemaphase.contract_between([target, later], target, at("b")) is None
    assert schemaphase.contract_between([target, later], target, at("d")) == "c"


def test_a_release_the_ledger_saw_migrated_skips_the_plan_one_off() -> None:
    """The ledger last saw the database at this release's expand head: nothing to run, and no
    container is started to find that out (``primary`` is None here: it is never touched)."""
    env = config.load(ROOT / "deploy.toml").environment("staging")
    chain = (("a", "expand"), ("b", "expand"), ("c", "contract"))
    image = ServiceImage("api", "sha256:x", "ref", "2.0")
    release = Release("2.0", "0" * 40, False, {"api": image, "web": image}, "dist/2.0")
    release = dataclasses.replace(release, chains={"api": chain})
    assert release.expand_head("api") == "b" and release.expand_head("web") is None
    phase = schemaphase.SchemaPhase(env, primary=None, targets=[], out=Console(quiet=True))  # type: ignore[arg-type]
    deploying = record("r0003", 300.0)
    phase.run(release, deploying, None, {}, lambda: None, ledger_schema=lambda _service: "b")
    assert deploying.schema["api"]["planned"] == "from the ledger"
    assert deploying.schema["api"]["after"] == "b" and deploying.schema["api"]["ran"] == []
    assert [r["revision"] for r in deploying.schema["api"]["chain"]] == ["a", "b", "c"]
