"""``invoke flag-ramp``: raise a flag's share in stages, each held and judged; killed on errors.

The service exports, on ``/metrics`` in Prometheus text, counters of the requests it served and
the ones that failed, by flag and variant (``*flag_requests_total{flag=…,variant=…}`` and
``*flag_errors_total{…}``). Each stage holds for ``--hold``, sampled every ``[analysis]
sample`` seconds across every host's live containers, and judged by the same windows as a
canary step (:mod:`conveyor.analysis`): the on-variant against the off-variant, over the same
seconds, with the same floor against passing on too little traffic and the same fail-fast rule.
A failed window turns the flag off (0%) at once and records why, with the numbers; too many
inconclusive windows, or ``--abort`` from a person, put it back where the ramp began. The last
stage (100) is set without a window: nobody is left on the off-variant to compare with.

A ramp holds the environment's lock (a deploy or flag-set waits for it). One whose process
died leaves a ``flag-ramp-started`` event with no end: the next flag-set or flag-ramp records
it as interrupted and goes on from the percentage it left (a ramp only ever adds people).
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterable
from typing import Any

from conveyor import analysis, flags, flagstate, notify, steering
from conveyor.analysis import Tally, Verdict, Window
from conveyor.config import Config
from conveyor.console import Console, console
from conveyor.errors import ConveyorError, UsageError
from conveyor.flagops import flag_image, write_change
from conveyor.ledger import who
from conveyor.operations import take_lock
from conveyor.session import Session

METRICS_PATH = "/metrics"
_SAMPLE = re.compile(
    r'^\w*flag_(requests|errors)_total\{flag="([^"]+)",variant="([^"]+)"\}\s+(\d+)', re.M
)


def parse_metrics(text: str, flag: str) -> dict[tuple[str, str], int]:
    """(``requests``|``errors``, variant) -> count for ``flag``, from Prometheus text."""
    found: dict[tuple[str, str], int] = {}
    for kind, name, variant, count in _SAMPLE.findall(text):
        if name == flag:
            found[(kind, variant)] = found.get((kind, variant), 0) + int(count)
    return found


def parse_stages(raw: str) -> list[int]:
    try:
        stages = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        stages = []
    rising = all(a < b for a, b in itertools.pairwise(stages))
    if not stages or stages[-1] != flags.FULL or stages[0] <= 0 or not rising:
        raise UsageError(
            f"--stages: rising percentages that end at 100, e.g. 1,5,25,50,100 (got {raw!r})"
        )
    return stages


def open_ramps(events: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Ramps started and never ended, by id."""
    started: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.get("kind") == "flag-ramp-started":
            started[str(event.get("ramp"))] = event
        elif event.get("kind") == "flag-ramp-ended":
            started.pop(str(event.get("ramp")), None)
    return started


def settle_dead_ramps(session: Session, by: str, out: Console) -> None:
    """Holding the lock: a ramp still open has no process any more; close it as interrupted."""
    for ramp_id, event in open_ramps(session.ledger.audit_events()).items():
        session.ledger.audit(
            "flag-ramp-ended", ramp=ramp_id, flag=event.get("flag"), outcome="interrupted", by=by
        )
        out.say(f"  the ramp of {event.get('flag')} ({ramp_id}) had died; recorded as interrupted")


