"""``python -m conveyor``: every operation, for use outside invoke and nox.

This is an edge: it parses arguments, calls the library and turns a ``ConveyorError`` into one
line on stderr and an exit code. No logic of its own lives here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor import ciplan, migrationsql, scanners
from conveyor import config as config_mod
from conveyor.console import console
from conveyor.errors import ConveyorError, EngineUnavailable, UsageError

Handler = Callable[[argparse.Namespace], int]


def _config(args: argparse.Namespace) -> config_mod.Config:
    return config_mod.load(Path(args.config) if args.config else None)


def cmd_setup(args: argparse.Namespace) -> int:
    from conveyor import machine  # noqa: PLC0415 - docker import only when needed

    console.say("Setting up this machine for conveyor:")
    machine.run(_config(args), say=console.say, swarm=args.swarm)
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    cfg = _config(args)
    names = [args.env] if args.env else sorted(cfg.environments)
    for name in names:
        env = cfg.environment(name)
        hosts = ", ".join(f"{h.name} ({h.docker})" for h in env.hosts)
        console.say(f"{name}: services {', '.join(env.services)}; hosts {hosts}")
    for image in cfg.images.values():
        if image.flags:
            from conveyor import flags  # noqa: PLC0415

            definitions = flags.load(cfg.root / image.flags)
            console.say(f"{image.flags}: {len(definitions['flags'])} flags, valid")
    console.say(f"{cfg.path.name}: valid")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    from conveyor import versioning  # noqa: PLC0415

    version = versioning.current(_config(args).root)
    if args.json:
        print(json.dumps(version.as_dict(), indent=2))
    else:
        print(version.python)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from conveyor import artifacts  # noqa: PLC0415

    cfg = _config(args)
    folder = artifacts.build(cfg, only=args.only, say=console.say)
    _publish(cfg, folder)
    return 0


def _publish(cfg: config_mod.Config, folder: Path) -> None:
    from conveyor import store  # noqa: PLC0415

    for stored in store.publish(cfg, folder):
        console.say(f"Stored {stored.version} in {stored.where}")


def cmd_image(args: argparse.Namespace) -> int:
    from conveyor import artifacts, engine, github, images  # noqa: PLC0415

    cfg = _config(args)
    folder = artifacts.dist_folder(cfg, args.version)
    results = images.build_images(
        cfg,
        engine.connect(),
        folder,
        push_to_registry=not args.no_push,
        only=args.only,
        force=args.force,
    )
    for name, entry in results.items():
        console.say(f"  {name}: {images.image_reference(entry)}")
    _publish(cfg, folder)  # again: the manifest now names the image digests
    github.append_summary(github.build_summary(artifacts.read_manifest(folder)))
    return 0


def cmd_artifacts_verify(args: argparse.Namespace) -> int:
    from conveyor import artifacts  # noqa: PLC0415

    manifest = artifacts.verify(Path(args.folder))
    console.say(f"{args.folder}: {len(manifest['files'])} files match manifest.json")
    seal = artifacts.describe_seal(artifacts.check_seal(Path(args.folder)))
    console.say(f"  manifest.json: {seal}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from conveyor import operations  # noqa: PLC0415

    operations.deploy(
        _config(args),
        args.env,
        version=args.version,
        dry_run=args.dry_run,
        lock_wait=args.lock_wait,
        message=args.message or "",
    )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from conveyor import operations  # noqa: PLC0415

    operations.rollback(
        _config(args),
        args.env,
        to=args.to,
        dry_run=args.dry_run,
        lock_wait=args.lock_wait,
        restore_backup=args.restore_backup,
        allow_schema_mismatch=args.allow_schema_mismatch,
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from conveyor import database  # noqa: PLC0415

    if not args.contract:
        raise UsageError(
            f"say what to run: invoke migrate --env {args.env} --contract (expand revisions "
            "run with every deploy; contract revisions only when you commit to them)"
        )
    database.contract(_config(args), args.env, dry_run=args.dry_run, lock_wait=args.lock_wait)
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from conveyor import database  # noqa: PLC0415

    database.restore(
        _config(args),
        args.env,
        args.backup,
        dry_run=args.dry_run,
        lock_wait=args.lock_wait,
        yes=args.yes,
    )
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    from conveyor import operations  # noqa: PLC0415

    operations.recover(_config(args), args.env, dry_run=args.dry_run, lock_wait=args.lock_wait)
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    from conveyor import rollout  # noqa: PLC0415

    rollout.show(_config(args), args.env, as_json=args.json)
    return 0


def cmd_rollout_promote(args: argparse.Namespace) -> int:
    from conveyor import rollout, steering  # noqa: PLC0415

    rollout.steer(_config(args), args.env, steering.PROMOTE, dry_run=args.dry_run, wait=args.wait)
    return 0


def cmd_rollout_abort(args: argparse.Namespace) -> int:
    from conveyor import rollout, steering  # noqa: PLC0415

    rollout.steer(_config(args), args.env, steering.ABORT, dry_run=args.dry_run, wait=args.wait)
    return 0


def cmd_flags(args: argparse.Namespace) -> int:
    from conveyor import flagops  # noqa: PLC0415

    flagops.show(_config(args), args.env, as_json=args.json)
    return 0


def cmd_flag_set(args: argparse.Namespace) -> int:
    from conveyor import flagops  # noqa: PLC0415

    flagops.set_flag(
        _config(args),
        args.env,
        args.name,
        on=args.on,
        off=args.off,
        percent=args.percent,
        image=args.image,
        dry_run=args.dry_run,
        lock_wait=args.lock_wait,
    )
    return 0


def cmd_flag_ramp(args: argparse.Namespace) -> int:
    from conveyor import flagramp  # noqa: PLC0415

    flagramp.ramp(
        _config(args),
        args.env,
        args.name,
        stages=args.stages,
        hold=args.hold,
        dry_run=args.dry_run,
        abort=args.abort,
        lock_wait=args.lock_wait,
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from conveyor import operations  # noqa: PLC0415

    operations.show_status(_config(args), args.env, as_json=args.json, stats=args.stats)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from conveyor import operations  # noqa: PLC0415

    operations.show_history(_config(args), args.env, as_json=args.json, limit=args.limit)
    return 0


def cmd_front(args: argparse.Namespace) -> int:
    from conveyor import front  # noqa: PLC0415

    text = front.front_config(_config(args), args.env, bind=args.bind)
    if args.out is None:
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
        console.say(f"wrote {args.out}: run it with haproxy -f {args.out}")
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    from conveyor import operations  # noqa: PLC0415

    operations.unlock(_config(args), args.env, force=args.force)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from conveyor import promotion  # noqa: PLC0415

    promotion.promote(
        _config(args),
        args.source,
        args.target,
        dry_run=args.dry_run,
        lock_wait=args.lock_wait,
    )
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from conveyor import approvals  # noqa: PLC0415

    approvals.approve(_config(args), args.env, args.release, note=args.note or "")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from conveyor import report  # noqa: PLC0415

    cfg = _config(args)
    path = report.write(cfg, args.env, output=Path(args.output), ledger_json=args.ledger)
    console.say(f"wrote {path}")
    return 0


def cmd_ci_plan(args: argparse.Namespace) -> int:
    plan = ciplan.plan(Path(args.workflows), event=args.event, ref=args.ref, changed=args.changed)
    print(ciplan.render(plan))
    return 0


def cmd_artifacts_list(args: argparse.Namespace) -> int:
    from conveyor import store  # noqa: PLC0415

    cfg = _config(args)
    found = [v for s in store.stores(cfg) for v in s.list()]
    found.sort(key=lambda v: (v.build_time, v.stored_at), reverse=True)
    if args.json:
        print(json.dumps([v.as_dict() for v in found], indent=2))
        return 0
    if not found:
        console.say("no stored versions yet — run `nox -s build`")
    for v in found:
        digests = ", ".join(f"{n} {d.removeprefix('sha256:')[:12]}" for n, d in v.images.items())
        console.say(
            f"{v.version:<32} built {v.build_time:<20} manifest {v.manifest_sha256[:12]}  "
            f"{digests or 'no images'}  [{v.where}]"
        )
    return 0


def _ledger_reader(cfg: config_mod.Config, skip: list[str]) -> Callable[[str], list[Any]]:
    from conveyor import operations  # noqa: PLC0415

    def read(env: str) -> list[Any]:
        if env in skip:
            return []
        return operations.history(cfg, env)

    return read


def cmd_artifacts_prune(args: argparse.Namespace) -> int:
    from conveyor import store  # noqa: PLC0415

    cfg = _config(args)
    store.prune(
        cfg,
        _ledger_reader(cfg, args.skip_env or []),
        keep=args.keep,
        dry_run=args.dry_run,
        say=console.say,
    )
    return 0


if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _command(
    sub: Subparsers, name: str, handler: Handler, help_text: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(handler=handler)
    return parser


def _add_setup_commands(sub: Subparsers) -> None:
    setup = _command(
        sub, "setup", cmd_setup, "Install and start what conveyor needs on this machine."
    )
    setup.add_argument(
        "--swarm",
        action="store_true",
        help="also a one-node Docker Swarm on its own dockerd, for the swarm environment",
    )
    check = _command(sub, "config-check", cmd_config_check, "Validate deploy.toml.")
    check.add_argument("--env")


def _add_build_commands(sub: Subparsers) -> None:
    version = _command(
        sub, "version", cmd_version, "Print the release version of the working tree."
    )
    version.add_argument("--json", action="store_true")
    build = _command(sub, "build", cmd_build, "Build the release artifacts into dist/<version>/.")
    build.add_argument("--only", choices=("backend", "frontend"), help="build one part")
    image = _command(
        sub, "image", cmd_image, "Build the images of dist/<version>/, push, record digests."
    )
    image.add_argument("--version", help="artifacts to use (default: the working tree's)")
    image.add_argument("--only", action="append", help="build only this image (repeatable)")
    image.add_argument("--no-push", action="store_true", help="keep the images local")
    image.add_argument(
        "--force",
        action="store_true",
        help="replace images this version already records (new image IDs; recorded)",
    )


def _add_artifacts_commands(sub: Subparsers) -> None:
    arts = sub.add_parser("artifacts", help="Verify, list and prune stored artifacts.")
    arts_sub = arts.add_subparsers(dest="artifacts_command", required=True, metavar="ACTION")
    verify = arts_sub.add_parser("verify", help="Re-check every checksum of dist/<version>.")
    verify.add_argument("folder")
    verify.set_defaults(handler=cmd_artifacts_verify)
    listing = arts_sub.add_parser("list", help="Stored versions with their digests and dates.")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_artifacts_list)
    pruning = arts_sub.add_parser(
        "prune", help="Keep the newest N versions; never one live or kept for rollback."
    )
    pruning.add_argument("--keep", type=int, help="versions to keep (default: [artifacts] keep)")
    pruning.add_argument("--dry-run", action="store_true")
    pruning.add_argument(
        "--skip-env",
        action="append",
        metavar="ENV",
        help="do not read this environment's ledger (its versions are then NOT protected)",
    )
    pruning.set_defaults(handler=cmd_artifacts_prune)


def _add_deploy_commands(sub: Subparsers) -> None:
    """The commands that change an environment: deploy, rollback, recover."""
    deploy = _command(
        sub, "deploy", cmd_deploy, "Deploy a release (blue-green or canary, per environment)."
    )
    deploy.add_argument("--env", required=True)
    deploy.add_argument("--version", help="release to deploy (default: the working tree's)")
    deploy.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    deploy.add_argument("--lock-wait", type=float, default=0.0, metavar="SECONDS")
    deploy.add_argument("--message", help="why (recorded with the lock)")
    back = _command(
        sub, "rollback", cmd_rollback, "Switch back to the previous (or a chosen) release."
    )
    back.add_argument("--env", required=True)
    back.add_argument("--to", help="release id or version from the ledger")
    back.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    back.add_argument("--lock-wait", type=float, default=0.0, metavar="SECONDS")
    back.add_argument(
        "--restore-backup", metavar="ID", help="restore this backup first (writes since are lost)"
    )
    back.add_argument(
        "--allow-schema-mismatch",
        action="store_true",
        help="switch even though the target refuses the database's schema",
    )
    mig = _command(
        sub,
        "migrate",
        cmd_migrate,
        "Run the live release's pending contract revisions (after a backup).",
    )
    mig.add_argument("--env", required=True)
    mig.add_argument("--contract", action="store_true", help="the destructive revisions (required)")
    mig.add_argument("--dry-run", action="store_true", help="say what it would run, change nothing")
    mig.add_argument("--lock-wait", type=float, default=0.0, metavar="SECONDS")
    res = _command(
        sub, "restore", cmd_restore, "Put a database backup back (writes since it are lost)."
    )
    res.add_argument("--env", required=True)
    res.add_argument("--backup", required=True, metavar="ID", help="a backup id from the ledger")
    res.add_argument("--dry-run", action="store_true", help="say what it would do, change nothing")
    res.add_argument("--lock-wait", type=float, default=0.0, metavar="SECONDS")
    res.add_argument("--yes", action="store_true", help="do not ask on a terminal")
    rec = _command(
        sub,
        "recover",
        cmd_recover,
        "After a crashed deploy: close its record, put every router back on the verified "
        "release, stop leftovers.",
    )
    rec.add_argument("--env", required=True)
    rec.add_argument("--dry-run", action="store_true", help="say what it would do, change nothing")
    rec.add_argument("--lock-wait", type=float, default=0.0, metavar="SECONDS")
    _add_rollout_commands(sub)
    _add_flag_commands(sub)


def _add_flag_commands(sub: Subparsers) -> None:
    """Feature flags: see them, change one without a deploy."""
    show = _command(
        sub, "flags", cmd_flags, "List an environment's feature flags: variants and percentages."
    )
    show.add_argument("--env", required=True)
    show.add_argument("--json", action="store_true")
    change = _command(
        sub,
        "flag-set",
        cmd_flag_set,
        "Turn a flag on, off or on for a percentage of people, without a deploy (audited).",
    )
    change.add_argument("--env", required=True)
    change.add_argument("name", metavar="NAME", help="the flag")
    change.add_argument("--on", action="store_true", help="everyone gets the on-variant")
    change.add_argument("--off", action="store_true", help="nobody gets the on-variant")
    change.add_argument("--percent", type=int, metavar="N", help="N%% of people get it")
    change.add_argument("--image", help="the image whose flags hold NAME (default: found)")
    change.add_argument("--dry-run", action="store_true", help="say what changes, change nothing")
    change.add_argument("--lock-wait", type=float, default=0.0, metavar="SECONDS")
    ramp = _command(
        sub,
        "flag-ramp",
        cmd_flag_ramp,
        "Raise a flag's share in stages, each held and judged on vs off; off at once on errors.",
    )
    ramp.add_argument("--env", required=True)
    ramp.add_argument("name", metavar="NAME", help="the flag")
    ramp.add_argument(
        "--stages", default="1,5,25,50,100", help="percentages in turn (default: 1,5,25,50,100)"
    )
    ramp.add_argument(
        "--hold", type=float, default=600.0, metavar="SECONDS", help="each stage (default: 600)"
    )
    ramp.add_argument("--abort", action="store_true", help="ask the running ramp to stop")
    ramp.add_argument("--dry-run", action="store_true", help="say what it would do, change nothing")
    ramp.add_argument("--lock-wait", type=float, default=0.0, metavar="SECONDS")


def _add_rollout_commands(sub: Subparsers) -> None:
    """A canary rollout: see it, finish it at once, or abort it (in any state)."""
    show = _command(
        sub, "rollout", cmd_rollout, "Show a canary rollout: live weights, step, every verdict."
    )
    show.add_argument("--env", required=True)
    show.add_argument("--json", action="store_true")
    for name, handler, text in (
        ("rollout-promote", cmd_rollout_promote, "Finish the canary rollout now: switch, verify."),
        (
            "rollout-abort",
            cmd_rollout_abort,
            "Abort the canary rollout: every host back on the stable color, canary stopped.",
        ),
    ):
        steer = _command(sub, name, handler, text)
        steer.add_argument("--env", required=True)
        steer.add_argument(
            "--dry-run", action="store_true", help="say what it would do, change nothing"
        )
        steer.add_argument(
            "--wait",
            type=float,
            default=120.0,
            metavar="SECONDS",
            help="how long to wait for the rollout to answer (default: 120)",
        )


def _add_inspect_commands(sub: Subparsers) -> None:
    """The commands that read an environment (and unlock, which clears what status shows)."""
    stat = _command(
        sub, "status", cmd_status, "Show an environment: live release, containers, lock."
    )
    stat.add_argument("--env", required=True)
    stat.add_argument("--json", action="store_true")
    stat.add_argument(
        "--stats", action="store_true", help="memory and CPU of the warm release (engine stats)"
    )
    hist = _command(sub, "history", cmd_history, "Show the environment's release ledger.")
    hist.add_argument("--env", required=True)
    hist.add_argument("--json", action="store_true")
    hist.add_argument("--limit", type=int, default=50)
    front = _command(
        sub,
        "front",
        cmd_front,
        "Write the HAProxy config of a load balancer in front of every host's router.",
    )
    front.add_argument("--env", required=True)
    front.add_argument("--bind", help="where it listens, ADDRESS:PORT (default: *:80)")
    front.add_argument("--out", help="write it to this file (default: print it)")
    unlock = _command(
        sub,
        "unlock",
        cmd_unlock,
        "Remove an environment's stale deploy lock; a live one only with --force (audited).",
    )
    unlock.add_argument("--env", required=True)
    unlock.add_argument(
        "--force",
        action="store_true",
        help="remove the lock even though its deploy is alive (that deploy stops before its "
        "next switch; recorded in the ledger)",
    )


def _add_governance_commands(sub: Subparsers) -> None:
    """Promotion, approval and the deployment report."""
    promote = _command(
        sub,
        "promote",
        cmd_promote,
        "Deploy to one environment exactly the image IDs live and healthy in another.",
    )
    promote.add_argument("--from", dest="source", default="staging", metavar="ENV")
    promote.add_argument("--to", dest="target", default="production", metavar="ENV")
    promote.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    promote.add_argument("--lock-wait", type=float, default=0.0, metavar="SECONDS")
    approve = _command(
        sub, "approve", cmd_approve, "Approve one release (bound to its image IDs) for a gated env."
    )
    approve.add_argument("--env", required=True)
    approve.add_argument(
        "--release",
        required=True,
        metavar="KEY",
        help="release key printed by `promote --dry-run` (12+ hex digits), or ENV:RELEASE-ID",
    )
    approve.add_argument("--note", help="why (recorded with the approval)")
    report = _command(
        sub, "report", cmd_report, "Write the deployment report (DORA metrics) as HTML."
    )
    report.add_argument("--env", required=True)
    report.add_argument("--output", default="reports/deploy", metavar="DIR")
    report.add_argument(
        "--ledger", metavar="FILE", help="read `history --json` output instead of the engine"
    )


def _add_ci_plan_command(sub: Subparsers) -> None:
    plan = _command(
        sub, "ci-plan", cmd_ci_plan, "Show the GitHub jobs an event would run, in order."
    )
    plan.add_argument(
        "--event",
        default="push",
        help=f"the GitHub event, one of {', '.join(ciplan.EVENTS)} (default: %(default)s)",
    )
    plan.add_argument(
        "--ref",
        default=ciplan.DEFAULT_REF,
        help="the pushed ref, or the branch a pull request targets (default: %(default)s)",
    )
    plan.add_argument(
        "--changed",
        action="append",
        metavar="FILE",
        help="a changed file, for `paths` filters (repeatable; without it they are assumed to "
        "match)",
    )
    plan.add_argument(
        "--workflows",
        default=".github/workflows",
        metavar="DIR",
        help="the folder of workflow files (default: %(default)s, from the current directory)",
    )


def build_parser() -> argparse.ArgumentParser:
    """conveyor's command line, one group of commands at a time, in the order ``--help``
    lists them."""
    parser = argparse.ArgumentParser(prog="conveyor", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", help="path to deploy.toml (default: nearest, or $CONVEYOR_CONFIG)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_setup_commands(sub)
    _add_build_commands(sub)
    _add_artifacts_commands(sub)
    scanners.register(sub)
    migrationsql.register(sub)
    _add_deploy_commands(sub)
    _add_inspect_commands(sub)
    _add_governance_commands(sub)
    _add_ci_plan_command(sub)
    return parser


# What a shell reports for a process whose reader went away (128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _run(argv)
    except BrokenPipeError:
        code = EXIT_BROKEN_PIPE
    if code == EXIT_BROKEN_PIPE or console.closed:
        # `status | head -1`: the reader has gone, which is not an error worth a traceback
        # (a deploy's narration noticed it and carried on to the end). Later writes — ours,
        # invoke's, the interpreter's final flush — go to /dev/null.
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    return code


def _engine_lost(args: argparse.Namespace, exc: BaseException) -> str:
    """A Docker engine stopped answering mid-command: which one, and what to run when it is
    back (the next command converges, as after a crash)."""
    from conveyor import engine  # noqa: PLC0415

    name = getattr(args, "env", None)
    silent: list[str] = []
    with contextlib.suppress(ConveyorError):
        env = _config(args).environment(name) if name else None
        for host in env.hosts if env else ():
            try:
                engine.connect(host.endpoint(), timeout=3)
            except EngineUnavailable:
                silent.append(f"{host.name} ({engine.describe(host.endpoint())})")
    which = f"the Docker engine of {', '.join(silent)}" if silent else "a Docker engine"
    then = f"invoke recover --env {name}" if name else "the command again"
    return (
        f"{which} stopped answering mid-command ({type(exc).__name__}); what it was doing may "
        f"be half done — when it answers again, run: {then}"
    )


def _silence_stdout() -> None:
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except BrokenPipeError:
        raise
    except ConveyorError as exc:
        # One line, even when the message echoes an argument holding a newline or an escape.
        line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(exc))
        print(f"conveyor: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("conveyor: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from conveyor import engine  # noqa: PLC0415 - the docker SDK only on failure

        if engine.lost(exc) and os.environ.get("CONVEYOR_DEBUG") != "1":
            print(f"conveyor: {_engine_lost(args, exc)}", file=sys.stderr)
            return 1
        # A bug or an engine failing mid-call: still one line, the traceback on request.
        if os.environ.get("CONVEYOR_DEBUG") == "1":
            raise
        print(
            f"conveyor: unexpected {type(exc).__name__}: {str(exc)[:300]} "
            f"(CONVEYOR_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
