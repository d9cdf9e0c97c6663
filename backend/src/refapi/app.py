"""The FastAPI application: health probes, version, notes, feature flags and their metrics,
and injected faults."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from fractions import Fraction

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from refapi import flags, migrations, notes, schema
from refapi.database import describe_failure
from refapi.metrics import CountByVariant
from refapi.settings import Fault, Settings

# What a deploy tool and Docker poll; faults that mimic a bad release under traffic spare
# them, so the release passes readiness and smoke checks and only its traffic shows it.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
# Neither counted by flag variant nor given a session cookie: nobody's traffic.
UNCOUNTED_PATHS = PROBE_PATHS | {"/metrics"}


def create_app(settings: Settings, engine: Engine) -> FastAPI:
    chain = migrations.load_chain()
    identity = {"version": settings.version, "commit": settings.commit}
    feature_flags = flags.FeatureFlags(settings.flags_file, fault=settings.fault)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.started_at = time.monotonic()
        feature_flags.start()
        try:
            yield
        finally:
            feature_flags.stop()
            engine.dispose()

    app = FastAPI(title="refapi", version=settings.version, lifespan=lifespan)
    # expire_on_commit=False: a note just written is returned without a second query.
    app.state.sessions = sessionmaker(engine, expire_on_commit=False)
    app.state.flags = feature_flags
    app.include_router(notes.router)
    app.include_router(flags.router)
    # Innermost first: the counter sees an endpoint's exception before the error page does,
    # and the targeting key is known before any flag is evaluated.
    app.add_middleware(CountByVariant, counters=feature_flags.counters, uncounted=UNCOUNTED_PATHS)
    app.add_middleware(flags.TargetingKeys, exempt=UNCOUNTED_PATHS)

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

    _inject_fault(app, settings.fault)
    return app


def _inject_fault(app: FastAPI, fault: Fault) -> None:
    """Wire the faults that act while serving; not-ready acts in /readyz, crash at startup."""
    if fault.kind == "fail-after-ready":
        _fail_after(app, fault.argument)
    elif fault.kind == "fail-ratio":
        _fail_a_share(app, fault.argument)
    elif fault.kind == "slow":
        _slow_down(app, fault.argument / 1000)


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


class FailureSchedule:
    """Which ordinary requests a fail-ratio fault fails, deterministically.

    Request k (counted from 1) fails when floor(k*R) > floor((k-1)*R): the first n
    requests hold exactly floor(n*R) failures, evenly spread (R=0.2 fails every fifth).
    """

    def __init__(self, ratio: float) -> None:
        # The decimal as written: in binary floats 100 * 0.29 is 28.999..., which would
        # move a failure one request late.
        self._ratio = Fraction(str(ratio))
        self._counted = 0
        self._lock = threading.Lock()

    def next_fails(self) -> bool:
        """Count one more ordinary request and say whether it is to fail."""
        with self._lock:
            self._counted += 1
            k = self._counted
        return math.floor(k * self._ratio) > math.floor((k - 1) * self._ratio)


def _is_probe(request: Request) -> bool:
    return request.url.path in PROBE_PATHS


def _fail_a_share(app: FastAPI, ratio: float) -> None:
    """Answer 500 to a share `ratio` of ordinary requests; probes answer normally.

    This is the release that is healthy by every probe and bad for some users: only a
    canary's error rate can catch it.
    """
    schedule = FailureSchedule(ratio)

    @app.middleware("http")
    async def fail_ratio(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if _is_probe(request) or not schedule.next_fails():
            return await call_next(request)
        return JSONResponse({"detail": "fault injected: fail-ratio"}, status_code=500)


def _slow_down(app: FastAPI, seconds: float) -> None:
    """Delay every ordinary request by `seconds` before serving it; probes are not delayed.

    This is the release that is correct but slow: only a canary's latency can catch it.
    """

    @app.middleware("http")
    async def slow(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if not _is_probe(request):
            await asyncio.sleep(seconds)
        return await call_next(request)
