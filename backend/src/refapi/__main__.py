"""`refapi` (or `refapi serve`) migrates then serves; `refapi migrate` only migrates (to head);
`refapi warm` imports everything serving needs and exits (image builds run it so only the
modules the service really loads get precompiled bytecode).

The migration protocol a deploy tool drives (JSON on stdout, progress on stderr):

  refapi migrate plan [--json]      the chain, the current revision, what is pending, by step
  refapi migrate expand             run pending revisions up to expand_head (before a switch)
  refapi migrate contract           run everything pending, up to head (no older release left)
  refapi migrate current [--json]   the current revision and whether this code can serve on it
  refapi migrate sql [--json]       each revision's PostgreSQL SQL, rendered offline

Exit codes: 0 clean stop (SIGTERM and SIGINT included), 1 migration failed, 2 bad
configuration or arguments, 3 did not start (an injected crash, or uvicorn's own startup
failure such as a port in use). Failures print one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, Literal

from refapi.errors import ConfigError, MigrationError
from refapi.settings import Settings

# uvicorn's own code for "could not start"; an injected crash reports the same way.
STARTUP_FAILURE = 3
USAGE = (
    "usage: refapi [serve | migrate [plan | expand | contract | current | sql] [--json] | warm]"
    "   (configured by environment variables)"
)
MIGRATE_COMMANDS = ("plan", "expand", "contract", "current", "sql")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["-h"], ["--help"]):
        print(f"{USAGE}\n\n{(__doc__ or '').strip()}")
        return 0
    if args == ["warm"]:
        return warm()
    if args[:1] == ["migrate"] and _migrate_args(args[1:]) is not None:
        command, as_json = _migrate_args(args[1:]) or ("", False)
    elif args in ([], ["serve"]):
        command, as_json = "serve", False
    else:
        return _fail(f"unexpected arguments {' '.join(args)!r}; {USAGE}", 2)
    try:
        if command == "sql":
            return migrate_sql(as_json=as_json)
        settings = Settings.from_env()
        if command == "migrate":
            return migrate(settings)
        if command in ("plan", "current"):
            return migrate_report(settings, command, as_json=as_json)
        if command in ("expand", "contract"):
            return migrate_step(settings, "expand" if command == "expand" else "contract")
        return serve(settings)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    except MigrationError as exc:
        return _fail(str(exc), 1)


def _migrate_args(rest: list[str]) -> tuple[str, bool] | None:
    """``migrate [COMMAND] [--json]`` → (command, as_json); None when it is not that."""
    as_json = "--json" in rest
    words = [word for word in rest if word != "--json"]
    if len(words) > 1 or len(rest) - len(words) > 1 or (words and words[0] not in MIGRATE_COMMANDS):
        return None
    if not words:
        return None if as_json else ("migrate", False)
    return words[0], as_json


def migrate(settings: Settings) -> int:
    """Bare ``refapi migrate`` (and MIGRATE_ON_START): everything pending, to head."""
    # Imported here so an injected crash and a bad setting fail before paying for
    # alembic's import, and `migrate` never pays for FastAPI's and uvicorn's.
    from refapi.database import create_engine  # noqa: PLC0415
    from refapi.migrations import upgrade_to_head  # noqa: PLC0415

    engine = create_engine(settings.database_url)
    try:
        revision = upgrade_to_head(engine, settings.migration)
    finally:
        engine.dispose()
    where = settings.database_url.render_as_string(hide_password=True)
    print(f"refapi: {where} is at revision {revision}", file=sys.stderr)
    return 0


def migrate_step(settings: Settings, step: Literal["expand", "contract"]) -> int:
    """``migrate expand`` / ``migrate contract``: the run's result as JSON on stdout."""
    from refapi import migrations  # noqa: PLC0415
    from refapi.database import create_engine  # noqa: PLC0415

    engine = create_engine(settings.database_url)
    try:
        result = migrations.run(engine, step, settings.migration)
    finally:
        engine.dispose()
    where = settings.database_url.render_as_string(hide_password=True)
    print(f"refapi: {where} is at revision {result.after}", file=sys.stderr)
    print(json.dumps(result.to_json()))
    return 0


