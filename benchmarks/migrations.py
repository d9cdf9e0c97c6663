"""The migration phase's cost per deploy, on SQLite and on PostgreSQL, beside deploys without it.

Per database, two sandbox environments on the local engine, measured in the same run:

- *configured*: the api has a migration phase (``[services.api] migrations``). Each cycle
  deploys a release adding one expand revision (a nullable column on ``notes``, chained on the
  previous cycle's), then a release with the same revisions and only a new version: the
  baseline, which runs the phase's ``plan --json`` one-off and finds nothing to migrate.
- *unconfigured*: no migration phase; each cycle deploys a plain release (a new version only).

Timings are the ledger's, as ``history --json`` prints them: a deploy's time is ``ended -
started``, its phases are the record's ``phases`` (backup, migrate, compat are the schema's).
"Unrecorded" is the deploy's time minus the sum of its phases (observe, open the record, the
``plan`` one-off, prune); the ``plan`` one-off's cost is the configured baseline's unrecorded
time minus the unconfigured one's. No load runs; every deploy waits the same configured verify
and drain windows, which the added cost cancels out.

``python -m benchmarks migrations [--cycles N]`` writes ``reports/bench/migrations.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import environment, report
from conveyor import engine, operations
from conveyor.console import Console
from conveyor.ledger import ReleaseRecord
from testkit import sandbox
from testkit.postgres import PostgresServer, PostgresUnavailable, postgres_server, server_bindir

VERIFY = 1.0
DRAIN = 0.2
SCHEMA_PHASES = ("backup", "migrate", "compat")
SQLITE = '{ backup = "sqlite:/data/refapi.db", timeout = 60 }'
POSTGRES = '{ backup = "postgres:DATABASE_URL", timeout = 60 }'
MIGRATING = "expand revision"
BASELINE = "no new revision"
UNCONFIGURED = "no migration phase"
VARIANTS = (MIGRATING, BASELINE, UNCONFIGURED)


@dataclass
class Cycles:
    """The releases of one run's cycles (shared by both databases), derived from one build."""

    releases: environment.Releases
    head: str
    run: str = field(default_factory=lambda: secrets.token_hex(2))

    def version(self, kind: str, cycle: int) -> str:
        return f"{kind}{self.run}.{cycle}"

    def derive(self, kind: str, cycle: int, revisions: dict[str, str] | None = None) -> str:
        return self.releases.derive(self.version(kind, cycle), revisions=revisions)

    def chain(self, count: int) -> dict[str, str]:
        """``count`` expand revisions on the image's head, each adding a column to notes."""
        files, down = {}, self.head
        for i in range(1, count + 1):
            revision = f"be{i:010d}"
            files[f"{revision}_bench_c{i}.py"] = sandbox.revision_source(
                revision,
                down,
                f'op.add_column("notes", sa.Column("c{i}", sa.String(20), nullable=True))',
                message=f"add notes.c{i}",
            )
            down = revision
        return files


def prepare(client: Any, folder: Path, cycles: int) -> Cycles:
    """Build the repo's release as conveyor-test/… images, then derive every cycle's releases:
    ``bm<run>.<i>`` with revisions 1..i, ``bb<run>.<i>`` the same with a new version only,
    ``bp<run>.<i>`` with none (i = 0 is each environment's warm-up)."""
    built = environment.build(client, folder)
    made = Cycles(built, sandbox.schema_head(client, built.base["api"]["id"]))
    for i in range(cycles + 1):
        if i:
            made.derive("bm", i, made.chain(i))
        made.derive("bb", i, made.chain(i))
        made.derive("bp", i)
    return made


@dataclass(frozen=True)
class Database:
    name: str
    migrations: str
    # ``api_env`` and ``api_secrets`` for environment_toml, per environment (an env variable
    # holding the secret's value), and those variables' values.
    api: dict[str, dict[str, str]]
    secrets: dict[str, str]


def sqlite_database() -> Database:
    return Database("SQLite", SQLITE, {}, {})


def postgres_database(server: PostgresServer) -> Database:
    api, values = {}, {}
    for kind in ("configured", "unconfigured"):
        variable = f"CONVEYOR_BENCH_PG_URL_{kind.upper()}"
        values[variable] = server.create_database(f"bench_{kind}_{secrets.token_hex(3)}")
        api[kind] = {
            "api_env": 'SECRET_FILE_WAIT = "30"',
            "api_secrets": f'DATABASE_URL = {{ from = "env:{variable}", as = "file" }}',
        }
    return Database("PostgreSQL", POSTGRES, api, values)


@contextlib.contextmanager
def environment_variables(values: dict[str, str]) -> Iterator[None]:
    """The secrets' values in this process's environment (conveyor reads them there)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def timing(record: ReleaseRecord) -> dict[str, Any]:
    """A ledger record's timings, read as `history --json` gives them (started, ended, phases)."""
    data = record.as_dict()
    total = float(data["ended"]) - float(data["started"])
    phases = {name: float(seconds) for name, seconds in data["phases"].items()}
    return {
        "record": data["id"],
        "version": data["version"],
        "outcome": data["outcome"],
        "total_s": round(total, 3),
        "phases": phases,
        "unrecorded_s": round(total - sum(phases.values()), 3),
        "schema": data["schema"],
    }


def write_environment(
    folder: Path, dist: Path, migrations: str | None, api: dict[str, str]
) -> environment.BenchEnvironment:
    return environment.write_environment(
        folder,
        dist,
        verify=VERIFY,
        drain=DRAIN,
        migrations=migrations,
        api_env=api.get("api_env", 'DATABASE_URL = "sqlite:////data/refapi.db"'),
        api_secrets=api.get("api_secrets"),
    )


