"""Canary against blue-green: the same bad releases under the same load, in one run.

Two bad releases, each shipped over a good 1.0.0 once with ``strategy = "blue-green"`` and once
with ``strategy = "canary"`` (steps 5, 25, 50, 100 every 10 s; the default ``[analysis]``: at 5%
of 250 req/s a 10 s window holds ~125 canary requests, above ``min_requests``):

- *fails soon*: ``fail-after-ready=3``, every request (probes too) answers 500 from 3 s after
  the api started — after ready, smoke and the switch, inside blue-green's 5 s verify window;
- *fails a share*: ``fail-ratio=0.3``, 30% of ordinary requests answer 500 while /healthz and
  /readyz stay healthy: blue-green's verify probes cannot see it, so it stays live.

Every row gets a fresh sandbox environment with 1.0.0 live and the same keep-alive load on the
public route (``/api/version``, 4 connections, 250 req/s) from 1 s before the deploy until a
fixed 30 s after it returned: a release nobody detected keeps failing users for the whole
window (and is then rolled back, outside it). Per row: requests and failed requests the load
saw, the deploy's outcome and the phase (and canary rule) that ended it, how long the bad
release answered users — from its first answer (or first failure) to its last, when traffic
was back on 1.0.0 — and from its first failure to then. Goal: for both releases the canary
costs users under half the failed requests blue-green costs.

One round is noisy for the first release: blue-green's cost is the load's rate times the gap
until a verify probe (every 0.25 s) meets the first 500, the canary's about ``fail_fast_errors``
plus up to a ``sample`` of 5% of the traffic. ``--rounds N`` runs every row N times,
interleaved, and the table shows medians with each round's failed requests.

``python -m benchmarks canary [--rounds N]`` writes ``reports/bench/canary.json``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks import environment, report
from conveyor import engine, health, operations
from conveyor.console import Console
from conveyor.errors import DeployFailed
from testkit import sandbox
from testkit.loadgen import KeepAliveLoad, LoadResult

RATE = 250.0
CONNECTIONS = 4
VERIFY = 5.0
DRAIN = 0.5
FAIL_AFTER = 3
CANARY = "{ steps = [5, 25, 50, 100], interval = 10 }"
GOOD = "1.0.0"
# kind -> (version, refapi fault)
BAD = {
    "fails soon": ("1.1.0+failsoon", f"fail-after-ready={FAIL_AFTER}"),
    "fails a share": ("1.2.0+failshare", "fail-ratio=0.3"),
}
STRATEGIES = ("blue-green", "canary")
SETTLE = 1.0  # seconds of load before each deploy
OBSERVE = 30.0  # seconds of load after each deploy returned, the same for every row
LOAD_BOUND = 240.0  # the load stops by itself after this many seconds whatever happens


def ship(bench: environment.BenchEnvironment, version: str) -> dict[str, Any]:
    """Deploy ``version`` over the live 1.0.0 under load; the load's and the ledger's view."""
    cfg, name, port = bench.config, bench.name, bench.ports[0]
    quiet = Console(quiet=True)
    load = KeepAliveLoad(
        "127.0.0.1",
        port,
        "/api/version",
        connections=CONNECTIONS,
        rate=RATE,
        max_seconds=LOAD_BOUND,
        track_versions=True,
    )
    failure: str | None = None
    with load:
        time.sleep(SETTLE)
        began = load.elapsed()
        try:
            operations.deploy(cfg, name, version=version, out=quiet)
        except DeployFailed as exc:
            failure = str(exc)
        ended = load.elapsed()
        time.sleep(max(0.0, ended + OBSERVE - load.elapsed()))
    answer = health.probe("127.0.0.1", port, "/api/version")
    served = (answer.body or {}).get("version")
    record = operations.history(cfg, name)[-1].as_dict()
    row = {
        "load": load.result.as_dict(),
        "observed_s": round(load.result.seconds - SETTLE, 3),
        "deploy_s": round(ended - began, 3),
        "outcome": record["outcome"],
        "failed_phase": record["failed_phase"],
        "reason": record["reason"],
        "error": failure,
        "served_after_window": served,
        "detected": failure is not None and served == GOOD,
        **exposure(load.result, version, began, ended),
    }
    windows = (record.get("canary") or {}).get("windows") or []
    if windows:
        row["canary_windows"] = windows
    if served == version:  # nobody noticed: put 1.0.0 back, outside the measured window
        operations.rollback(cfg, name, out=quiet)
        row["rolled_back_after_window"] = True
    return row


def exposure(result: LoadResult, version: str, began: float, ended: float) -> dict[str, Any]:
    """When users met the bad release, on the load's clock (seconds since it began)."""
    answered = result.versions.get(version)
    failures = result.failure_times
    firsts = ([answered[0]] if answered else []) + failures[:1]
    lasts = ([answered[1]] if answered else []) + failures[-1:]
    first, last = (min(firsts), max(lasts)) if firsts else (None, None)
    return {
        "deploy_began_at_s": round(began, 3),
        "deploy_ended_at_s": round(ended, 3),
        "first_bad_at_s": None if first is None else round(first, 3),
        "first_failure_at_s": round(failures[0], 3) if failures else None,
        "last_bad_at_s": None if last is None else round(last, 3),
    }


