"""`refapi` (or `refapi serve`) migrates then serves; `refapi migrate` only migrates;
`refapi warm` imports everything serving needs and exits (image builds run it so only the
modules the service really loads get precompiled bytecode).

Exit codes: 0 clean stop (SIGTERM and SIGINT included), 1 migration failed, 2 bad
configuration or arguments, 3 did not start (an injected crash, or uvicorn's own startup
failure such as a port in use). Failures print one line on stderr, never a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from refapi.errors import ConfigError, MigrationError
from refapi.settings import Settings

# uvicorn's own code for "could not start"; an injected crash reports the same way.
STARTUP_FAILURE = 3
USAGE = "usage: refapi [serve | migrate | warm]   (configured by environment variables)"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["-h"], ["--help"]):
        print(f"{USAGE}\n\n{(__doc__ or '').strip()}")
        return 0
    if args == ["warm"]:
        return warm()
    if args not in ([], ["serve"], ["migrate"]):
        return _fail(f"unexpected arguments {' '.join(args)!r}; {USAGE}", 2)
    try:
        settings = Settings.from_env()
        if args == ["migrate"]:
            return migrate(settings)
        return serve(settings)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    except MigrationError as exc:
        return _fail(str(exc), 1)


def migrate(settings: Settings) -> int:
    # Imported here so an injected crash and a bad setting fail before paying for
    # alembic's import, and `migrate` never pays for FastAPI's and uvicorn's.
    from refapi.database import create_engine  # noqa: PLC0415
    from refapi.migrations import upgrade_to_head  # noqa: PLC0415

    engine = create_engine(settings.database_url)
    try:
        revision = upgrade_to_head(engine)
    finally:
        engine.dispose()
    where = settings.database_url.render_as_string(hide_password=True)
    print(f"refapi: {where} is at revision {revision}", file=sys.stderr)
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


def _fail(message: str, code: int) -> int:
    print(f"refapi: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