def migrate_report(settings: Settings, command: str, *, as_json: bool) -> int:
    """``migrate plan`` and ``migrate current``: read the schema, change nothing."""
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    from refapi import migrations, schema  # noqa: PLC0415
    from refapi.database import create_engine, describe_failure  # noqa: PLC0415

    chain = migrations.load_chain()
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            observed = migrations.observe(connection, chain)
    except SQLAlchemyError as exc:
        where = settings.database_url.render_as_string(hide_password=True)
        raise MigrationError(f"cannot read the schema of {where}: {describe_failure(exc)}") from exc
    finally:
        engine.dispose()
    database = settings.database_url.get_backend_name()
    if command == "plan":
        document = schema.plan(chain, observed.current, observed.recorded, database)
        text = _plan_text(document)
    else:
        verdict = schema.compatibility(chain, observed.current, observed.recorded)
        document = {
            "current": observed.current,
            "head": chain.head,
            "expand_head": chain.expand_head,
            "known": chain.knows(observed.current),
            "ahead": [{"revision": a.revision, "kind": a.kind} for a in verdict.ahead],
            "compatible": verdict.compatible,
            "why": verdict.why,
        }
        text = f"{observed.current}: {'compatible' if verdict.compatible else 'incompatible'}"
        text += f" ({verdict.why})"
    print(json.dumps(document) if as_json else text)
    return 0


def _plan_text(plan: dict[str, Any]) -> str:
    lines = [f"{plan['database']} at {plan['current']}; head {plan['head']}"]
    lines += [
        f"  {'applied' if r['applied'] else 'pending'}  {r['revision']}  {r['kind']:<8}  "
        + r["message"]
        for r in plan["revisions"]
    ]
    lines.append(f"expand runs: {' '.join(plan['pending_expand']) or 'nothing'}")
    lines.append(f"contract runs: {' '.join(plan['pending_contract']) or 'nothing'} more")
    lines += [f"  ahead    {a['revision']}  {a['kind']}" for a in plan["ahead"]]
    return "\n".join(lines)


def migrate_sql(*, as_json: bool) -> int:
    """``migrate sql``: every revision's PostgreSQL SQL, each on its own; no database."""
    from refapi import migrations  # noqa: PLC0415

    chain = migrations.load_chain()
    rendered = migrations.render_sql()
    if as_json:
        revisions = [
            {
                "revision": r.revision,
                "down_revision": r.down_revision,
                "kind": r.kind,
                "message": r.message,
                "sql": sql,
            }
            for r, sql in zip(chain.revisions, rendered, strict=True)
        ]
        print(json.dumps({"dialect": "postgresql", "revisions": revisions}))
    else:
        for revision, sql in zip(chain.revisions, rendered, strict=True):
            print(f"-- {revision.revision} ({revision.kind}): {revision.message}\n{sql}")
    return 0


def warm() -> int:
    """Load what ``serve`` loads — migrations against a throwaway SQLite file, the app,
    uvicorn's protocol and loop modules — without listening on any port."""
    import tempfile  # noqa: PLC0415

    import uvicorn  # noqa: PLC0415

    from refapi.app import create_app  # noqa: PLC0415
    from refapi.database import create_engine  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="refapi-warm-") as folder:
        os.environ["DATABASE_URL"] = f"sqlite:///{folder}/warm.db"
        settings = Settings.from_env()
        migrate(settings)
        engine = create_engine(settings.database_url)
        try:
            config = uvicorn.Config(create_app(settings, engine), lifespan="on", log_level="info")
            config.load()
        finally:
            engine.dispose()
    return 0


def serve(settings: Settings) -> int:
    if settings.fault.kind == "crash":
        return _fail("fault injected: crash", STARTUP_FAILURE)
    if settings.migrate_on_start:
        migrate(settings)

    import uvicorn  # noqa: PLC0415

    from refapi.app import create_app  # noqa: PLC0415
    from refapi.database import create_engine  # noqa: PLC0415

    _log_to_stderr()
    config = uvicorn.Config(
        create_app(settings, create_engine(settings.database_url)),
        host=settings.host,
        port=settings.port,
        access_log=settings.access_log,
        log_level="info",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the stop signal once it has shut down gracefully, which under
    # the default handler kills the process with 143, and a deploy tool reads that as
    # a crash. Pointing the handlers at the server makes a signal that arrives before
    # uvicorn installs its own still stop it, and the re-raise afterwards harmless.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, server.handle_exit)
    server.run()
    code = 0 if server.started else STARTUP_FAILURE
    if server.started:
        # Everything is closed and flushed once uvicorn returns; the interpreter's own
        # teardown (module cleanup, garbage collection) only adds ~0.4 s to every stop
        # of the old color during a deploy.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _log_to_stderr() -> None:
    """refapi's own log lines (the flag file watcher's) go to stderr as written, one a line,
    like its other messages; uvicorn configures only its own loggers."""
    import logging  # noqa: PLC0415

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("refapi")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _fail(message: str, code: int) -> int:
    print(f"refapi: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
