"""Deploy and rollback under constant keep-alive load, against the naive stop-then-start.

Every case runs under at least 200 requests/s of keep-alive HTTP on the public route and
counts every failed request, reset and non-2xx answer. Per case: requests, failures, p50/p99
latency, the time from "new color ready" to "all traffic on it" (the last old-version answer),
the switch call itself, and the deploy's total time against its lower bound (container start
to first ready answer). Goals: 0 failed requests in deploy and rollback, switch under 100 ms,
rollback to a kept release under 2 s, deploy under 1.5x its lower bound, and a rollback to the
release kept warm (``keep_warm``) switched within 100 ms of its start (in process, imports and the
verify window excluded; the lock is included).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import environment, report
from conveyor import config, engine, health, operations, releases
from conveyor.console import Console
from conveyor.hosts import connect_hosts
from testkit import sandbox
from testkit.loadgen import KeepAliveLoad, LoadResult

ROOT = Path(__file__).resolve().parent.parent
RATE = 250.0
CONNECTIONS = 8


def _load(port: int) -> KeepAliveLoad:
    return KeepAliveLoad(
        "127.0.0.1",
        port,
        "/api/version",
        connections=CONNECTIONS,
        rate=RATE,
        max_seconds=120,
        track_versions=True,
    )


def _cutover_ms(
    load: KeepAliveLoad, result: LoadResult, ready_at: float | None, old: str
) -> float | None:
    """From the new color being ready to the last answer from the old version."""
    if ready_at is None or old not in result.versions:
        return None
    last_old = load.started + result.versions[old][1]
    return max(0.0, last_old - ready_at) * 1000


def run_move(cfg: config.Config, name: str, port: int, action: Any, old: str) -> dict[str, Any]:
    load = _load(port)
    with load:
        time.sleep(0.5)  # the load is steady before the deploy begins
        began = time.monotonic()
        outcome = action()
        took = time.monotonic() - began
        time.sleep(0.5)
    result = load.result
    execution = outcome.execution
    lower = (
        (execution.ready_at - execution.first_start)
        if execution.first_start and execution.ready_at
        else None
    )
    waits = cfg.environment(name).timeouts.verify + cfg.environment(name).timeouts.drain
    return {
        "load": result.as_dict(),
        "cutover_ms": _cutover_ms(load, result, execution.ready_at, old),
        "switch_call_ms": max(execution.switch_seconds) * 1000
        if execution.switch_seconds
        else None,
        "total_s": took,
        "lower_bound_s": lower,
        "configured_waits_s": waits,
        "phases": outcome.record.phases,
        # From the command's start (in process, imports excluded) to the switch call returned.
        "to_switch_s": (execution.switched_at - began) if execution.switched_at else None,
    }


def run_naive(
    cfg: config.Config, name: str, port: int, image_id: str, version: str
) -> dict[str, Any]:
    """Stop the live api container, start the new image in its place: the usual 'deploy'."""
    env = cfg.environment(name)
    target = connect_hosts(cfg, env)[0]
    live = [c for c in target.service_containers() if c.service == "api" and c.running]
    container = target.client.containers.get(live[-1].id)
    color = live[-1].color
    load = _load(port)
    with load:
        time.sleep(0.5)
        began = time.monotonic()
        container.stop(timeout=10)
        fresh = target.create_service_container(
            env.services["api"], color, "naive", version, image_id
        )
        started = time.monotonic()
        fresh.start()
        ready, _ = health.wait_until(
            lambda: target.probe(target.ports.services["api"][color], "/readyz"),
            timeout=60,
            interval=0.05,
        )
        done = time.monotonic()
        time.sleep(0.5)
    return {
        "load": load.result.as_dict(),
        "cutover_ms": None,
        "switch_call_ms": None,
        "total_s": done - began,
        "lower_bound_s": done - started if ready else None,
        "configured_waits_s": 0.0,
        "phases": {},
    }


def main() -> None:
    client = engine.connect()
    quiet = Console(quiet=True)
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-deploy-") as tmp:
        bench = environment.prepare(client, Path(tmp), verify=1.0, drain=0.5)
        cfg, name, ports = bench.config, bench.name, bench.ports
        try:
            operations.deploy(cfg, name, version="1.0.0", out=quiet)  # warm-up: router, volumes
            cases = {
                "deploy 1.0.0 → 2.0.0": run_move(
                    cfg,
                    name,
                    ports[0],
                    lambda: operations.deploy(cfg, name, version="2.0.0", out=quiet),
                    "1.0.0",
                ),
                "rollback → 1.0.0 (kept container)": run_move(
                    cfg,
                    name,
                    ports[0],
                    lambda: operations.rollback(cfg, name, out=quiet),
                    "2.0.0",
                ),
            }
            # The same two releases with the previous one kept warm: the rollback only switches.
            warm_env = dataclasses.replace(cfg.environment(name), keep_warm=600.0)
            warm_cfg = dataclasses.replace(cfg, environments={name: warm_env})
            operations.deploy(warm_cfg, name, version="2.0.0", out=quiet)  # 1.0.0 stays warm
            cases["rollback → 1.0.0 (warm release)"] = run_move(
                warm_cfg,
                name,
                ports[0],
                lambda: operations.rollback(warm_cfg, name, out=quiet),
                "2.0.0",
            )
            api_v2 = releases.release_from_dist(cfg, cfg.environment(name), "2.0.0").images["api"]
            cases["naive: stop old, start new"] = run_naive(
                cfg, name, ports[0], api_v2.image_id, "2.0.0"
            )
        finally:
            sandbox.teardown(client, name)

    rows = []
    for case, data in cases.items():
        load = data["load"]
        lower = data["lower_bound_s"]
        net = data["total_s"] - data["configured_waits_s"]
        rows.append(
            [
                case,
                load["requests"],
                load["failures"],
                load["rate"],
                load["p50_ms"],
                load["p99_ms"],
                "-" if data["cutover_ms"] is None else round(data["cutover_ms"], 1),
                "-" if data["switch_call_ms"] is None else round(data["switch_call_ms"], 2),
                data["total_s"],
                "-" if not data.get("to_switch_s") else round(data["to_switch_s"] * 1000),
                "-" if lower is None else lower,
                "-" if not lower else round(net / lower, 2),
            ]
        )
    print(
        report.table(
            f"Deploys under {RATE:.0f} req/s keep-alive load ({CONNECTIONS} connections)",
            [
                "case",
                "requests",
                "failed",
                "req/s",
                "p50 ms",
                "p99 ms",
                "ready→all traffic ms",
                "switch call ms",
                "total s",
                "start→switched ms",
                "lower bound s",
                "(total - waits)/lb",
            ],
            rows,
        )
    )
    deploy_case = cases["deploy 1.0.0 → 2.0.0"]
    rollback_case = cases["rollback → 1.0.0 (kept container)"]
    print("  total - waits: the configured verify window and drain are excluded (they are policy).")
    no_failures = deploy_case["load"]["failures"] == rollback_case["load"]["failures"] == 0
    fast_switch = (deploy_case["cutover_ms"] or 1e9) < 100
    rollback_net = rollback_case["total_s"] - rollback_case["configured_waits_s"]
    deploy_ratio = (deploy_case["total_s"] - deploy_case["configured_waits_s"]) / (
        deploy_case["lower_bound_s"] or 1e9
    )
    warm_case = cases["rollback → 1.0.0 (warm release)"]
    warm_ms = warm_case["to_switch_s"] * 1000
    no_failures = no_failures and warm_case["load"]["failures"] == 0
    for goal, met in [
        ("0 failed requests in deploy and rollback", no_failures),
        (f"rollback to a warm release switched within 100 ms ({warm_ms:.0f} ms)", warm_ms < 100),
        ("ready → all traffic under 100 ms", fast_switch),
        (
            f"rollback to a kept release under 2 s ({rollback_net:.2f} s, waits excluded)",
            rollback_net < 2,
        ),
        (
            f"deploy under 1.5x its lower bound ({deploy_ratio:.2f}x, waits excluded)",
            deploy_ratio < 1.5,
        ),
    ]:
        print(f"  goal: {goal}: {'met' if met else 'NOT met'}")
    path = report.write("deploy", {"rate": RATE, "connections": CONNECTIONS, "cases": cases})
    print(f"  wrote {path}")
