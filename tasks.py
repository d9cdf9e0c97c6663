"""Operate conveyor environments: ``invoke --list`` shows the tasks.

Each task parses its options and hands them to the library's single edge
(``conveyor.cli``), which prints the result and turns errors into one line and an exit code.
"""

from __future__ import annotations

from pathlib import Path

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from conveyor import cli

WORKFLOWS = Path(__file__).resolve().parent / ".github" / "workflows"


def _conveyor(*argv: str | None) -> None:
    code = cli.main([arg for arg in argv if arg is not None])
    if code:
        raise Exit(code=code)


def _flag(enabled: bool, name: str) -> str | None:
    return name if enabled else None


def _option(name: str, value: object) -> tuple[str, ...]:
    """``--name value``, or nothing when the task was not given it.

    Value options default to None here, so invoke hands them over as text and ``cli`` parses
    them: their types and defaults are declared once, in ``cli.build_parser``. (A default shown
    in a signature, like promote's environments, must equal the CLI's:
    tests/unit/test_cli_tasks_parity.py checks it.)
    """
    return (name, str(value)) if value else ()


def _options(*pairs: tuple[str, object]) -> tuple[str, ...]:
    return tuple(part for name, value in pairs for part in _option(name, value))


def _repeated(name: str, values: list[str] | None) -> tuple[str, ...]:
    return tuple(part for value in values or () for part in (name, value))


@task(
    help={
        "env": "environment from deploy.toml",
        "version": "release version (default: HEAD's)",
        "dry_run": "print the plan and change nothing",
        "lock_wait": "seconds to wait for another deploy's lock (default: fail at once)",
        "message": "why (recorded with the lock)",
    }
)
def deploy(
    c: Context,
    env: str,
    *,
    version: str | None = None,
    dry_run: bool = False,
    lock_wait: str | None = None,
    message: str | None = None,
) -> None:
    """Blue-green deploy a release to an environment, with health checks and auto-rollback."""
    _conveyor(
        "deploy",
        "--env",
        env,
        *_option("--version", version),
        _flag(dry_run, "--dry-run"),
        *_options(("--lock-wait", lock_wait), ("--message", message)),
    )


@task(
    help={
        "env": "environment",
        "to": "release id or version to return to (default: the last verified one before)",
        "dry_run": "print the plan (and the schema decision) and change nothing",
        "lock_wait": "seconds to wait for another deploy's lock (default: fail at once)",
        "restore_backup": "restore this database backup first (writes since it are lost)",
        "allow_schema_mismatch": "switch even though the target refuses the database's schema",
    }
)
def rollback(
    c: Context,
    env: str,
    *,
    to: str | None = None,
    dry_run: bool = False,
    lock_wait: str | None = None,
    restore_backup: str | None = None,
    allow_schema_mismatch: bool = False,
) -> None:
    """Switch an environment back to the previous (or a chosen) release."""
    _conveyor(
        "rollback",
        "--env",
        env,
        *_option("--to", to),
        _flag(dry_run, "--dry-run"),
        *_options(("--lock-wait", lock_wait), ("--restore-backup", restore_backup)),
        _flag(allow_schema_mismatch, "--allow-schema-mismatch"),
    )


@task(
    help={
        "env": "environment",
        "contract": "run the live release's pending contract (destructive) revisions",
        "dry_run": "say what it would run and change nothing",
        "lock_wait": "seconds to wait for another deploy's lock (default: fail at once)",
    }
)
def migrate(
    c: Context,
    env: str,
    contract: bool = False,
    dry_run: bool = False,
    lock_wait: str | None = None,
) -> None:
    """Run the live release's pending contract revisions, after a backup (recorded)."""
    _conveyor(
        "migrate",
        "--env",
        env,
        _flag(contract, "--contract"),
        _flag(dry_run, "--dry-run"),
        *_option("--lock-wait", lock_wait),
    )


