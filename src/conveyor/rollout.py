"""A canary rollout seen and steered from outside: ``rollout``, ``rollout-promote``,
``rollout-abort``.

The process walking the steps holds the environment's lock, so another command never breaks
it: it leaves a request (abort or promote, naming the rollout's record) in the state volume,
which the stepper reads between samples and answers within one ``sample``. A rollout whose
process died has nobody to answer: ``rollout-abort`` then takes the lock itself and converges,
which puts every router back on the stable color (the next deploy would do the same).
"""

from __future__ import annotations

import json
import time

from conveyor import operations, terms
from conveyor.config import Config
from conveyor.console import Console, console
from conveyor.errors import UsageError
from conveyor.ledger import ReleaseRecord
from conveyor.observe import EnvironmentState
from conveyor.session import Session
from conveyor.steering import PROMOTE, write_request


def describe(state: EnvironmentState) -> list[str]:
    """``invoke rollout``: the live weights read back from every router, and the rollout's
    state with each window's verdict (the one running, else the latest)."""
    lines = []
    for host in state.hosts:
        if not host.router_up:
            lines.append(f"{host.name}: router {host.router} ({host.error or 'not running'})")
            continue
        weights = ", ".join(
            f"{service} " + " / ".join(f"{color} {w}" for color, w in sorted(ws.items()))
            for service, ws in sorted(host.weights.items())
        )
        lines.append(f"{host.name}: weights {weights or 'none in service'}")
    record = operations.rollout_in_progress(state) or next(
        (r for r in reversed(state.records) if r.canary), None
    )
    if record is None:
        lines.append("no canary rollout on record")
        return lines
    canary = record.canary
    alive = record.outcome == terms.RUNNING and state.lock is not None and not state.lock.stale
    status = canary.get("state", "?")
    if record.outcome == terms.RUNNING and not alive:
        status += " (its process died: the next command puts the stable color back)"
    lines.append(
        f"rollout {record.id} of {record.version}: {status}, canary at "
        f"{canary.get('percent', 0)}% (steps {canary.get('steps')}, "
        f"{canary.get('interval')} s windows), outcome {record.outcome}"
    )
    for window in canary.get("windows", []):
        early = " early" if window.get("early") else ""
        lines.append(
            f"  {window['percent']}%: {window['outcome']} [{window['rule']}]{early} after "
            f"{window['seconds']} s — {window['reason']}"
        )
    if canary.get("reason"):
        lines.append(f"  ended: {canary['reason']}")
    return lines


def show(config: Config, env_name: str, *, as_json: bool, out: Console = console) -> None:
    session = Session(config, env_name, out)
    state = session.observe()
    if as_json:
        record = operations.rollout_in_progress(state)
        print(
            json.dumps(
                {
                    "environment": env_name,
                    "weights": {h.name: h.weights for h in state.hosts},
                    "rollout": None if record is None else {"id": record.id, **record.canary},
                },
                indent=2,
            )
        )
        return
    for line in describe(state):
        out.say(line)


def steer(
    config: Config,
    env_name: str,
    action: str,
    *,
    dry_run: bool = False,
    wait: float = 120.0,
    out: Console = console,
) -> str:
    """Abort or promote the rollout in progress; returns what happened, in words."""
    session = Session(config, env_name, out)
    state = session.observe()
    record = operations.rollout_in_progress(state)
    holder_alive = state.lock is not None and state.lock.stale is None
    if record is None:
        if action == PROMOTE:
            raise UsageError(f"no canary rollout is in progress on {env_name}: nothing to promote")
        return _nothing_to_abort(session, state, env_name, dry_run, out)
    if not holder_alive:
        if action == PROMOTE:
            raise UsageError(
                f"the rollout {record.id} of {record.version} on {env_name} was interrupted; "
                "it cannot be promoted — run invoke rollout-abort (or deploy again)"
            )
        what = f"the interrupted rollout {record.id} of {record.version} on {env_name}"
        return _converge(session, what, dry_run, out)
    if dry_run:
        message = (
            f"would ask the rollout {record.id} of {record.version} (at "
            f"{record.canary.get('percent', 0)}%) to {action}; its stepper answers within "
            f"{config.environment(env_name).analysis.sample:g} s"
        )
        out.say(f"Dry run — nothing will be changed: {message}")
        return message
    write_request(session, record, action)
    out.say(f"asked the rollout {record.id} of {record.version} to {action}; waiting for it…")
    return _wait_for(session, record, wait, out)


def _nothing_to_abort(
    session: Session, state: EnvironmentState, env_name: str, dry_run: bool, out: Console
) -> str:
    split = [h.name for h in state.hosts if any(h.split(s) for s in h.weights)]
    if not split:
        live = state.live_record()
        message = f"no canary rollout is in progress on {env_name}" + (
            f"; it serves {live.version} ({live.id})" if live else ""
        )
        out.say(message)
        return message
    # A split with no running record: a crash between the record's end and the router's.
    return _converge(session, f"a canary split on {', '.join(split)}", dry_run, out)


def _converge(session: Session, what: str, dry_run: bool, out: Console) -> str:
    if dry_run:
        message = f"would take the lock and put every router back on the stable color ({what})"
        out.say(f"Dry run — nothing will be changed: {message}")
        return message
    operations.recover(session.config, session.env.name, out=out)
    message = f"aborted {what}: every router serves the stable color"
    out.say(f"✓ {message}")
    return message


def _wait_for(session: Session, record: ReleaseRecord, wait: float, out: Console) -> str:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        current = next((r for r in session.ledger.records() if r.id == record.id), None)
        if current is not None and current.outcome != terms.RUNNING:
            message = f"the rollout {record.id} of {record.version} ended {current.outcome}" + (
                f": {current.reason}" if current.reason else ""
            )
            out.say(f"✓ {message}")
            return message
        if current is not None and current.canary.get("state") in ("promoting", "promoted"):
            message = f"the rollout {record.id} of {record.version} is promoting (switch, verify)"
            out.say(f"✓ {message}")
            return message
        time.sleep(0.5)
    message = (
        f"the rollout {record.id} did not answer within {wait:g} s; it reads requests between "
        "samples — see invoke rollout"
    )
    out.warn(message)
    return message
