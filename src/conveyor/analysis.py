"""Judge a canary against the stable color, from the routers' own counters.

Requests and errors come from ``show stat`` deltas per server (responses, 5xx, connection and
response errors, and retried connection attempts: a request HAProxy retried on the other color
still counts against the server that failed it). Latency comes from the router's per-request
log, because ``show stat``'s ``rtime`` averages the last 1024 requests and says nothing about a
5% canary's last few seconds.

A window compares the canary with the stable color over the same seconds. Too little traffic
never passes; clear evidence fails at once, between samples (a one-sided binomial test on the
errors, or the latency rule once both colors have enough requests); a measurement that errors
is never a pass. Every verdict carries its numbers and the rule that decided it.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from conveyor.config import Analysis
from conveyor.errors import ConveyorError
from conveyor.terms import COLORS

# Each request the router forwards, one line on its stdout (only under strategy = "canary").
LOG_TAG = "conveyor-req"
LOG_FORMAT = f"{LOG_TAG} %b %s %ST %Tr"

Outcome = Literal["pass", "fail", "inconclusive"]
Side = Literal["canary", "stable"]


class MeasurementError(ConveyorError):
    """The counters could not be read or make no sense (a router restarted mid-window)."""


@dataclass(frozen=True)
class Counters:
    """One server's cumulative counters, as ``show stat`` reports them."""

    responses: int = 0
    http_5xx: int = 0
    conn_errors: int = 0
    resp_errors: int = 0
    # Connection attempts retried elsewhere (``wretr``): with ``retries``/``redispatch`` a
    # server refusing connections shows here, not in ``econ``, and the user never saw it.
    retries: int = 0


def _number(row: Mapping[str, str], key: str) -> int:
    value = (row.get(key) or "").strip()
    return int(value) if value.isdigit() else 0


def read_counters(stat_csv: str, services: Iterable[str]) -> dict[tuple[str, str], Counters]:
    """Per (service, color), the live backend's server counters."""
    rows = list(csv.DictReader(io.StringIO(stat_csv.lstrip("# "))))
    wanted = {f"{name}_live": name for name in services}
    found: dict[tuple[str, str], Counters] = {}
    for row in rows:
        service = wanted.get(row.get("pxname") or "")
        color = row.get("svname")
        if service is None or color not in COLORS:
            continue
        found[(service, str(color))] = Counters(
            responses=sum(
                _number(row, f"hrsp_{kind}")
                for kind in ("1xx", "2xx", "3xx", "4xx", "5xx", "other")
            ),
            http_5xx=_number(row, "hrsp_5xx"),
            conn_errors=_number(row, "econ"),
            resp_errors=_number(row, "eresp"),
            retries=_number(row, "wretr"),
        )
    return found


@dataclass
class Tally:
    """Requests, errors and response times seen on one color over some seconds."""

    requests: int = 0
    errors: int = 0
    latency_sum_ms: float = 0.0
    latency_count: int = 0

    def add(self, other: Tally) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.latency_sum_ms += other.latency_sum_ms
        self.latency_count += other.latency_count

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def mean_ms(self) -> float | None:
        return self.latency_sum_ms / self.latency_count if self.latency_count else None

    def as_dict(self) -> dict[str, Any]:
        rate, mean = self.error_rate, self.mean_ms
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": None if rate is None else round(rate, 5),
            "mean_ms": None if mean is None else round(mean, 1),
            "timed": self.latency_count,
        }

    def describe(self) -> str:
        rate, mean = self.error_rate, self.mean_ms
        text = f"{self.errors}/{self.requests} errors"
        text += "" if rate is None else f" ({rate:.1%})"
        return text + ("" if mean is None else f", {mean:.0f} ms mean")


def delta(before: Counters, after: Counters) -> Tally:
    """The requests and errors between two reads of one server's counters."""
    steps = {
        "responses": after.responses - before.responses,
        "5xx": after.http_5xx - before.http_5xx,
        "econ": after.conn_errors - before.conn_errors,
        "eresp": after.resp_errors - before.resp_errors,
        "wretr": after.retries - before.retries,
    }
    if any(value < 0 for value in steps.values()):
        raise MeasurementError("the router's counters went back (it restarted mid-window)")
    # A retried attempt is a failure of this server's, though another one then answered.
    failed = steps["econ"] + steps["eresp"] + steps["wretr"]
    return Tally(requests=steps["responses"] + failed, errors=steps["5xx"] + failed)