@task(
    help={
        "env": "environment",
        "backup": "backup id (invoke history --env X, or the deploy's output)",
        "dry_run": "say what it would restore, and what would be lost",
        "lock_wait": "seconds to wait for another deploy's lock (default: fail at once)",
        "yes": "do not ask for confirmation on a terminal",
    }
)
def restore(
    c: Context,
    env: str,
    backup: str,
    *,
    dry_run: bool = False,
    lock_wait: str | None = None,
    yes: bool = False,
) -> None:
    """Put a database backup back, under the lock (writes since it are lost; recorded)."""
    _conveyor(
        "restore",
        "--env",
        env,
        "--backup",
        backup,
        _flag(dry_run, "--dry-run"),
        *_option("--lock-wait", lock_wait),
        _flag(yes, "--yes"),
    )


@task(
    help={
        "env": "environment",
        "dry_run": "say what it would do and change nothing",
        "lock_wait": "seconds to wait for another deploy's lock (default: fail at once)",
    }
)
def recover(c: Context, env: str, dry_run: bool = False, lock_wait: str | None = None) -> None:
    """After a crashed deploy: put every router back on the verified release, stop leftovers."""
    _conveyor(
        "recover", "--env", env, _flag(dry_run, "--dry-run"), *_option("--lock-wait", lock_wait)
    )


@task(help={"env": "environment", "json": "machine-readable output"})
def flags(c: Context, env: str, json: bool = False) -> None:
    """List an environment's feature flags: state, variants, who gets the on-variant."""
    _conveyor("flags", "--env", env, _flag(json, "--json"))


@task(
    help={
        "env": "environment",
        "name": "the flag",
        "on": "everyone gets the on-variant",
        "off": "nobody gets the on-variant",
        "percent": "N% of people get it",
        "image": "the image whose flags hold NAME (default: found)",
        "dry_run": "say what changes, change nothing",
        "lock_wait": "seconds to wait for another deploy's lock (default: fail at once)",
    }
)
def flag_set(
    c: Context,
    env: str,
    name: str,
    *,
    on: bool = False,
    off: bool = False,
    percent: str | None = None,
    image: str | None = None,
    dry_run: bool = False,
    lock_wait: str | None = None,
) -> None:
    """Turn a flag on, off or on for a percentage of people, without a deploy (audited)."""
    _conveyor(
        "flag-set",
        "--env",
        env,
        name,
        _flag(on, "--on"),
        _flag(off, "--off"),
        *_option("--percent", percent),
        *_option("--image", image),
        _flag(dry_run, "--dry-run"),
        *_option("--lock-wait", lock_wait),
    )


@task(
    help={
        "env": "environment",
        "name": "the flag",
        "stages": "percentages in turn (default: 1,5,25,50,100)",
        "hold": "seconds each stage is held and judged (default: 600)",
        "abort": "ask the running ramp to stop (back to where it began)",
        "dry_run": "say what it would do, change nothing",
        "lock_wait": "seconds to wait for another deploy's lock (default: fail at once)",
    }
)
def flag_ramp(
    c: Context,
    env: str,
    name: str,
    *,
    stages: str | None = None,
    hold: str | None = None,
    abort: bool = False,
    dry_run: bool = False,
    lock_wait: str | None = None,
) -> None:
    """Raise a flag's share in stages, each held and judged on vs off; off at once on errors."""
    _conveyor(
        "flag-ramp",
        "--env",
        env,
        name,
        *_option("--stages", stages),
        *_option("--hold", hold),
        _flag(abort, "--abort"),
        _flag(dry_run, "--dry-run"),
        *_option("--lock-wait", lock_wait),
    )


@task(help={"env": "environment", "json": "machine-readable output"})
def rollout(c: Context, env: str, json: bool = False) -> None:
    """Show a canary rollout: the live weights read from each router, its step, every verdict."""
    _conveyor("rollout", "--env", env, _flag(json, "--json"))


_STEER_HELP = {
    "env": "environment",
    "dry_run": "say what it would do, change nothing",
    "wait": "seconds to wait for the rollout to answer (default: 120)",
}


@task(help=_STEER_HELP)
def rollout_promote(c: Context, env: str, dry_run: bool = False, wait: str | None = None) -> None:
    """Finish a canary rollout now: the rest of the traffic, then the verify window."""
    _conveyor(
        "rollout-promote", "--env", env, _flag(dry_run, "--dry-run"), *_option("--wait", wait)
    )


