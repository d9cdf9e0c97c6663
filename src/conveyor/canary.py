"""Carry out a canary plan: the new color takes a rising share of traffic, each step judged.

Every host starts the new color, waits until it is ready and smoke-checks it (as blue-green
does), then all hosts move together through the steps: one runtime-API call per host splits
each live backend by weight, and the analysis (:mod:`conveyor.analysis`) reads every router's
counters and request log each ``sample`` seconds until the window passes, fails, or has too
little traffic to say. The last step is blue-green's switch and verify window; then the old
color drains (or stays warm) as after any deploy.

A failed window, a canary container that dies, too many inconclusive windows, or an abort asked
for with ``invoke rollout-abort`` (a request in the state volume, polled between samples) all
end the same way blue-green's failures do: every host back on the stable color at full weight,
the canary stopped, its logs kept, the reason and every verdict in the ledger.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import docker.errors

from conveyor import analysis, router
from conveyor.analysis import MeasurementError, Verdict, Window
from conveyor.bluegreen import BlueGreen, Execution, PhaseFailed
from conveyor.errors import ConveyorError
from conveyor.hosts import HostTarget
from conveyor.ledger import ReleaseRecord
from conveyor.plan import DeployPlan, HostPlan
from conveyor.steering import ABORT


class CanaryRollout(BlueGreen):
    """Blue-green's phases, with weighted, analysed steps between smoke and switch."""

    def __init__(
        self,
        *args: Any,
        on_window: Callable[[ReleaseRecord, Verdict], None] | None = None,
        poll_request: Callable[[], tuple[str, str] | None] | None = None,
        save: Callable[[ReleaseRecord], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.on_window = on_window
        # Writes the record to the ledger: each step is on record as it is taken.
        self.save = save or (lambda record: None)
        self.poll_request = poll_request or (lambda: None)
        self.promoted_by: str | None = None

    # --- the whole run -------------------------------------------------------------------

    def run(self, plan: DeployPlan, record: ReleaseRecord) -> Execution:
        run = Execution(plan=plan, record=record)
        record.canary = {
            "steps": list(self.env.canary.steps),
            "interval": self.env.canary.interval,
            "percent": 0,
            "state": "starting",
            "windows": [],
        }
        try:
            with self.phase(run, "prepare"):
                for host_plan in plan.hosts:
                    self.prepare(host_plan)
            for host_plan in plan.hosts:
                self.bring_up(run, host_plan)
            self.walk(run)
            record.canary["state"] = "promoting"
            for host_plan in plan.hosts:
                with self.phase(run, "switch", host_plan.host):
                    self.switch(run, self.targets[host_plan.host], host_plan)
            record.canary["percent"] = router.FULL
            for host_plan in plan.hosts:
                with self.phase(run, "verify", host_plan.host):
                    self.verify(self.targets[host_plan.host], host_plan)
        except PhaseFailed as failure:
            record.canary["state"] = "aborted"
            record.canary["percent"] = 0
            record.canary["reason"] = failure.reason
            self.undo(run, failure)
            raise
        record.canary["state"] = "promoted"
        self.conclude(run)
        return run

    def bring_up(self, run: Execution, host_plan: HostPlan) -> None:
        """Start, ready and smoke on one host: the canary exists, takes no traffic yet."""
        target = self.targets[host_plan.host]
        with self.phase(run, "start", host_plan.host):
            self.start(run, target, host_plan)
        with self.phase(run, "ready", host_plan.host):
            self.wait_ready(target, host_plan, run)
        with self.phase(run, "smoke", host_plan.host):
            self.smoke(target, host_plan)

    # --- the steps -----------------------------------------------------------------------

    def walk(self, run: Execution) -> None:
        """Every step below 100%, all hosts together, each until a window passes."""
        record = run.record
        inconclusive = 0
        limit = max(1, self.env.analysis.max_inconclusive)
        for percent in (p for p in self.env.canary.steps if p < router.FULL):
            with self.phase(run, "canary"):
                self.split(run, percent)
                while True:
                    verdict = self.window(run, percent)
                    self.out.say(f"  canary {verdict.line()}")
                    record.canary["windows"].append(verdict.as_dict())
                    if self.on_window is not None:
                        self.on_window(record, verdict)
                    if verdict.outcome == "pass" or self.promoted_by:
                        break
                    if verdict.outcome == "fail":
                        raise PhaseFailed("canary", f"canary at {verdict.line()}")
                    inconclusive += 1
                    if inconclusive >= limit:
                        raise PhaseFailed(
                            "canary",
                            f"{inconclusive} inconclusive window(s) (max_inconclusive "
                            f"{self.env.analysis.max_inconclusive}): too little evidence to "
                            f"promote; last: {verdict.line()}",
                        )
            if self.promoted_by:
                self.out.say(f"  promoted at {percent}% by {self.promoted_by}: switching now")
                return

    def split(self, run: Execution, percent: int) -> None:
        """Give the new color ``percent`` of every service's traffic, on every host."""
        for host_plan in run.plan.hosts:
            target = self.targets[host_plan.host]
            if target.name not in run.switched:
                self.clear_to_switch(target.name)
                run.switched.append(target.name)
            commands = [
                router.split_commands(
                    [m.service for m in host_plan.moves if m.to_color == color], color, percent
                )
                for color in sorted({m.to_color for m in host_plan.moves})
            ]
            target.admin("; ".join(commands))
            if run.switched_at is None:
                run.switched_at = time.monotonic()
        run.record.canary["percent"] = percent
        run.record.canary["state"] = "stepping"
        self.save(run.record)
        self.out.say(
            f"  canary: {percent}% of traffic on {run.plan.release.version} "
            f"on {', '.join(h.host for h in run.plan.hosts)}"
        )

    def switch(self, run: Execution, target: HostTarget, host_plan: HostPlan) -> None:
        """The last step: blue-green's switch (the host is already in ``switched``)."""
        if target.name in run.switched:
            run.switched.remove(target.name)
        super().switch(run, target, host_plan)

    # --- one window ----------------------------------------------------------------------

    def window(self, run: Execution, percent: int) -> Verdict:
        """Sample until the window ends, failing early on clear evidence or a request."""
        settings = self.env.analysis
        window = Window(settings, percent, self.env.services)
        sampler = Sampler(self.targets, run.plan)
        synthetic = (
            Synthetic(self.targets, self.env, run.plan) if self.env.canary.synthetic else None
        )
        began = time.monotonic()
        deadline = began + self.env.canary.interval
        try:
            sampler.start()
            if synthetic is not None:
                synthetic.start()
            while True:
                time.sleep(max(0.0, min(settings.sample, deadline - time.monotonic())))
                elapsed = time.monotonic() - began
                sampler.read(window)
                if synthetic is not None:
                    window.synthetic = synthetic.sent
                self.check_canaries(run)
                if self.answer_request(run):
                    return window.verdict(
                        "pass", "promoted", f"promoted by {self.promoted_by}", elapsed
                    )
                early = window.early(elapsed)
                if early is not None:
                    return early
                if time.monotonic() >= deadline:
                    return window.final(elapsed)
                self.out.progress(
                    f"  canary {percent}%: {elapsed:.0f}/{self.env.canary.interval:g} s, "
                    + "; ".join(
                        f"{s} {window.tallies[(s, 'canary')].describe()}" for s in window.services
                    )
                )
        finally:
            if synthetic is not None:
                synthetic.stop()

    def check_canaries(self, run: Execution) -> None:
        """A canary container that exits or turns unhealthy fails the step at once."""
        for host, containers in run.started.items():
            for container in containers:
                problem = self._container_problem(container)
                if problem:
                    raise PhaseFailed("canary", f"{host}: {container.name} {problem}")

    def answer_request(self, run: Execution) -> bool:
        """An abort raises; a promote returns True (the walk ends, the switch follows)."""
        request = self.poll_request()
        if request is None:
            return False
        action, by = request
        if action == ABORT:
            raise PhaseFailed("canary", f"aborted by {by} (invoke rollout-abort)")
        self.promoted_by = by
        run.record.canary["promoted_by"] = by
        return True


class Sampler:
    """Reads every host's router counters and request log since the previous read."""

    def __init__(self, targets: dict[str, HostTarget], plan: DeployPlan) -> None:
        self.targets = targets
        self.plan = plan
        self.counters: dict[str, dict[tuple[str, str], analysis.Counters]] = {}
        self.cursor: dict[str, float] = {}
        # Per host, (service, color) -> which side of the comparison that color is.
        self.sides: dict[str, dict[tuple[str, str], analysis.Side]] = {}
        for host_plan in plan.hosts:
            sides: dict[tuple[str, str], analysis.Side] = {}
            for move in host_plan.moves:
                sides[(move.service, move.to_color)] = "canary"
                if move.from_color:
                    sides[(move.service, move.from_color)] = "stable"
            self.sides[host_plan.host] = sides

    def start(self) -> None:
        for name, target in self._targets():
            self.cursor[name] = time.time()
            self.counters[name] = analysis.read_counters(
                target.admin("show stat"), target.env.services
            )

    def read(self, window: Window) -> None:
        for name, target in self._targets():
            try:
                self._read_host(name, target, window)
            except (ConveyorError, docker.errors.DockerException, OSError) as exc:
                window.measurement_failed(f"{name}: {exc}")

    def _targets(self) -> list[tuple[str, HostTarget]]:
        return [(h.host, self.targets[h.host]) for h in self.plan.hosts]

    def _read_host(self, name: str, target: HostTarget, window: Window) -> None:
        now = time.time()
        services = target.env.services
        counters = analysis.read_counters(target.admin("show stat"), services)
        log = target.router_log(self.cursor[name], now)
        before = self.counters.get(name, {})
        self.counters[name], self.cursor[name] = counters, now
        timed = analysis.latencies(log, services)
        for key, side in self.sides[name].items():
            if key not in before or key not in counters:
                raise MeasurementError(f"the router has no counters for {key[0]}@{key[1]}")
            tally = analysis.delta(before[key], counters[key])
            tally.add(timed.get(key, analysis.Tally()))
            window.add(key[0], side, tally)


class Synthetic:
    """Opt-in synthetic traffic (``[canary] synthetic`` requests per second): each service's
    health path through every host's public route, so a quiet environment can conclude."""

    def __init__(self, targets: dict[str, HostTarget], env: Any, plan: DeployPlan) -> None:
        self.targets = [targets[h.host] for h in plan.hosts]
        self.env = env
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="canary-synthetic", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        # N per second to each service on each host.
        pause = 1.0 / (self.env.canary.synthetic * len(self.env.services) * len(self.targets))
        while not self._stop.is_set():
            for target in self.targets:
                for service in self.env.services.values():
                    target.probe(
                        target.ports.public,
                        service.health.path,
                        timeout=service.health.timeout,
                        headers={router.SERVICE_HEADER: service.name},
                    )
                    self.sent += 1
                    if self._stop.wait(pause):
                        return
