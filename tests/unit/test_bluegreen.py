"""The orderings blue-green keeps while it overlaps its ledger and file writes with waits.

Each run against a real engine is in tests/integration; these pin what must happen before
what, which a real run shows only when the timing is unlucky: the old color is never stopped
before the verified record is written (and not at all if that write failed), and a switch back
never lets the new colors' config file land after the old ones'.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conveyor import config
from conveyor.bluegreen import INSPECT_EVERY, BlueGreen, Execution
from conveyor.console import Console
from conveyor.errors import StateUnwritable
from conveyor.health import Probe
from conveyor.plan import DeployPlan, HostPlan, ServiceMove

ROOT = Path(__file__).resolve().parents[2]


class FakeHost:
    """One host's router and containers, recording what was done to them, in order."""

    def __init__(self, events: list[str], *, write_seconds: float = 0.0) -> None:
        self.name = "h1"
        self.events = events
        self.write_seconds = write_seconds
        self.lock = threading.Lock()

    def _note(self, event: str) -> None:
        with self.lock:
            self.events.append(event)

    def stop_service_container(self, name: str) -> None:
        self._note(f"stop {name}")

    def admin(self, command: str) -> str:
        self._note("park" if "preview" in command else "switch")
        return ""

    def service_containers(self) -> list[Any]:
        return [SimpleNamespace(running=True, name="api-blue", service="api", color="blue")]

    def write_router_config(self, live: dict[str, str | None]) -> None:
        time.sleep(self.write_seconds)
        self._note(f"config {live['api']}")


def plan(kind: str = "rollback") -> DeployPlan:
    move = ServiceMove("api", "blue", "green", 9102, None, "api-green")  # type: ignore[arg-type]
    return DeployPlan(
        kind=kind,  # type: ignore[arg-type]
        environment="staging",
        release_id="r0002",
        release=SimpleNamespace(version="2.0.0"),  # type: ignore[arg-type]
        hosts=(HostPlan("h1", (move,)),),
        public={},
        verify_seconds=0.0,
        drain_seconds=0.05,
    )


def executor(host: FakeHost, **hooks: Any) -> BlueGreen:
    env = config.load(ROOT / "deploy.toml").environment("staging")
    return BlueGreen(env, {"h1": host}, None, Console(quiet=True), **hooks)  # type: ignore[arg-type,dict-item]


def test_the_old_color_stops_only_after_the_verified_record_is_written() -> None:
    events: list[str] = []
    host = FakeHost(events)

    def verified() -> None:
        time.sleep(0.3)  # longer than the drain: the stop must wait for it
        host._note("verified")

    blue_green = executor(host, on_verified=verified, on_phase=lambda p: host._note(f"phase {p}"))
    run = Execution(plan=plan(), record=None)  # type: ignore[arg-type]
    blue_green.conclude(run)
    run.wait_stopped()
    assert events == ["park", "verified", "phase drain", "stop api-blue"]


def test_a_verified_record_that_cannot_be_written_stops_nothing_and_is_raised() -> None:
    events: list[str] = []
    host = FakeHost(events)

    def verified() -> None:
        raise StateUnwritable("the state volume is full", "free space on it")

    blue_green = executor(host, on_verified=verified, on_phase=lambda p: host._note(f"phase {p}"))
    run = Execution(plan=plan(), record=None)  # type: ignore[arg-type]
    with pytest.raises(StateUnwritable):
        blue_green.conclude(run)
    assert run.stopping is None
    assert events == ["park"]


def test_a_switch_back_waits_for_the_new_colors_config_write() -> None:
    events: list[str] = []
    host = FakeHost(events, write_seconds=0.3)
    blue_green = executor(host)
    run = Execution(plan=plan(), record=SimpleNamespace(id="r0002", logs=[]))  # type: ignore[arg-type]
    blue_green.switch(run, host, run.plan.hosts[0])  # type: ignore[arg-type]
    blue_green.switch_back(run)
    assert events == ["switch", "config green", "switch", "config blue", "park"]


