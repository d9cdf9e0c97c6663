"""Feature flags as refapi serves them: who is asking, what they get, and what the web UI reads.

Flags are evaluated through the OpenFeature API (``openfeature-sdk``) against the provider in
``refapi.flagfile``: the definitions in FLAGS_FILE, watched for changes, or the packaged ones.

Who is asking is the *targeting key*, stable per person so a person gets the same variant every
time: the ``X-User`` header when a request carries one (a proxy that knows the user), else the
``refapi_session`` cookie, a random id the API sets on the first response that lacks it.
``GET /api/flags`` answers the caller's value of every flag the web UI uses, and the key.

Each app instance registers its provider under its own OpenFeature domain, so two apps in one
process (tests) never share flags, hooks or counters.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import PlainTextResponse
from openfeature.api import get_client, set_provider, set_provider_and_wait
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.no_op_provider import NoOpProvider
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from refapi.flagfile import POLL_INTERVAL, FlagFileProvider
from refapi.metrics import CONTENT_TYPE, FlagCounters, VariantRecorder
from refapi.settings import Fault

NEW_NOTES_VIEW = "new-notes-view"
# The flags this code evaluates, each with the value it serves when the flag is not defined
# (or cannot be evaluated); GET /api/flags answers all of them.
FLAGS: Mapping[str, bool] = {NEW_NOTES_VIEW: False}

SESSION_COOKIE = "refapi_session"
SESSION_MAX_AGE = 365 * 24 * 60 * 60
USER_HEADER = "x-user"
USER_MAX_LENGTH = 200
# What refapi itself mints (secrets.token_urlsafe); anything else is replaced.
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_domains = itertools.count(1)

router = APIRouter(tags=["flags"])


def targeting_key(connection: HTTPConnection) -> tuple[str, str | None]:
    """The caller's targeting key, and the new session id to set when the cookie is absent."""
    session = connection.cookies.get(SESSION_COOKIE, "")
    new_session = None if _SESSION_ID.fullmatch(session) else secrets.token_urlsafe(16)
    user = connection.headers.get(USER_HEADER, "").strip()
    if 0 < len(user) <= USER_MAX_LENGTH:
        return user, new_session
    return new_session or session, new_session


def session_cookie(session: str) -> str:
    return f"{SESSION_COOKIE}={session}; Max-Age={SESSION_MAX_AGE}; Path=/; HttpOnly; SameSite=Lax"


class TargetingKeys:
    """ASGI middleware: puts the caller's targeting key on ``request.state.targeting_key``
    and sets the session cookie on the response when the request had none."""

    def __init__(self, app: ASGIApp, *, exempt: frozenset[str]) -> None:
        self.app = app
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        key, new_session = targeting_key(HTTPConnection(scope))
        scope.setdefault("state", {})["targeting_key"] = key
        if new_session is None:
            await self.app(scope, receive, send)
            return

        async def set_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("set-cookie", session_cookie(new_session))
            await send(message)

        await self.app(scope, receive, set_cookie)


class FeatureFlags:
    """One app's flags: its provider, its OpenFeature client and its per-variant counters."""

    def __init__(
        self, flags_file: Path | None, *, fault: Fault, interval: float = POLL_INTERVAL
    ) -> None:
        self.provider = FlagFileProvider(flags_file, interval=interval)
        self.counters = FlagCounters()
        self.fault = fault
        self.domain = f"refapi-{next(_domains)}"
        self.client = get_client(self.domain)
        self.client.add_hooks([VariantRecorder()])

    def start(self) -> None:
        """Load the definitions and start watching the file (the app's startup)."""
        set_provider_and_wait(self.provider, self.domain)

    def stop(self) -> None:
        self.provider.shutdown()
        set_provider(NoOpProvider(), self.domain)

    def evaluate(self, request: Request, flag: str) -> bool:
        """The caller's value of a boolean flag; its variant is counted with the request."""
        key = getattr(request.state, "targeting_key", None)
        details = self.client.get_boolean_details(
            flag, FLAGS.get(flag, False), EvaluationContext(targeting_key=key)
        )
        if (
            self.fault.kind == "flag-on-fails"
            and flag == NEW_NOTES_VIEW
            and details.variant == "on"
        ):
            raise HTTPException(status_code=500, detail="fault injected: flag-on-fails")
        return details.value

    def metrics(self) -> str:
        definitions = self.provider.definitions
        return self.counters.render(
            definitions.variants,
            definitions_sha256=definitions.sha256,
            definitions_source=definitions.source,
            stale=self.provider.stale,
        )


def flags_of(request: Request) -> FeatureFlags:
    flags: FeatureFlags = request.app.state.flags
    return flags


@router.get("/api/flags")
def caller_flags(request: Request) -> dict[str, object]:
    """The caller's value of every flag the web UI uses, and the key they were evaluated for."""
    flags = flags_of(request)
    values = {name: flags.evaluate(request, name) for name in FLAGS}
    return {"flags": values, "key": request.state.targeting_key}


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request) -> PlainTextResponse:
    """Requests and errors by flag variant, in Prometheus' text format."""
    return PlainTextResponse(flags_of(request).metrics(), media_type=CONTENT_TYPE)