def run_row(
    made: environment.Releases, folder: Path, strategy: str, version: str
) -> dict[str, Any]:
    """A fresh environment with 1.0.0 live, ``version`` shipped under load, torn down."""
    canary = CANARY if strategy == "canary" else None
    bench = environment.write_environment(
        folder, made.dist, verify=VERIFY, drain=DRAIN, canary=canary
    )
    try:
        # A first deploy has nothing to compare with: blue-green under either strategy.
        operations.deploy(bench.config, bench.name, version=GOOD, out=Console(quiet=True))
        return ship(bench, version)
    finally:
        sandbox.teardown(made.client, bench.name)


Rows = dict[str, dict[str, list[dict[str, Any]]]]  # kind -> strategy -> one row per round


def run(rounds: int) -> Rows:
    """Build once, then every row ``rounds`` times, interleaved (drift hits every row alike)."""
    client = engine.connect()
    rows: Rows = {kind: {strategy: [] for strategy in STRATEGIES} for kind in BAD}
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-canary-") as tmp:
        folder = Path(tmp)
        made = environment.build(client, folder)
        try:
            made.derive(GOOD)
            for version, fault in BAD.values():
                made.derive(version, fault=fault)
            for round_ in range(1, rounds + 1):
                for kind, (version, _fault) in BAD.items():
                    for strategy in STRATEGIES:
                        print(f"  round {round_}/{rounds}: {kind} shipped {strategy}…", flush=True)
                        rows[kind][strategy].append(run_row(made, folder, strategy, version))
        finally:
            made.remove()
    return rows


def ended_by(row: dict[str, Any]) -> str:
    """The phase that ended the deploy, with the canary's step and rule when it judged."""
    if row["outcome"] == "succeeded":
        return "-"
    phase = str(row["failed_phase"])
    windows = row.get("canary_windows") or []
    if phase == "canary" and windows:
        last = windows[-1]
        return f"canary {last['percent']}% [{last['rule']}]"
    return phase


