"""Soak: N consecutive deploys and rollbacks under constant keep-alive load.

One sandbox environment on the local engine; each cycle deploys 2.0.0 over 1.0.0 and rolls
back, while a bounded keep-alive load runs on the public route the whole time. Written to
``reports/soak/soak.json`` with a short table: failed requests (goal 0), per-cycle time p50
and p99, what is left after every cycle and after cleanup (goal 0 leftovers), the ledger's
records and their checksums (every record intact), and the router's memory and open file
descriptors at the start and the end (a leak shows as growth).

``python -m benchmarks soak [--cycles N] [--out DIR]``; a 10-cycle run is a CI test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import environment, report
from conveyor import config, engine, operations
from conveyor.console import Console
from conveyor.session import Session
from testkit import sandbox
from testkit.loadgen import KeepAliveLoad

ROOT = Path(__file__).resolve().parent.parent
RATE = 100.0
CONNECTIONS = 4
SECONDS_PER_CYCLE_BOUND = 60


def router_usage(client: Any, env: str) -> dict[str, int]:
    """The router container's memory (bytes, from the engine) and open fds (all its processes)."""
    router = client.containers.get(f"conveyor-{env}-router")
    stats = router.stats(stream=False)
    fds = 0
    for row in router.top().get("Processes") or []:
        pid = row[1]
        folder = Path(f"/proc/{pid}/fd")
        if folder.is_dir():
            fds += sum(1 for _ in folder.iterdir())
    return {"memory_bytes": int(stats.get("memory_stats", {}).get("usage", 0)), "fds": fds}


def leftovers(client: Any, env: str) -> dict[str, int]:
    """What the engine holds for the environment: every container, and the running ones that
    serve nothing (a cycle's debris)."""
    containers = client.containers.list(all=True, filters={"label": f"conveyor.env={env}"})
    services = [c for c in containers if c.labels.get("conveyor.role") == "service"]
    return {
        "containers": len(containers),
        "service_containers": len(services),
        "volumes": len(client.volumes.list(filters={"name": f"conveyor-{env}-"})),
    }


def ledger_check(cfg: config.Config, env: str) -> dict[str, Any]:
    session = Session(cfg, env, Console(quiet=True))
    records = session.ledger.records()
    return {
        "records": len(records),
        "outcomes": sorted({r.outcome for r in records}),
        "unreadable": list(session.ledger.unreadable),
        "forged": list(getattr(session.ledger, "forged", [])),
    }


def soak(cfg: config.Config, env: str, port: int, cycles: int) -> dict[str, Any]:
    quiet = Console(quiet=True)
    client = engine.connect()
    operations.deploy(cfg, env, version="1.0.0", out=quiet)
    start_usage = router_usage(client, env)
    times: list[float] = []
    status_leftovers = 0
    load = KeepAliveLoad(
        "127.0.0.1",
        port,
        "/api/version",
        connections=CONNECTIONS,
        rate=RATE,
        max_seconds=cycles * SECONDS_PER_CYCLE_BOUND + 30,
    )
    with load:
        for _ in range(cycles):
            began = time.monotonic()
            operations.deploy(cfg, env, version="2.0.0", out=quiet)
            operations.rollback(cfg, env, out=quiet)
            times.append(time.monotonic() - began)
            state = Session(cfg, env, quiet).observe()
            status_leftovers += sum(len(h.leftovers(state.live_record())) for h in state.hosts)
    return {
        "cycles": cycles,
        "load": load.result.as_dict(),
        "cycle_s": {
            "p50": statistics.median(times),
            "p99": sorted(times)[max(0, round(0.99 * len(times)) - 1)],
            "all": [round(t, 3) for t in times],
        },
        "leftovers_seen_after_cycles": status_leftovers,
        "engine_before_cleanup": leftovers(client, env),
        "ledger": ledger_check(cfg, env),
        "router": {"start": start_usage, "end": router_usage(client, env)},
    }


def run(cycles: int) -> dict[str, Any]:
    """Build the release, derive 1.0.0 and 2.0.0, soak a sandbox environment, clean up."""
    client = engine.connect()
    with tempfile.TemporaryDirectory(prefix="conveyor-soak-") as tmp:
        bench = environment.prepare(client, Path(tmp), verify=0.5, drain=0.2)
        cfg, name, ports = bench.config, bench.name, bench.ports
        try:
            result = soak(cfg, name, ports[0], cycles)
        finally:
            sandbox.teardown(client, name)
        result["engine_after_cleanup"] = leftovers(client, name)
    return result


def print_table(result: dict[str, Any]) -> None:
    load, ledger, router = result["load"], result["ledger"], result["router"]
    cycle, after = result["cycle_s"], result["engine_after_cleanup"]
    start, end = router["start"], router["end"]
    expected_records = 1 + 2 * result["cycles"]
    rows = [
        ["failed requests", f"{load['failures']} of {load['requests']}", "0"],
        ["cycle p50 / p99 s", f"{cycle['p50']:.2f} / {cycle['p99']:.2f}", "-"],
        ["leftovers seen after cycles", result["leftovers_seen_after_cycles"], "0"],
        [
            "containers kept (before cleanup)",
            result["engine_before_cleanup"]["containers"],
            "bounded",
        ],
        ["containers, volumes after cleanup", f"{after['containers']}, {after['volumes']}", "0, 0"],
        [
            "ledger records (unreadable, forged)",
            f"{ledger['records']} ({len(ledger['unreadable'])}, {len(ledger['forged'])})",
            f"{expected_records} (0, 0)",
        ],
        [
            "router memory MB start → end",
            f"{start['memory_bytes'] / 1e6:.1f} → {end['memory_bytes'] / 1e6:.1f}",
            "flat",
        ],
        ["router fds start → end", f"{start['fds']} → {end['fds']}", "flat"],
    ]
    title = (
        f"Soak: {result['cycles']} deploy + rollback cycles under {RATE:.0f} req/s keep-alive "
        f"load ({CONNECTIONS} connections)"
    )
    print(report.table(title, ["measure", "value", "goal"], rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks soak")
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("reports/soak"))
    args = parser.parse_args(argv)
    result = run(args.cycles)
    print_table(result)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "soak.json"
    path.write_text(json.dumps({"benchmark": "soak", **result}, indent=2) + "\n", "utf-8")
    print(f"  wrote {path}")