def test_the_switch_waits_for_the_intent_that_was_written_during_ready() -> None:
    """The intent is written while the new color gets ready (in the background); the switch
    happens only once it is on the ledger, and only after the lock check."""
    events: list[str] = []
    host = FakeHost(events)

    def intent(name: str) -> None:
        time.sleep(0.3)  # the write outlasts the wait for readiness: the switch must wait
        host._note(f"intent {name}")

    blue_green = executor(
        host, on_intent=intent, before_switch=lambda name: host._note(f"lock {name}")
    )
    run = Execution(plan=plan(), record=SimpleNamespace(id="r0002", logs=[]))  # type: ignore[arg-type]
    blue_green.intend("h1")
    host._note("ready")
    blue_green.switch(run, host, run.plan.hosts[0])  # type: ignore[arg-type]
    blue_green.config_writes["h1"].result()
    assert events == ["ready", "intent h1", "lock h1", "switch", "config green"]


def test_a_refused_intent_stops_the_run_before_the_switch() -> None:
    events: list[str] = []
    host = FakeHost(events)

    def intent(name: str) -> None:
        raise StateUnwritable("the state volume is full", "free space on it")

    blue_green = executor(host, on_intent=intent)
    run = Execution(plan=plan(), record=SimpleNamespace(id="r0002", logs=[]))  # type: ignore[arg-type]
    blue_green.intend("h1")
    with pytest.raises(StateUnwritable):
        blue_green.switch(run, host, run.plan.hosts[0])  # type: ignore[arg-type]
    assert events == [] and run.switched == []


def test_a_failure_before_the_switch_waits_for_the_intent_and_unsays_it() -> None:
    """Ready failed while the intent was being written: the record of the failure is written
    after it (never beside it), and does not name the host as switched."""
    events: list[str] = []
    host = FakeHost(events)
    record = SimpleNamespace(id="r0002", logs=[], switched=[])

    def intent(name: str) -> None:
        record.switched.append(name)
        time.sleep(0.3)
        host._note(f"intent {name}")

    blue_green = executor(host, on_intent=intent)
    run = Execution(plan=plan(), record=record)  # type: ignore[arg-type]
    blue_green.intend("h1")
    blue_green.settle_intents(run)
    host._note("failure recorded")
    assert events == ["intent h1", "failure recorded"]
    assert record.switched == []


class StartingContainer:
    """A new color whose /readyz answers 503 until ``ready_at``; counts the engine reads."""

    def __init__(self, ready_in: float) -> None:
        self.ready_at = time.monotonic() + ready_in
        self.labels = {"conveyor.service": "api"}
        self.attrs: dict[str, Any] = {"State": {"Status": "running"}}
        self.inspects: list[float] = []

    def reload(self) -> None:
        self.inspects.append(time.monotonic())

    def readyz(self) -> Probe:
        if time.monotonic() < self.ready_at:
            return Probe(503, {"version": "2.0.0"})
        return Probe(200, {"version": "2.0.0"})


def test_waiting_for_ready_reads_the_engine_at_most_every_quarter_second_and_at_the_end() -> None:
    container = StartingContainer(ready_in=0.6)
    host = SimpleNamespace(
        name="h1",
        probe=lambda port, path, timeout: container.readyz(),
    )
    image = SimpleNamespace(version="2.0.0")
    move = ServiceMove("api", "blue", "green", 9102, image, "api-green")  # type: ignore[arg-type]
    run = Execution(plan(), None, started={"h1": [container]})  # type: ignore[arg-type,list-item]
    probes = 0.6 / 0.05
    executor(FakeHost([])).wait_ready(host, HostPlan("h1", (move,)), run)  # type: ignore[arg-type]
    gaps = [b - a for a, b in zip(container.inspects, container.inspects[1:-1], strict=False)]
    assert 3 <= len(container.inspects) <= 5 < probes, container.inspects
    assert all(gap >= INSPECT_EVERY - 0.01 for gap in gaps), gaps
    assert container.inspects[-1] >= container.ready_at, "the state is read once more when ready"