def between(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start


def median(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row from a row's rounds: medians, and every round's failed requests."""
    detected = [r for r in rounds if r["detected"]]
    failed = [r["load"]["failures"] for r in rounds]
    requests = [r["load"]["requests"] for r in rounds]
    return {
        "outcome": "/".join(sorted({r["outcome"] for r in rounds})),
        "ended_in": "/".join(sorted({ended_by(r) for r in rounds})),
        "requests": median(requests),
        "failed": median(failed),
        "failed_each_round": failed,
        "failed_share": median([f / n for f, n in zip(failed, requests, strict=True) if n]),
        "undetected_rounds": len(rounds) - len(detected),
        # Over the rounds in which it was detected.
        "bad_answered_s": median(
            between(r["first_bad_at_s"], r["last_bad_at_s"]) for r in detected
        ),
        "first_failure_to_good_s": median(
            between(r["first_failure_at_s"], r["last_bad_at_s"]) for r in detected
        ),
        "deploy_s": median([r["deploy_s"] for r in rounds]),
    }


def shown(value: float | None, undetected: int, rounds: int, live: str) -> float | str:
    """A detection time, or why there is none: never detected, or not in every round."""
    if undetected == rounds:
        return live
    text = "-" if value is None else f"{value:.2f}"
    return text + (f" ({undetected} of {rounds} not detected)" if undetected else "")


def print_table(summary: dict[str, dict[str, dict[str, Any]]], rounds: int) -> dict[str, bool]:
    lines = []
    for kind, strategies in summary.items():
        for strategy, row in strategies.items():
            undetected = row["undetected_rounds"]
            failed = f"{row['failed']:g}"
            if rounds > 1:
                failed += f" ({', '.join(str(f) for f in row['failed_each_round'])})"
            lines.append(
                [
                    f"{kind} ({BAD[kind][1]})",
                    strategy,
                    row["outcome"],
                    row["ended_in"],
                    f"{row['requests']:g}",
                    failed,
                    "-" if row["failed_share"] is None else f"{row['failed_share']:.2%}",
                    shown(row["bad_answered_s"], undetected, rounds, "not detected"),
                    shown(row["first_failure_to_good_s"], undetected, rounds, "still live"),
                    f"{row['deploy_s']:.1f}",
                ]
            )
    each = (
        f"median of {rounds} rounds per row (failed: each round in brackets)"
        if rounds > 1
        else "one round"
    )
    title = (
        f"Bad releases over a live {GOOD}: blue-green against canary, {each}; {RATE:.0f} req/s "
        f"keep-alive load ({CONNECTIONS} connections) from {SETTLE:g} s before each deploy to "
        f"{OBSERVE:g} s after it returned"
    )
    columns = ["bad release", "strategy", "outcome", "ended in", "requests", "failed", "failed %"]
    columns += ["bad answered users s", "first failure → 1.0.0 s", "deploy s"]
    print(report.table(title, columns, lines))
    print(
        f"  verify window {VERIFY:g} s; canary steps 5/25/50/100% every 10 s, default [analysis]. "
        "bad answered users: its first answer (or failure) to its last, when traffic was back "
        f"on {GOOD}; not detected: still live after the window, then rolled back."
    )
    goals = {}
    for kind, strategies in summary.items():
        canary, blue_green = strategies["canary"], strategies["blue-green"]
        met = canary["failed"] < blue_green["failed"] / 2
        goals[kind] = met
        pairs = zip(canary["failed_each_round"], blue_green["failed_each_round"], strict=True)
        per_round = sum(c < b / 2 for c, b in pairs)
        print(
            f"  goal: {kind}: canary costs under half of blue-green's failed requests "
            f"({canary['failed']:g} against {blue_green['failed']:g}"
            + (f"; met in {per_round} of {rounds} rounds" if rounds > 1 else "")
            + f"): {'met' if met else 'NOT met'}"
        )
    return goals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks canary")
    parser.add_argument(
        "--rounds", type=int, default=1, help="times each row runs; the table shows medians"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be between 1 and 20")
    began = time.monotonic()
    rows = run(args.rounds)
    summary = {
        kind: {strategy: summarise(rounds) for strategy, rounds in strategies.items()}
        for kind, strategies in rows.items()
    }
    goals = print_table(summary, args.rounds)
    path = report.write(
        "canary",
        {
            "rate": RATE,
            "connections": CONNECTIONS,
            "route": "/api/version",
            "verify_s": VERIFY,
            "drain_s": DRAIN,
            "canary": CANARY,
            "analysis": "defaults",
            "settle_s": SETTLE,
            "observe_after_deploy_s": OBSERVE,
            "rounds": args.rounds,
            "releases": {kind: {"version": v, "fault": f} for kind, (v, f) in BAD.items()},
            "goals": {
                kind: {"canary_under_half_of_blue_green": met} for kind, met in goals.items()
            },
            "seconds": round(time.monotonic() - began, 1),
            "summary": summary,
            "rows": rows,
        },
    )
    print(f"  wrote {path}")