def measure(
    client: Any, made: Cycles, database: Database, folder: Path, cycles: int
) -> dict[str, list[dict[str, Any]]]:
    """Both environments of one database, cycle by cycle (interleaved, so drift hits all)."""
    quiet = Console(quiet=True)
    envs = {
        kind: write_environment(
            folder,
            made.releases.dist,
            database.migrations if kind == "configured" else None,
            database.api.get(kind, {}),
        )
        for kind in ("configured", "unconfigured")
    }
    names = {kind: bench.name for kind, bench in envs.items()}
    configs = {kind: bench.config for kind, bench in envs.items()}
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}

    def deploy(env: str, kind: str, cycle: int) -> dict[str, Any]:
        version = made.version(kind, cycle)
        cfg, name = configs[env], names[env]
        operations.deploy(cfg, name, version=version, out=quiet)
        record = operations.history(cfg, name)[-1]
        assert record.version == version and record.outcome == "succeeded", record
        return timing(record)

    try:
        with environment_variables(database.secrets):
            deploy("configured", "bb", 0)  # warm-up: router, volumes, the schema to head
            deploy("unconfigured", "bp", 0)
            for cycle in range(1, cycles + 1):
                runs[MIGRATING].append(deploy("configured", "bm", cycle))
                runs[BASELINE].append(deploy("configured", "bb", cycle))
                runs[UNCONFIGURED].append(deploy("unconfigured", "bp", cycle))
    finally:
        for name in names.values():
            sandbox.teardown(client, name)
    ran = [r["schema"]["api"]["ran"] for r in runs[MIGRATING]]
    assert all(len(revisions) == 1 for revisions in ran), ran  # one expand revision each
    return runs


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    summary = {}
    for variant, deploys in runs.items():
        phase = {name: p50([d["phases"].get(name, 0.0) for d in deploys]) for name in SCHEMA_PHASES}
        summary[variant] = {
            "total_p50_s": p50([d["total_s"] for d in deploys]),
            **{f"{name}_p50_s": seconds for name, seconds in phase.items()},
            "schema_p50_s": p50(
                [sum(d["phases"].get(n, 0.0) for n in SCHEMA_PHASES) for d in deploys]
            ),
            "unrecorded_p50_s": p50([d["unrecorded_s"] for d in deploys]),
        }
    baseline = summary[BASELINE]
    for variant in VARIANTS:
        summary[variant]["added_p50_s"] = summary[variant]["total_p50_s"] - baseline["total_p50_s"]
        # The same cycle's deploys side by side: less exposed to drift over the run.
        paired = zip(runs[variant], runs[BASELINE], strict=True)
        summary[variant]["added_paired_p50_s"] = p50(
            [a["total_s"] - b["total_s"] for a, b in paired]
        )
    summary[BASELINE]["plan_oneoff_p50_s"] = (
        baseline["unrecorded_p50_s"] - summary[UNCONFIGURED]["unrecorded_p50_s"]
    )
    return summary


def run(cycles: int) -> dict[str, Any]:
    client = engine.connect()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-migrations-") as tmp:
        folder = Path(tmp)
        made = prepare(client, folder, cycles)
        try:
            runs = measure(client, made, sqlite_database(), folder, cycles)
            results["SQLite"] = {"runs": runs, "summary": summarise(runs)}
            try:
                server_bindir()
            except PostgresUnavailable as exc:
                print(f"  PostgreSQL skipped: {exc} — run scripts/setup")
            else:
                with postgres_server() as server:
                    runs = measure(client, made, postgres_database(server), folder, cycles)
                results["PostgreSQL"] = {"runs": runs, "summary": summarise(runs)}
        finally:
            made.releases.remove()
    return results


def print_table(results: dict[str, Any], cycles: int) -> None:
    rows = []
    for database, result in results.items():
        for variant in VARIANTS:
            s = result["summary"][variant]
            rows.append(
                [
                    database,
                    variant,
                    s["total_p50_s"],
                    s["backup_p50_s"],
                    s["migrate_p50_s"],
                    s["compat_p50_s"],
                    s["schema_p50_s"],
                    s["unrecorded_p50_s"],
                    "-" if variant == BASELINE else f"{s['added_p50_s']:+.2f}",
                    "-" if variant == BASELINE else f"{s['added_paired_p50_s']:+.2f}",
                ]
            )
    title = (
        f"Migration phase per deploy: p50 of {cycles} deploys per row, seconds, no load "
        f"(verify {VERIFY:g} s and drain {DRAIN:g} s windows in every total)"
    )
    columns = ["database", "release", "deploy", "backup", "migrate", "compat", "schema"]
    added = ["added (p50 - p50)", "added (paired p50)"]
    print(report.table(title, [*columns, "unrecorded", *added], rows))
    print(
        "  schema = backup + migrate + compat; added = this release's deploy minus the "
        "no-new-revision one (paired: the same cycle's)."
    )
    for database, result in results.items():
        plan = result["summary"][BASELINE]["plan_oneoff_p50_s"]
        print(
            f"  {database}: the `plan --json` one-off (in every configured deploy's unrecorded "
            f"time) ≈ {plan:.2f} s"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks migrations")
    parser.add_argument("--cycles", type=int, default=5, help="deploys per variant (default 5)")
    args = parser.parse_args(argv)
    if not 1 <= args.cycles <= 50:
        parser.error("--cycles must be between 1 and 50")
    began = time.monotonic()
    results = run(args.cycles)
    print_table(results, args.cycles)
    path = report.write(
        "migrations",
        {
            "cycles": args.cycles,
            "verify_s": VERIFY,
            "drain_s": DRAIN,
            "load": None,
            "seconds": round(time.monotonic() - began, 1),
            "databases": results,
        },
    )
    print(f"  wrote {path}")
