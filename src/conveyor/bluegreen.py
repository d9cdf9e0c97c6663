"""Carry out a blue-green plan against the real engines, narrating each step.

Hosts move one at a time: start the new color beside the live one, wait until it is ready,
smoke-check it through the router's preview route, switch traffic with one runtime-API call,
then watch it for the verify window. A failure before drain switches every host already moved
back to its old color (still running: the old color is stopped only after every host passed
verify and drained), parks the preview route, saves the new containers' logs, stops them, and
raises ``PhaseFailed`` naming the phase. That is the automatic rollback. Two hooks let the
transaction write the ledger at the moments a crash must be understood from: before each switch
(the intent, written while the host's new color gets ready and waited for by the switch), and
once every host passed verify (from then on the release is good, even if drain is cut short).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors

from conveyor import engine, router
from conveyor.config import Environment
from conveyor.console import Console
from conveyor.containers import Container
from conveyor.errors import ConveyorError, DeployFailed
from conveyor.hosts import HostTarget
from conveyor.ledger import Ledger, ReleaseRecord
from conveyor.plan import DeployPlan, HostPlan, ServiceMove
from conveyor.terms import DEPLOY_KINDS, Phase, node_condition, takes_tasks

# How often a wait reads a container's state from the engine (an inspect call).
INSPECT_EVERY = 0.25


class Background:
    """One call on its own thread; the caller collects its outcome later."""

    def __init__(self, name: str, call: Callable[[], object]) -> None:
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), name=name, daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], object]) -> None:
        try:
            call()
        except BaseException as exc:  # handed to whoever waits, on their thread
            self.error = exc

    def wait(self) -> BaseException | None:
        """Block until the call ended; what it raised, if anything."""
        self._thread.join()
        return self.error

    def result(self) -> None:
        """Block until the call ended; raise what it raised."""
        error = self.wait()
        if error is not None:
            raise error


class PhaseFailed(ConveyorError):
    def __init__(self, phase: Phase, reason: str) -> None:
        super().__init__(reason)
        self.phase = phase
        self.reason = reason


@dataclass
class Execution:
    """Mutable progress of one run: what started and which hosts were switched."""

    plan: DeployPlan
    record: ReleaseRecord
    started: dict[str, list[Container]] = field(default_factory=dict)
    switched: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    switch_seconds: list[float] = field(default_factory=list)
    ready_at: float | None = None
    first_start: float | None = None
    stopping: threading.Thread | None = None
    # The old color's containers left running out of rotation (keep_warm), per host.
    warm: dict[str, dict[str, str]] = field(default_factory=dict)
    # When the first host's switch call returned (time.monotonic()): traffic is on the release.
    switched_at: float | None = None

    def wait_stopped(self, timeout: float = 60.0) -> None:
        """Wait for the old color's containers to finish stopping."""
        if self.stopping is not None:
            self.stopping.join(timeout)