class Counters:
    """Reads every host's live flagged containers' metrics; returns deltas per variant."""

    def __init__(self, session: Session, image: str, flag: str) -> None:
        self.session = session
        self.flag = flag
        self.services = [s for s in session.env.services.values() if s.image == image]
        self.previous: dict[str, dict[tuple[str, str], int]] = {}

    def read(self) -> dict[str, Tally]:
        """Per variant, what happened since the previous read (nothing on the first)."""
        state = self.session.observe(holding_lock=True)
        totals: dict[str, Tally] = {}
        for target in self.session.targets:
            host = state.host(target.name)
            for service in self.services:
                color = host.live.get(service.name)
                if color is None:
                    raise analysis.MeasurementError(f"{target.name}: {service.name} serves nothing")
                port = target.ports.services[service.name][color]
                answer = target.probe(port, METRICS_PATH, timeout=service.health.timeout)
                if not answer.ok:
                    raise analysis.MeasurementError(
                        f"{target.name}: {service.name} {METRICS_PATH} answered {answer.describe()}"
                    )
                key = f"{target.name}/{service.name}/{color}"
                now = parse_metrics(answer.text, self.flag)
                before = self.previous.get(key)
                self.previous[key] = now
                if before is None:
                    continue
                for (kind, variant), count in now.items():
                    step = count - before.get((kind, variant), 0)
                    if step < 0:
                        raise analysis.MeasurementError(f"{key}: counters went back (a restart)")
                    tally = totals.setdefault(variant, Tally())
                    if kind == "requests":
                        tally.requests += step
                    else:
                        tally.errors += step
        return totals


def ramp(
    config: Config,
    env_name: str,
    name: str,
    *,
    stages: str,
    hold: float,
    dry_run: bool = False,
    abort: bool = False,
    lock_wait: float = 0.0,
    out: Console = console,
) -> str:
    """Run a guarded ramp (or ask the running one to abort); returns how it ended."""
    session = Session(config, env_name, out)
    if abort:
        return _ask_abort(session, name, out)
    wanted = parse_stages(stages)
    image = flag_image(session, name)
    if dry_run:
        now = flags.percent(_current(session, image)["flags"][name]) or 0
        left = [s for s in wanted if s > now]
        through = ", ".join(f"{s}%" for s in left) or "nothing"
        message = (
            f"would ramp {name} from {now}% through {through}, holding each {hold:g} s and "
            "judging on vs off; a failed window turns it off"
        )
        out.say(f"Dry run — nothing will be changed: {message}")
        return message
    session.ensure_router_images()
    lock = take_lock(session, "-", f"flag-ramp {name}", lock_wait, out)
    try:
        settle_dead_ramps(session, f"the flag-ramp of {name}", out)
        return Ramp(session, image, name, stages=wanted, hold=hold, out=out).run(lock)
    finally:
        lock.release()


def _current(session: Session, image: str) -> flags.Definitions:
    current = flagstate.read(session.targets[0], image)
    if current is None:
        raise flags.FlagError(f"{session.env.name}: no {image} flags written yet — deploy first")
    return current


def _ask_abort(session: Session, name: str, out: Console) -> str:
    running = [
        e for e in open_ramps(session.ledger.audit_events()).values() if e.get("flag") == name
    ]
    if not running:
        message = f"no ramp of {name} is running on {session.env.name}"
        out.say(message)
        return message
    ramp_id = str(running[-1]["ramp"])
    steering.write_request_for(session, ramp_id, steering.ABORT, started=float(running[-1]["at"]))
    message = f"asked the ramp of {name} ({ramp_id}) to abort; it answers within one sample"
    out.say(f"✓ {message}")
    return message


