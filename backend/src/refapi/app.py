"""The FastAPI application: health probes, version, notes, and injected faults."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from refapi import migrations, notes, schema
from refapi.database import describe_failure
from refapi.settings import Settings


def create_app(settings: Settings, engine: Engine) -> FastAPI:
    chain = migrations.load_chain()
    identity = {"version": settings.version, "commit": settings.commit}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.started_at = time.monotonic()
        yield
        engine.dispose()

    app = FastAPI(title="refapi", version=settings.version, lifespan=lifespan)
    # expire_on_commit=False: a note just written is returned without a second query.
    app.state.sessions = sessionmaker(engine, expire_on_commit=False)
    app.include_router(notes.router)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: answers while the process serves, whatever the database does."""
        return {"status": "ok", "version": settings.version}

    @app.get("/readyz", response_model=None, responses={503: {"description": "Not ready"}})
    def readyz() -> JSONResponse:
        """Readiness: the database answers and this code can serve on its schema: every
        expand revision of this release applied, and nothing beyond its head but expand
        revisions (a newer release's, before a rollback or a switch)."""
        if settings.fault.kind == "not-ready":
            return _not_ready("fault injected: not-ready", identity)
        try:
            with engine.connect() as connection:
                observed = migrations.observe(connection, chain)
        except SQLAlchemyError as exc:
            return _not_ready(f"database unreachable: {describe_failure(exc)}", identity)
        verdict = schema.compatibility(chain, observed.current, observed.recorded)
        if not verdict.compatible:
            return _not_ready(verdict.why, identity)
        return JSONResponse(
            {
                "status": "ready",
                **identity,
                "database": "ok",
                "migration": observed.current,
                "schema": verdict.why,
            }
        )

    @app.get("/api/version")
    async def version() -> dict[str, str]:
        return identity

    if settings.fault.kind == "fail-after-ready":
        _fail_after(app, settings.fault.after_seconds)
    return app


def _not_ready(reason: str, identity: dict[str, str]) -> JSONResponse:
    return JSONResponse({"status": "not ready", "reason": reason, **identity}, status_code=503)


def _fail_after(app: FastAPI, seconds: float) -> None:
    """Turn every response into a 500 once `seconds` have passed since startup.

    This is the release that passes its first health check and breaks later: the
    deploy tool must keep watching after the switch and roll back.
    """

    @app.middleware("http")
    async def fail_after_ready(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started_at: float = request.app.state.started_at
        if time.monotonic() - started_at >= seconds:
            return JSONResponse({"detail": "fault injected: fail-after-ready"}, status_code=500)
        return await call_next(request)