class BlueGreen:
    def __init__(
        self,
        env: Environment,
        targets: dict[str, HostTarget],
        ledger: Ledger,
        out: Console,
        *,
        local_client: Any = None,
        on_phase: Callable[[Phase], None] | None = None,
        on_intent: Callable[[str], None] | None = None,
        before_switch: Callable[[str], None] | None = None,
        on_verified: Callable[[], None] | None = None,
        log_dir: Path = Path(".conveyor/logs"),
    ) -> None:
        self.env = env
        self.targets = targets
        self.ledger = ledger
        self.out = out
        self.local_client = local_client
        self.on_phase = on_phase
        self.on_intent = on_intent
        self.before_switch = before_switch
        self.on_verified = on_verified
        self.log_dir = log_dir
        self.timings: dict[str, float] = {}
        # How an automatic rollback went back (for the ledger), once it has.
        self.undone: str | None = None
        # Hosts whose engine stopped answering mid-run: the undo leaves them to `recover`.
        self.lost: set[str] = set()
        # Per host, the router config file being written after its switch (during verify).
        self.config_writes: dict[str, Background] = {}
        # Per host, the intent to switch being recorded (during ready), and the hosts whose
        # switch was gone ahead with once it was.
        self.intents: dict[str, Background] = {}
        self.cleared: set[str] = set()

    @contextmanager
    def phase(
        self, run: Execution, name: Phase, host: str | None = None, *, trace: bool = True
    ) -> Iterator[None]:
        if trace and self.on_phase is not None:
            self.on_phase(name)
        started = time.monotonic()
        try:
            yield
        except PhaseFailed:
            raise
        except ConveyorError as exc:
            raise PhaseFailed(name, f"{host + ': ' if host else ''}{exc}") from None
        except Exception as exc:
            if engine.lost(exc):
                raise PhaseFailed(name, self.engines_lost(exc)) from None
            where = f"{host}: " if host else ""
            hint = ""
            if type(exc).__name__ == "ChannelException":
                hint = (
                    " (the host's sshd refused another session: is its MaxSessions below "
                    "sshd's default 10?)"
                )
            raise PhaseFailed(name, f"{where}{type(exc).__name__}: {exc}{hint}") from None
        finally:
            run.timings[name] = run.timings.get(name, 0.0) + time.monotonic() - started
            self.timings[name] = run.timings[name]

    def engines_lost(self, exc: BaseException) -> str:
        """Which hosts' engines stopped answering (they are left alone from now on), in words."""
        for target in self.targets.values():
            if target.name not in self.lost and not engine.answers(target.client):
                self.lost.add(target.name)
        names = sorted(self.lost) or ["a host"]
        return (
            f"{', '.join(names)}: the Docker engine stopped answering ({type(exc).__name__}); "
            f"when it answers again, run: invoke recover --env {self.env.name}"
        )

    # --- the whole run -------------------------------------------------------------------

    def run(self, plan: DeployPlan, record: ReleaseRecord) -> Execution:
        run = Execution(plan=plan, record=record)
        try:
            with self.phase(run, "prepare"):
                for host_plan in plan.hosts:
                    self.prepare(host_plan)
            for host_plan in plan.hosts:
                self.move_host(run, host_plan)
        except PhaseFailed as failure:
            self.undo(run, failure)
            raise
        self.conclude(run)
        return run

    def conclude(self, run: Execution) -> None:
        """Every host passed verify: record that while the old color drains, then stop it.

        The verified record (one ledger write, ~100 ms) overlaps the drain instead of
        preceding it. Nothing is stopped before it is written: ``finish`` waits for it before
        any stop, and a write that failed stops nothing and is raised here, as it was before
        the drain began (the caller puts the routers back on the recorded release, whose
        containers still run). The phase trace says "drain" once the record is written: a
        crash from there on leaves a verified release; one before it, like a crash at the end
        of verify, an interrupted run that recover switches back.
        """
        recording = None
        if self.on_verified is not None:
            recording = Background("record-verified", self._record_verified)
        elif self.on_phase is not None:
            self.on_phase("drain")
        problem: PhaseFailed | None = None
        try:
            with self.phase(run, "drain", trace=False):
                self.finish(run, recording)
        except PhaseFailed as failed:
            problem = failed
        if recording is not None:
            recording.result()
        if problem is not None:
            # Past verify nothing may undo the release: a drain problem is a warning only.
            self.out.warn(f"drain: {problem.reason} (the release is live and verified)")

    def _record_verified(self) -> None:
        if self.on_verified is not None:
            self.on_verified()
        if self.on_phase is not None:
            self.on_phase("drain")

    def prepare(self, host_plan: HostPlan) -> None:
        target = self.targets[host_plan.host]
        target.preflight()
        for move in host_plan.moves:
            target.ensure_image(move.image.image_id, move.image.reference, self.local_client)

    def move_host(self, run: Execution, host_plan: HostPlan) -> None:
        target = self.targets[host_plan.host]
        try:
            self._move_host(run, target, host_plan)
        except PhaseFailed as failure:
            # A swarm node drained or lost meanwhile is the cause, whatever phase noticed it.
            why = None
            with contextlib.suppress(Exception):  # explaining a failure must not hide it
                why = target.not_taking_tasks()
            if why is None or why in failure.reason:
                raise
            raise PhaseFailed(failure.phase, f"{why} ({failure.reason})") from None

    def _move_host(self, run: Execution, target: HostTarget, host_plan: HostPlan) -> None:
        name = host_plan.host
        with self.phase(run, "start", name):
            self.start(run, target, host_plan)
        self.intend(name)
        with self.phase(run, "ready", name):
            self.wait_ready(target, host_plan, run)
        with self.phase(run, "smoke", name):
            self.smoke(target, host_plan)
        with self.phase(run, "switch", name):
            self.switch(run, target, host_plan)
        with self.phase(run, "verify", name):
            self.verify(target, host_plan)

    # --- phases --------------------------------------------------------------------------

    def start(self, run: Execution, target: HostTarget, host_plan: HostPlan) -> None:
        for move in host_plan.moves:
            for leftover in move.stop_first:
                self.out.say(f"  {target.name}: stopping leftover {leftover}")
                target.stop_service_container(leftover)
        for move in host_plan.moves:
            if move.reuse is None and target.port_taken_by_stranger(move.port):
                raise PhaseFailed(
                    "start",
                    f"{target.name}: port {move.port} ({move.service}@{move.to_color}) is in use "
                    f"by another process — free it or change deploy.toml",
                )

        def create(move: ServiceMove) -> Container:
            if move.reuse:
                return target.service_container(move.reuse)
            return target.create_service_container(
                self.env.services[move.service],
                move.to_color,
                run.plan.release_id,
                move.image.version,
                move.image.image_id,
                reference=move.image.reference,
            )

        # Services start side by side: the slowest one, not their sum, bounds readiness.
        with ThreadPoolExecutor(max_workers=len(host_plan.moves)) as pool:
            containers = list(pool.map(create, host_plan.moves))
            for move, container in zip(host_plan.moves, containers, strict=True):
                run.started.setdefault(target.name, []).append(container)
                verb = (
                    "using warm" if move.warm else "restarting kept" if move.reuse else "starting"
                )
                self.out.say(
                    f"  {target.name}: {verb} {move.service}@{move.to_color} "
                    f"({move.image.version}) on :{move.port}"
                )
            if run.first_start is None:
                run.first_start = time.monotonic()
            cold = [(c, m) for c, m in zip(containers, host_plan.moves, strict=True) if not m.warm]
            services = [self.env.services[m.service] for _c, m in cold]
            list(pool.map(target.start_service_container, [c for c, _m in cold], services))

    def wait_ready(self, target: HostTarget, host_plan: HostPlan, run: Execution) -> None:
        """Docker's view (running, not unhealthy) plus /readyz naming the expected version."""
        deadline = time.monotonic() + self.env.timeouts.ready
        pending = {move.service: move for move in host_plan.moves}
        containers = {c.labels.get("conveyor.service"): c for c in run.started.get(target.name, [])}
        last: dict[str, str] = {}
        inspected = 0.0
        while pending:
            # /readyz every 50 ms, the engine's view every INSPECT_EVERY (each read is an inspect on
            # the host's dockerd) and always before a service counts as ready.
            inspect = time.monotonic() - inspected >= INSPECT_EVERY
            if inspect:
                inspected = time.monotonic()
            for service, move in list(pending.items()):
                container = containers[service]
                health = self.env.services[service].health
                answer = target.probe(move.port, health.path, timeout=health.timeout)
                version = (answer.body or {}).get("version")
                answered = answer.ok and version == move.image.version
                problem = (
                    self._container_problem(container, readyz=answer.describe())
                    if inspect or answered
                    else None
                )
                if problem:
                    raise PhaseFailed(
                        "ready", f"{target.name}: {service}@{move.to_color} {problem}"
                    )
                if answered:
                    del pending[service]
                    self.out.say(f"  {target.name}: {service}@{move.to_color} ready")
                elif answer.ok:
                    last[service] = (
                        f"/readyz reports version {version}, expected {move.image.version}"
                    )
                else:
                    last[service] = f"/readyz: {answer.describe()}"
            if not pending:
                break
            if time.monotonic() > deadline:
                details = "; ".join(f"{s}: {last.get(s, 'no answer')}" for s in pending)
                raise PhaseFailed(
                    "ready",
                    f"{target.name}: not ready within {self.env.timeouts.ready:g} s ({details})",
                )
            self.out.progress(
                f"  {target.name}: waiting for {', '.join(pending)} "
                f"({self.env.timeouts.ready - (deadline - time.monotonic()):.1f} s)"
            )
            time.sleep(0.05)
        if run.ready_at is None:
            run.ready_at = time.monotonic()

    def _container_problem(self, container: Container, *, readyz: str | None = None) -> str | None:
        """Exited (quoting its last log lines) or unhealthy (quoting what its health check
        answers, which says why far better than unrelated log lines)."""
        container.reload()
        state = container.attrs.get("State", {})
        if state.get("Status") == "exited" or state.get("Restarting"):
            return f"exited with code {state.get('ExitCode')} ({_log_tail(container)})"
        health = state.get("Health") or {}
        if health.get("Status") == "unhealthy":
            why = f"/readyz answered {readyz}" if readyz else _health_output(health)
            return f"is unhealthy according to Docker ({why})"
        return None

    def smoke(self, target: HostTarget, host_plan: HostPlan) -> None:
        colors = {m.to_color for m in host_plan.moves}
        for color in colors:
            services = [m.service for m in host_plan.moves if m.to_color == color]
            target.admin(router.switch_commands(services, color, backend="preview"))
        for move in host_plan.moves:
            health = self.env.services[move.service].health
            answer = target.probe(
                target.ports.preview,
                health.path,
                timeout=health.timeout,
                headers={router.SERVICE_HEADER: move.service},
            )
            version = (answer.body or {}).get("version")
            if not answer.ok or version != move.image.version:
                raise PhaseFailed(
                    "smoke",
                    f"{target.name}: {move.service} through the preview route answered "
                    f"{answer.describe()} with version {version}, expected {move.image.version}",
                )
        self.out.say(f"  {target.name}: preview route serves {host_plan.moves[0].image.version}")

    def switch(self, run: Execution, target: HostTarget, host_plan: HostPlan) -> None:
        commands = []
        for color in sorted({m.to_color for m in host_plan.moves}):
            services = [m.service for m in host_plan.moves if m.to_color == color]
            commands.append(router.switch_commands(services, color))
        described = ", ".join(
            f"{m.service} {m.from_color or '-'} → {m.to_color}" for m in host_plan.moves
        )
        self.clear_to_switch(target.name)
        self.out.say(f"  {target.name}: switching traffic: {described}")
        began = time.monotonic()
        target.admin("; ".join(commands))
        run.switch_seconds.append(time.monotonic() - began)
        if run.switched_at is None:
            run.switched_at = time.monotonic()
        run.switched.append(target.name)
        # The file only matters when the router restarts; the runtime API already switched.
        # Copying it into the container (one archive call, ~90 ms on Docker 20.10) runs during
        # the verify window, which joins it before the host counts as verified.
        live: dict[str, str | None] = {m.service: m.to_color for m in host_plan.moves}
        self.config_writes[target.name] = Background(
            f"router-config-{target.name}", lambda: target.write_router_config(live)
        )

    def verify(self, target: HostTarget, host_plan: HostPlan) -> None:
        """Watch the live route and the containers for the verify window."""
        window = self.env.timeouts.verify
        deadline = time.monotonic() + window
        checks = failures = 0
        last_failure = ""
        containers = {
            c.labels.get("conveyor.service"): c for c in self._host_containers(target, host_plan)
        }
        while True:
            for move in host_plan.moves:
                problem = self._container_problem(containers[move.service])
                if problem:
                    raise PhaseFailed(
                        "verify", f"{target.name}: {move.service}@{move.to_color} {problem}"
                    )
                health = self.env.services[move.service].health
                answer = target.probe(
                    target.ports.public,
                    health.path,
                    timeout=health.timeout,
                    headers={router.SERVICE_HEADER: move.service},
                )
                checks += 1
                version = (answer.body or {}).get("version")
                if not answer.ok or version != move.image.version:
                    failures += 1
                    last_failure = f"{move.service}: {answer.describe()}, version {version}"
            rate = failures / checks
            if failures and rate > self.env.max_error_rate:
                raise PhaseFailed(
                    "verify",
                    f"{target.name}: {failures}/{checks} checks failed in the verify window "
                    f"(limit {self.env.max_error_rate:.0%}); last: {last_failure}",
                )
            if time.monotonic() >= deadline:
                break
            self.out.progress(
                f"  {target.name}: verifying ({window - (deadline - time.monotonic()):.1f}/"
                f"{window:g} s, {checks} checks, {failures} failed)"
            )
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
        # Not verified until a restarted router would serve this release too.
        writing = self.config_writes.pop(target.name, None)
        if writing is not None:
            writing.result()
        self.out.say(f"  {target.name}: verified ({checks} checks, {failures} failed)")

    def _host_containers(self, target: HostTarget, host_plan: HostPlan) -> list[Container]:
        return [target.service_container(move.container) for move in host_plan.moves]

    def finish(self, run: Execution, recording: Background | None = None) -> None:
        """Park the preview route, let the old color drain, then stop it (kept for rollback).

        ``recording`` is the verified record being written: the old color is stopped only once
        it is, and not at all if it failed."""
        for host_plan in run.plan.hosts:
            target = self.targets[host_plan.host]
            target.admin(router.park_commands(m.service for m in host_plan.moves))
        had_old = any(m.from_color for h in run.plan.hosts for m in h.moves)
        if run.plan.drain_seconds and had_old:
            self.out.say(f"  draining the old color for {run.plan.drain_seconds:g} s")
            time.sleep(run.plan.drain_seconds)
        stops = []
        for host_plan in run.plan.hosts:
            target = self.targets[host_plan.host]
            keep = {m.container for m in host_plan.moves}
            warm_colors = self.warm_colors(run, host_plan)
            for container in target.service_containers():
                if not container.running or container.name in keep:
                    continue
                if warm_colors.get(container.service) == container.color:
                    run.warm.setdefault(target.name, {})[container.service] = container.name
                    continue
                stops.append((target, container.name))
        if recording is not None and recording.wait() is not None:
            return  # never recorded as verified: the caller raises why and switches back
        if run.warm:
            self.out.say(
                f"  keeping the old color warm for {self.env.keep_warm:g} s: "
                + ", ".join(n for names in run.warm.values() for n in names.values())
            )
        # Traffic left the old color already; stopping it need not hold up the record.
        run.stopping = threading.Thread(
            target=self._stop_all, args=(stops,), name="stop-old-color", daemon=True
        )
        run.stopping.start()

    def warm_colors(self, run: Execution, host_plan: HostPlan) -> dict[str, str]:
        """Per service, the color to keep running out of rotation: the one a deploy (never a
        rollback: what it left is what was rolled back) switched away from."""
        if self.env.keep_warm <= 0 or run.plan.kind not in DEPLOY_KINDS:
            return {}
        return {m.service: m.from_color for m in host_plan.moves if m.from_color}

    def _stop_all(self, stops: list[tuple[HostTarget, str]]) -> None:
        def stop(item: tuple[HostTarget, str]) -> None:
            target, name = item
            try:
                target.stop_service_container(name)
            except docker.errors.NotFound:
                pass
            except Exception as exc:
                if not engine.lost(exc):
                    raise
                self.out.warn(f"{target.name}: could not stop {name}: its engine is not answering")

        if stops:
            # A swarm's color is one service on every node: named once.
            self.out.say(f"  stopping {', '.join(dict.fromkeys(name for _, name in stops))}")
            with ThreadPoolExecutor(max_workers=4) as pool:
                list(pool.map(stop, stops))

    # --- the intent to switch ------------------------------------------------------------

    def intend(self, host: str) -> None:
        """Start recording the intent to switch ``host`` (one ledger write, ~100 ms on Docker
        20.10's archive API), so it overlaps the wait for the new color instead of preceding
        the switch."""
        if self.on_intent is not None and host not in self.intents:
            record = self.on_intent
            self.intents[host] = Background(f"record-intent-{host}", lambda: record(host))

    def clear_to_switch(self, host: str) -> None:
        """Right before ``host`` switches: its intent is recorded (a refused write stops the
        run here, before the switch) and the caller's last check passed (the lock is ours)."""
        self.intend(host)
        intent = self.intents.pop(host, None)
        if intent is not None:
            intent.result()
        if self.before_switch is not None:
            self.before_switch(host)
        self.cleared.add(host)

    def settle_intents(self, run: Execution) -> None:
        """After a failure: no intent write is left running beside the record of how the run
        ended, and the record names as switched only hosts whose switch was gone ahead with."""
        for intent in self.intents.values():
            intent.wait()
        self.intents.clear()
        switched = run.record.switched
        switched[:] = [host for host in switched if host in self.cleared]

    # --- automatic rollback --------------------------------------------------------------

    def undo(self, run: Execution, failure: PhaseFailed) -> None:
        self.out.say(f"✗ {failure.phase} failed: {failure.reason}")
        self.settle_intents(run)
        began = time.monotonic()
        self.switch_back(run)
        if run.switched:
            # The old color never stopped before verify passed: going back is a switch.
            self.undone = (
                f"instant: switched {', '.join(run.switched)} back to the running previous "
                f"color in {(time.monotonic() - began) * 1000:.0f} ms, no container started"
            )
        else:
            self.undone = "nothing had been switched; the previous release kept serving"
        self.stop_started(run)

    def switch_back(self, run: Execution) -> None:
        # A write of the new colors still under way must not land after the old ones (a
        # lost host gets no write from here: recover rewrites its file).
        for host_name, writing in self.config_writes.items():
            if host_name not in self.lost:
                writing.wait()
        self.config_writes.clear()
        for host_name in reversed(run.switched):
            if host_name in self.lost:
                self.out.warn(f"{host_name}: its engine is not answering; recover switches it back")
                continue
            host_plan = next(h for h in run.plan.hosts if h.host == host_name)
            target = self.targets[host_name]
            back = {m.service: m.from_color for m in host_plan.moves}
            self.out.say(f"  {host_name}: switching traffic back to the previous release")
            commands = [
                router.switch_commands([service], color)
                for service, color in back.items()
                if color is not None
            ]
            try:
                if commands:
                    target.admin("; ".join(commands))
                target.write_router_config(back)
            except Exception as exc:
                self.out.warn(f"{host_name}: could not switch back: {self._why_not(target, exc)}")
        for host_plan in run.plan.hosts:
            if host_plan.host in self.lost:
                continue
            with contextlib.suppress(Exception):
                self.targets[host_plan.host].admin(
                    router.park_commands(m.service for m in host_plan.moves)
                )

    @staticmethod
    def _why_not(target: HostTarget, exc: Exception) -> str:
        """A swarm node that stopped taking tasks has no router left to switch; the colors
        published as the command ends are what its next router starts on."""
        node = None
        with contextlib.suppress(Exception):  # explaining a failure must not hide it
            node = target.node()  # None on a host
        if node is None or takes_tasks(node):
            return str(exc)
        return (
            f"its node is {node_condition(node)}, so its router stopped; its next router "
            "starts on the colors this command publishes"
        )

    def stop_started(self, run: Execution) -> None:
        stops: list[tuple[HostTarget, str]] = []
        for host_name, containers in run.started.items():
            if host_name in self.lost:
                continue  # recover stops them once the engine answers
            target = self.targets[host_name]
            for container in containers:
                path = self.save_logs(run.record.id, host_name, container)
                if path:
                    run.record.logs.append(path)
                stops.append((target, container.name))
        self._stop_all(stops)

    def save_logs(self, release: str, host: str, container: Container) -> str | None:
        try:
            text = container.logs(timestamps=True).decode(errors="replace")
        except docker.errors.DockerException:
            return None
        name = f"{host}-{container.name}"
        local = self.log_dir / self.env.name / release / f"{name}.log"
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(text, encoding="utf-8")
        with contextlib.suppress(docker.errors.DockerException):
            self.ledger.save_log(release, name, text)
        return str(local)


def _log_tail(container: Container, lines: int = 3) -> str:
    try:
        text = container.logs(tail=lines).decode(errors="replace").strip()
    except docker.errors.DockerException:
        return "no logs"
    return " | ".join(line.strip() for line in text.splitlines()[-lines:])[-300:] or "no output"


def _health_output(health: dict[str, Any]) -> str:
    """The newest health-check result Docker kept: what the check itself printed."""
    log = health.get("Log") or []
    last = log[-1] if log else {}
    output = str(last.get("Output") or "").strip().replace("\n", " | ")
    return f"health check exit {last.get('ExitCode')}: {output[-200:] or 'no output'}"


def deploy_failed(failure: PhaseFailed, plan: DeployPlan, serving: str) -> DeployFailed:
    """The one line a failed run ends with: what failed, in which phase, and what serves."""
    return DeployFailed(
        f"{plan.kind} of {plan.release.version} to {plan.environment} failed in phase "
        f"'{failure.phase}': {failure.reason} — {serving}"
    )