class Ramp:
    """One guarded ramp under the lock, each method a named step."""

    def __init__(
        self,
        session: Session,
        image: str,
        name: str,
        *,
        stages: list[int],
        hold: float,
        out: Console,
    ) -> None:
        self.session = session
        self.image = image
        self.name = name
        self.hold = hold
        self.out = out
        self.settings = session.env.analysis
        self.id = f"ramp-{time.time_ns()}"
        self.began = time.time()
        self.start = flags.percent(_current(session, image)["flags"][name]) or 0
        self.stages = [s for s in stages if s > self.start]
        self.poll = steering.poller_for(session, self.id, self.began)
        self.announce = notify.Announcer(session.config, session.env, out)

    def run(self, lock: Any) -> str:
        ledger = self.session.ledger
        ledger.audit(
            "flag-ramp-started",
            ramp=self.id,
            flag=self.name,
            image=self.image,
            stages=self.stages,
            hold=self.hold,
            start=self.start,
            at=self.began,
        )
        self.out.say(
            f"Ramping {self.name} on {self.session.env.name} from {self.start}%: "
            + " → ".join(f"{s}%" for s in self.stages)
            + f", each held {self.hold:g} s ({self.id}, by {who()})"
        )
        outcome, reason = "completed", ""
        try:
            for stage in self.stages:
                lock.ensure_ours()
                self.set(stage)
                if stage == flags.FULL:
                    break
                verdict = self.judge(stage)
                if verdict is not None:
                    outcome, reason = self.stop(verdict)
                    break
        except ConveyorError as exc:
            outcome, reason = "aborted", str(exc)
            self.set(self.start, why=f"aborted: {exc}")
        ledger.audit(
            "flag-ramp-ended", ramp=self.id, flag=self.name, outcome=outcome, reason=reason
        )
        self.announce.close()
        final = flags.percent(_current(self.session, self.image)["flags"][self.name])
        message = f"ramp of {self.name} {outcome} at {final}%" + (f": {reason}" if reason else "")
        if outcome == "completed":
            self.out.say(f"✓ {message}")
            return message
        raise RampStopped(message)

    def set(self, value: int, *, why: str = "") -> None:
        change = write_change(self.session, self.image, self.name, value, ramp=self.id, why=why)
        self.out.say(f"  {self.name}: {change['old']}% → {value}%" + (f" ({why})" if why else ""))

    def judge(self, stage: int) -> Verdict | None:
        """Windows at this stage until one passes (None); a stopping verdict otherwise."""
        inconclusive = 0
        while True:
            verdict = self.window(stage)
            self.out.say(f"  ramp {verdict.line()}")
            self.session.ledger.audit(
                "flag-ramp-window", ramp=self.id, flag=self.name, verdict=verdict.as_dict()
            )
            if verdict.outcome == "pass":
                return None
            if verdict.outcome == "fail" or verdict.rule == "aborted":
                return verdict
            inconclusive += 1
            if inconclusive >= max(1, self.settings.max_inconclusive):
                return verdict

    def window(self, stage: int) -> Verdict:
        window = Window(self.settings, stage, [self.name], latency=False)
        counters = Counters(self.session, self.image, self.name)
        began = time.monotonic()
        deadline = began + self.hold
        try:
            counters.read()  # the baseline
        except analysis.MeasurementError as exc:
            window.measurement_failed(str(exc))
        while True:
            time.sleep(max(0.0, min(self.settings.sample, deadline - time.monotonic())))
            elapsed = time.monotonic() - began
            try:
                by_variant = counters.read()
            except analysis.MeasurementError as exc:
                window.measurement_failed(str(exc))
                by_variant = {}
            on, off = self.variants()
            window.add(self.name, "canary", by_variant.get(on, Tally()))
            window.add(self.name, "stable", by_variant.get(off, Tally()))
            request = self.poll()
            if request is not None:
                return window.verdict(
                    "inconclusive", "aborted", f"aborted by {request[1]}", elapsed
                )
            early = window.early(elapsed)
            if early is not None:
                return early
            if time.monotonic() >= deadline:
                return window.final(elapsed)

    def variants(self) -> tuple[str, str]:
        buckets = flags.split_of(_current(self.session, self.image)["flags"][self.name]) or [
            ["on"],
            ["off"],
        ]
        return str(buckets[0][0]), str(buckets[1][0])

    def stop(self, verdict: Verdict) -> tuple[str, str]:
        """A failed window kills the flag (0%); anything else puts it back where it began."""
        if verdict.outcome == "fail":
            self.set(0, why=f"killed: {verdict.reason}")
            self.session.ledger.audit(
                "flag-killed",
                ramp=self.id,
                flag=self.name,
                image=self.image,
                verdict=verdict.as_dict(),
            )
            self.announce.flag_killed(self.session.env.name, self.name, verdict)
            return "killed", verdict.line()
        self.set(self.start, why=verdict.reason)
        return "aborted", verdict.line()


class RampStopped(ConveyorError):
    """The ramp did not reach 100%: killed, aborted or inconclusive (the line says which)."""