@task(help=_STEER_HELP)
def rollout_abort(c: Context, env: str, dry_run: bool = False, wait: str | None = None) -> None:
    """Abort a canary rollout in any state: stable color back everywhere, canary stopped."""
    _conveyor("rollout-abort", "--env", env, _flag(dry_run, "--dry-run"), *_option("--wait", wait))


@task(
    help={
        "env": "environment",
        "json": "machine-readable output",
        "stats": "memory and CPU of the warm release (two engine samples)",
    }
)
def status(c: Context, env: str, json: bool = False, stats: bool = False) -> None:
    """Show what runs in an environment: live color, versions, health, lock, leftovers."""
    _conveyor("status", "--env", env, _flag(json, "--json"), _flag(stats, "--stats"))


@task(
    help={
        "env": "environment",
        "bind": "where the front listens (default: *:80)",
        "out": "write the config to this file (default: print it)",
    }
)
def front(c: Context, env: str, bind: str | None = None, out: str | None = None) -> None:
    """Write the HAProxy config of a load balancer in front of every host's router."""
    _conveyor("front", "--env", env, *_options(("--bind", bind), ("--out", out)))


@task(
    help={
        "env": "environment",
        "json": "machine-readable output",
        "limit": "show at most this many records, newest first (default: 50)",
    }
)
def history(c: Context, env: str, json: bool = False, limit: str | None = None) -> None:
    """Show the environment's release ledger: who deployed what, when, with what outcome."""
    _conveyor("history", "--env", env, _flag(json, "--json"), *_option("--limit", limit))


@task(
    help={
        "env": "environment",
        "force": "remove the lock even though its deploy is alive (recorded in the ledger)",
    }
)
def unlock(c: Context, env: str, force: bool = False) -> None:
    """Remove an environment's stale deploy lock; a live one only with --force (recorded)."""
    _conveyor("unlock", "--env", env, _flag(force, "--force"))


@task(
    help={
        "from_": "source environment",
        "to": "target environment",
        "dry_run": "print the plan and change nothing",
        "lock_wait": "seconds to wait for another deploy's lock (default: fail at once)",
    }
)
def promote(
    c: Context,
    from_: str = "staging",
    to: str = "production",
    dry_run: bool = False,
    lock_wait: str | None = None,
) -> None:
    """Deploy the exact image digests live in one environment to the next."""
    _conveyor(
        "promote",
        "--from",
        from_,
        "--to",
        to,
        _flag(dry_run, "--dry-run"),
        *_option("--lock-wait", lock_wait),
    )


@task(
    help={
        "env": "environment",
        "release": "release key printed by `promote --dry-run`, or ENV:RELEASE-ID",
        "note": "why (recorded with the approval)",
    }
)
def approve(c: Context, env: str, release: str, note: str | None = None) -> None:
    """Approve one release (bound to its image digests) for a gated environment."""
    _conveyor("approve", "--env", env, "--release", release, *_option("--note", note))


@task(
    help={
        "env": "environment",
        "output": "folder to write index.html into (default: reports/deploy)",
        "ledger": "read `history --json` output from this file instead of the engine",
    }
)
def report(c: Context, env: str, output: str | None = None, ledger: str | None = None) -> None:
    """Write the deployment report (frequency, failure rate, time to restore) as HTML."""
    _conveyor("report", "--env", env, *_options(("--output", output), ("--ledger", ledger)))


@task(
    iterable=["changed"],
    help={
        "event": "GitHub event: push (default), pull_request, schedule, workflow_dispatch, …",
        "ref": "the pushed ref, or the branch a pull request targets (default: refs/heads/main)",
        "changed": "a changed file, for `paths` filters (repeatable; else assumed to match)",
        "workflows": "folder of workflow files (default: this repository's .github/workflows)",
    },
)
def ci_plan(
    c: Context,
    event: str | None = None,
    ref: str | None = None,
    changed: list[str] | None = None,
    workflows: str | None = None,
) -> None:
    """Show the GitHub jobs an event would run, in order, with their commands (no GitHub needed)."""
    _conveyor(
        "ci-plan",
        *_options(("--event", event), ("--ref", ref)),
        *_repeated("--changed", changed),
        "--workflows",
        workflows or str(WORKFLOWS),
    )