def latencies(log_text: str, services: Iterable[str]) -> dict[tuple[str, str], Tally]:
    """Per (service, color), the summed response times of the log's forwarded requests."""
    wanted = {f"{name}_live": name for name in services}
    found: dict[tuple[str, str], Tally] = {}
    for line in log_text.splitlines():
        parts = line.split()
        if len(parts) != 5 or parts[0] != LOG_TAG:
            continue
        _tag, backend, color, _status, response_ms = parts
        service = wanted.get(backend)
        if service is None or color not in COLORS or not response_ms.isdigit():
            continue  # -1: no response (an error the counters already have)
        tally = found.setdefault((service, color), Tally())
        tally.latency_sum_ms += int(response_ms)
        tally.latency_count += 1
    return found


def binomial_tail(errors: int, total_errors: int, share: float) -> float:
    """P(X >= errors) for X ~ Binomial(total_errors, share): how likely it is that a canary
    taking ``share`` of the requests would get this many of the errors by chance alone (no
    worse than the stable color)."""
    if errors <= 0:
        return 1.0
    if share <= 0.0:
        return 0.0
    if share >= 1.0:
        return 1.0
    log_share, log_rest = math.log(share), math.log1p(-share)
    total = 0.0
    for k in range(errors, total_errors + 1):
        log_term = (
            math.lgamma(total_errors + 1)
            - math.lgamma(k + 1)
            - math.lgamma(total_errors - k + 1)
            + k * log_share
            + (total_errors - k) * log_rest
        )
        total += math.exp(log_term)
    return min(1.0, total)


@dataclass
class Verdict:
    """One window's judgement, with every number it was made from."""

    outcome: Outcome
    rule: str
    percent: int
    seconds: float
    reason: str
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    synthetic: int = 0
    early: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "rule": self.rule,
            "percent": self.percent,
            "seconds": round(self.seconds, 2),
            "reason": self.reason,
            "services": self.services,
            "synthetic": self.synthetic,
            "early": self.early,
        }

    def line(self) -> str:
        when = " (before the window ended)" if self.early else ""
        synthetic = f"; {self.synthetic} synthetic requests" if self.synthetic else ""
        return (
            f"{self.percent}%: {self.outcome} [{self.rule}]{when} after {self.seconds:.1f} s — "
            f"{self.reason}{synthetic}"
        )


@dataclass
class ServiceJudgement:
    """A rule's finding for one service: None when the rule does not fire."""

    outcome: Outcome
    rule: str
    reason: str


