"""Operate conveyor environments: ``invoke --list`` shows the tasks.

Each task parses its options and hands them to the library's single edge
(``conveyor.cli``), which prints the result and turns errors into one line and an exit code.
"""

from __future__ import annotations

from pathlib import Path

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from conveyor import ciplan, cli
from conveyor.errors import ConveyorError

WORKFLOWS = Path(__file__).resolve().parent / ".github" / "workflows"


def _conveyor(*argv: str | None) -> None:
    code = cli.main([arg for arg in argv if arg is not None])
    if code:
        raise Exit(code=code)


def _flag(enabled: bool, name: str) -> str | None:
    return name if enabled else None


def _option(name: str, value: object) -> tuple[str, ...]:
    return (name, str(value)) if value else ()


@task(
    help={
        "env": "environment from deploy.toml",
        "version": "release version (default: HEAD's)",
        "dry_run": "print the plan and change nothing",
        "lock_wait": "seconds to wait for another deploy's lock (default: fail at once)",
    }
)
def deploy(
    c: Context, env: str, version: str | None = None, dry_run: bool = False, lock_wait: float = 0
) -> None:
    """Blue-green deploy a release to an environment, with health checks and auto-rollback."""
    _conveyor(
        "deploy",
        "--env",
        env,
        *_option("--version", version),
        _flag(dry_run, "--dry-run"),
        *_option("--lock-wait", lock_wait),
    )


@task(
    help={
        "env": "environment",
        "to": "version to return to (default: the previous one)",
        "dry_run": "print the plan and change nothing",
        "lock_wait": "seconds to wait for another deploy's lock (default: fail at once)",
    }
)
def rollback(
    c: Context, env: str, to: str | None = None, dry_run: bool = False, lock_wait: float = 0
) -> None:
    """Switch an environment back to the previous (or a chosen) release."""
    _conveyor(
        "rollback",
        "--env",
        env,
        *_option("--to", to),
        _flag(dry_run, "--dry-run"),
        *_option("--lock-wait", lock_wait),
    )


@task(help={"env": "environment", "json": "machine-readable output"})
def status(c: Context, env: str, json: bool = False) -> None:
    """Show what runs in an environment: live color, versions, health, lock, leftovers."""
    _conveyor("status", "--env", env, _flag(json, "--json"))


@task(help={"env": "environment", "json": "machine-readable output"})
def history(c: Context, env: str, json: bool = False) -> None:
    """Show the environment's release ledger: who deployed what, when, with what outcome."""
    _conveyor("history", "--env", env, _flag(json, "--json"))


@task(help={"env": "environment"})
def unlock(c: Context, env: str) -> None:
    """Remove an environment's deploy lock (recorded in the ledger)."""
    _conveyor("unlock", "--env", env)


@task(
    help={
        "from_": "source environment",
        "to": "target environment",
        "dry_run": "print the plan and change nothing",
    }
)
def promote(
    c: Context, from_: str = "staging", to: str = "production", dry_run: bool = False
) -> None:
    """Deploy the exact image digests live in one environment to the next."""
    _conveyor("promote", "--from", from_, "--to", to, _flag(dry_run, "--dry-run"))


@task(help={"env": "environment", "release": "release id to approve"})
def approve(c: Context, env: str, release: str) -> None:
    """Approve one release (bound to its image digests) for a gated environment."""
    _conveyor("approve", "--env", env, "--release", release)


@task(help={"env": "environment"})
def report(c: Context, env: str) -> None:
    """Write the deployment report (frequency, failure rate, time to restore) as HTML."""
    _conveyor("report", "--env", env)


@task(
    help={
        "event": "GitHub event: push, pull_request, schedule or workflow_dispatch",
        "ref": "the pushed ref, or the branch a pull request targets (default: refs/heads/main)",
    }
)
def ci_plan(c: Context, event: str = "push", ref: str = ciplan.DEFAULT_REF) -> None:
    """Show the GitHub jobs an event would run, in order, with their commands (no GitHub needed)."""
    try:
        plan = ciplan.plan(WORKFLOWS, event=event, ref=ref)
    except ConveyorError as exc:
        raise Exit(f"ci-plan: {exc}", code=exc.exit_code) from None
    print(ciplan.render(plan))
