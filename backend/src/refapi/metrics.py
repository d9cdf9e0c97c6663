"""Requests and errors counted by the flag variants each request was served with.

A guarded ramp compares the on-variant's error rate with the off-variant's, so the counts
must be per variant, not per release: an OpenFeature hook (VariantRecorder) notes every
variant a request's flag evaluations resolved to, and a middleware (CountByVariant) counts the
request's outcome once under each of them. ``GET /metrics`` answers Prometheus' text format:

    refapi_flag_requests_total{flag="new-notes-view",variant="on"} 12
    refapi_flag_errors_total{flag="new-notes-view",variant="on"} 3

An error is a response with status >= 500 or an exception. Requests that evaluated no flag
are not counted, and neither are the probes nor /metrics itself. Every variant of every
defined flag is listed, at 0 until counted, so a reader can tell "no traffic" from "no flag".
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from contextvars import ContextVar

from openfeature.flag_evaluation import FlagEvaluationDetails, FlagValueType
from openfeature.hook import Hook, HookContext, HookHints
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Variant = tuple[str, str]

# The variants the current request was served with; None outside a counted request.
_served: ContextVar[set[Variant] | None] = ContextVar("refapi_flag_variants", default=None)


class VariantRecorder(Hook):
    """Notes each evaluated flag's variant against the request being served."""

    def after(
        self,
        hook_context: HookContext,
        details: FlagEvaluationDetails[FlagValueType],
        hints: HookHints,
    ) -> None:
        served = _served.get()
        if served is not None and details.variant is not None:
            served.add((details.flag_key, details.variant))


class FlagCounters:
    """Requests and errors per (flag, variant), safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[Variant] = Counter()
        self._errors: Counter[Variant] = Counter()

    def count(self, served: Iterable[Variant], *, failed: bool) -> None:
        with self._lock:
            for variant in served:
                self._requests[variant] += 1
                if failed:
                    self._errors[variant] += 1

    def snapshot(self) -> tuple[dict[Variant, int], dict[Variant, int]]:
        with self._lock:
            return dict(self._requests), dict(self._errors)

    def render(
        self,
        defined: Mapping[str, Iterable[str]],
        *,
        definitions_sha256: str,
        definitions_source: str,
        stale: bool,
    ) -> str:
        """Prometheus text exposition of the counters, every defined variant included."""
        requests, errors = self.snapshot()
        known = {(flag, variant) for flag, variants in defined.items() for variant in variants}
        series = sorted(known | requests.keys() | errors.keys())
        lines = [
            "# HELP refapi_flag_requests_total Requests served, by the flag variants they got.",
            "# TYPE refapi_flag_requests_total counter",
            *(f"refapi_flag_requests_total{_labels(s)} {requests.get(s, 0)}" for s in series),
            "# HELP refapi_flag_errors_total Requests that failed (status >= 500 or an "
            "exception), by the flag variants they got.",
            "# TYPE refapi_flag_errors_total counter",
            *(f"refapi_flag_errors_total{_labels(s)} {errors.get(s, 0)}" for s in series),
            "# HELP refapi_flag_definitions_info The flag definitions in force: their SHA-256 "
            "and where they came from (a file or the packaged defaults).",
            "# TYPE refapi_flag_definitions_info gauge",
            f'refapi_flag_definitions_info{{sha256="{definitions_sha256}",'
            f'source="{_escape(definitions_source)}"}} 1',
            "# HELP refapi_flag_definitions_stale 1 while the flags file is missing or invalid "
            "and the last good definitions are served.",
            "# TYPE refapi_flag_definitions_stale gauge",
            f"refapi_flag_definitions_stale {int(stale)}",
        ]
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(series: Variant) -> str:
    flag, variant = series
    return f'{{flag="{_escape(flag)}",variant="{_escape(variant)}"}}'


class CountByVariant:
    """ASGI middleware: counts each request's outcome under the variants it was served with."""

    def __init__(self, app: ASGIApp, *, counters: FlagCounters, uncounted: frozenset[str]) -> None:
        self.app = app
        self.counters = counters
        self.uncounted = uncounted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.uncounted:
            await self.app(scope, receive, send)
            return
        served: set[Variant] = set()
        status = 500

        async def note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = _served.set(served)
        try:
            await self.app(scope, receive, note_status)
        except Exception:
            # Cancellation (the client went away) is no outcome and is not counted.
            self.counters.count(served, failed=True)
            raise
        else:
            self.counters.count(served, failed=status >= 500)
        finally:
            _served.reset(token)