class Window:
    """The canary and stable tallies of one step's window, judged as samples arrive."""

    def __init__(
        self, settings: Analysis, percent: int, services: Iterable[str], *, latency: bool = True
    ) -> None:
        self.settings = settings
        # False where only counts are measured (a flag ramp's per-variant counters).
        self.latency = latency
        self.percent = percent
        self.services = list(services)
        self.tallies: dict[tuple[str, Side], Tally] = {
            (service, side): Tally() for service in self.services for side in ("canary", "stable")
        }
        self.synthetic = 0
        self.errors: list[str] = []

    def add(self, service: str, side: Side, tally: Tally) -> None:
        self.tallies[(service, side)].add(tally)

    def measurement_failed(self, problem: str) -> None:
        self.errors.append(problem)

    def numbers(self) -> dict[str, dict[str, Any]]:
        return {
            service: {
                side: self.tallies[(service, side)].as_dict() for side in ("canary", "stable")
            }
            for service in self.services
        }

    def verdict(self, outcome: Outcome, rule: str, reason: str, seconds: float) -> Verdict:
        return Verdict(
            outcome=outcome,
            rule=rule,
            percent=self.percent,
            seconds=seconds,
            reason=reason,
            services=self.numbers(),
            synthetic=self.synthetic,
        )

    # --- the rules -------------------------------------------------------------------------

    def _error_evidence(self, service: str) -> ServiceJudgement | None:
        """Clear evidence from the errors alone, at any sample: enough canary errors, a rate
        above stable's by more than the limit, and a binomial tail below ``fail_fast_p``."""
        canary, stable = self.tallies[(service, "canary")], self.tallies[(service, "stable")]
        s = self.settings
        if canary.errors < s.fail_fast_errors or not canary.requests:
            return None
        stable_rate = stable.error_rate or 0.0
        increase = (canary.error_rate or 0.0) - stable_rate
        if increase <= s.max_error_rate_increase:
            return None
        share = canary.requests / (canary.requests + stable.requests)
        p = binomial_tail(canary.errors, canary.errors + stable.errors, share)
        if p >= s.fail_fast_p:
            return None
        return ServiceJudgement(
            "fail",
            "fail-fast",
            f"{service}: canary {canary.describe()} against stable {stable.describe()}; "
            f"chance it is no worse p={p:.1e} < {s.fail_fast_p:g}, "
            f"increase {increase:+.1%} > {s.max_error_rate_increase:.1%}",
        )

    def _latency(self, service: str) -> ServiceJudgement | None:
        canary, stable = self.tallies[(service, "canary")], self.tallies[(service, "stable")]
        s = self.settings
        if not self.latency:
            return None
        if min(canary.latency_count, stable.latency_count) < s.min_requests:
            return None
        slow, base = canary.mean_ms or 0.0, stable.mean_ms or 0.0
        if slow > base * s.max_latency_ratio and slow - base > s.latency_slack_ms:
            ratio = f"{slow / base:.1f}x" if base else "from 0 ms"
            return ServiceJudgement(
                "fail",
                "latency",
                f"{service}: canary {slow:.0f} ms mean against stable {base:.0f} ms "
                f"({ratio} > {s.max_latency_ratio:g}x and +{slow - base:.0f} ms > "
                f"{s.latency_slack_ms:g} ms; {canary.latency_count} and "
                f"{stable.latency_count} timed requests)",
            )
        return None

    def _error_rate(self, service: str) -> ServiceJudgement | None:
        canary, stable = self.tallies[(service, "canary")], self.tallies[(service, "stable")]
        increase = (canary.error_rate or 0.0) - (stable.error_rate or 0.0)
        if increase > self.settings.max_error_rate_increase:
            return ServiceJudgement(
                "fail",
                "error-rate",
                f"{service}: canary {canary.describe()} against stable {stable.describe()} "
                f"(increase {increase:+.2%} > {self.settings.max_error_rate_increase:.2%})",
            )
        return None

    def _traffic(self, service: str) -> ServiceJudgement | None:
        canary, stable = self.tallies[(service, "canary")], self.tallies[(service, "stable")]
        floor = self.settings.min_requests
        if canary.requests >= floor and stable.requests >= floor:
            if self.latency and min(canary.latency_count, stable.latency_count) < floor:
                return ServiceJudgement(
                    "inconclusive",
                    "latency-unmeasured",
                    f"{service}: the router logged response times for {canary.latency_count} "
                    f"of {canary.requests} canary and {stable.latency_count} of "
                    f"{stable.requests} stable requests (need {floor})",
                )
            return None
        return ServiceJudgement(
            "inconclusive",
            "too-little-traffic",
            f"{service}: {canary.requests} canary and {stable.requests} stable requests "
            f"(need {floor} on each)",
        )

    # --- judging ---------------------------------------------------------------------------

    def early(self, seconds: float) -> Verdict | None:
        """Between samples: a failure as soon as the evidence is clear, else None."""
        for service in self.services:
            found = self._error_evidence(service) or self._latency(service)
            if found is not None:
                verdict = self.verdict(found.outcome, found.rule, found.reason, seconds)
                verdict.early = True
                return verdict
        return None

    def final(self, seconds: float) -> Verdict:
        """At the window's end: fail, inconclusive or pass, in that order of precedence."""
        if self.errors:
            return self.verdict(
                "inconclusive", "measurement-error", "; ".join(self.errors[-3:]), seconds
            )
        idle, short, passed = [], [], []
        for service in self.services:
            canary, stable = self.tallies[(service, "canary")], self.tallies[(service, "stable")]
            if canary.requests == 0 and stable.requests == 0:
                idle.append(service)
                continue
            found = (
                self._error_evidence(service)
                or self._latency(service)
                or self._traffic(service)
                or self._error_rate(service)
            )
            if found is not None and found.outcome == "fail":
                return self.verdict("fail", found.rule, found.reason, seconds)
            if found is not None:
                short.append(found)
                continue
            passed.append(f"{service}: canary {canary.describe()}, stable {stable.describe()}")
        if short:
            first = short[0]
            reason = "; ".join(s.reason for s in short)
            return self.verdict("inconclusive", first.rule, reason, seconds)
        if not passed:
            return self.verdict(
                "inconclusive", "too-little-traffic", "no requests on any service", seconds
            )
        idle_note = f"; idle, not judged: {', '.join(idle)}" if idle else ""
        s = self.settings
        limits = (
            f" (thresholds: error rate +{s.max_error_rate_increase:.2%}, latency "
            f"{s.max_latency_ratio:g}x and +{s.latency_slack_ms:g} ms, {s.min_requests} requests)"
        )
        reason = "; ".join(passed) + idle_note + limits
        return self.verdict("pass", "within-thresholds", reason, seconds)
