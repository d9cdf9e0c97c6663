"""``invoke flags`` and ``invoke flag-set``: see and change an environment's flags, no deploy.

A change is validated before anything is written, made under the environment's lock (two
changes never interleave, and never mix with a deploy), written to every host by rename, and
recorded in the audit trail with who, when, the old and new percentage, the live release it
went with and the whole new file — what a rollback to that release puts back.
"""

from __future__ import annotations

import json
from typing import Any

from conveyor import flags, flagstate
from conveyor.config import Config
from conveyor.console import Console, console
from conveyor.errors import UsageError
from conveyor.flags import Definitions, FlagError
from conveyor.ledger import ReleaseRecord, who
from conveyor.operations import take_lock
from conveyor.session import Session


def _images(session: Session, image: str | None) -> list[str]:
    images = flagstate.images_with_flags(session.env.services.values())
    if not images:
        raise UsageError(
            f"{session.env.name}: no service's image declares flags "
            '(add `flags = "path/to/flags.json"` to its [images.X] table)'
        )
    if image is not None and image not in images:
        raise UsageError(
            f"image {image!r} has no flags here (images with flags: {', '.join(images)})"
        )
    return [image] if image else images


def current(session: Session, images: list[str]) -> dict[str, dict[str, Definitions | None]]:
    """Per host, per image: what the services read now."""
    return flagstate.read_all(session.targets, images)


def show(config: Config, env_name: str, *, as_json: bool, out: Console = console) -> None:
    session = Session(config, env_name, out)
    images = _images(session, None)
    found = current(session, images)
    if as_json:
        print(json.dumps({"environment": env_name, "hosts": found}, indent=2, sort_keys=True))
        return
    primary = session.targets[0].name
    for image in images:
        definitions = found[primary][image]
        out.say(f"{env_name} {image} flags" + ("" if definitions else ": none written yet"))
        for line in flags.describe(definitions) if definitions else []:
            out.say(f"  {line}")
        apart = [h for h, by_image in found.items() if by_image[image] != definitions]
        if apart:
            out.warn(
                f"{', '.join(apart)} differ from {primary}: the next deploy or flag-set "
                "writes every host"
            )


def set_flag(
    config: Config,
    env_name: str,
    name: str,
    *,
    on: bool = False,
    off: bool = False,
    percent: int | None = None,
    image: str | None = None,
    dry_run: bool = False,
    lock_wait: float = 0.0,
    out: Console = console,
) -> dict[str, Any]:
    """Give flag ``name`` to a percentage of people (--on: 100, --off: 0); returns the change."""
    value = _wanted(on, off, percent)
    session = Session(config, env_name, out)
    chosen = flag_image(session, name, image)
    if dry_run:
        before = flagstate.read(session.targets[0], chosen)
        change = _change(before, chosen, name, value, env_name)
        out.say(f"Dry run — nothing will be changed: {_describe(env_name, change)}")
        return change
    session.ensure_router_images()
    lock = take_lock(session, "-", f"flag-set {name}", lock_wait, out)
    try:
        from conveyor.flagramp import settle_dead_ramps  # noqa: PLC0415 (flagramp uses this module)

        settle_dead_ramps(session, f"flag-set {name}", out)
        lock.ensure_ours()
        change = write_change(session, chosen, name, value)
    finally:
        lock.release()
    out.say(f"✓ {_describe(env_name, change)} (by {who()}; services read it within 2 s)")
    return change


def write_change(
    session: Session, image: str, name: str, value: int, *, ramp: str | None = None, why: str = ""
) -> dict[str, Any]:
    """Holding the lock: the flag at ``value`` percent on every host, in the audit trail with
    the old and new share, the live release it goes with and the whole new file."""
    live = session.observe(holding_lock=True).live_record()
    before = last_good(session, image, live)
    change = _change(before, image, name, value, session.env.name)
    flagstate.write_all(session.targets, {image: change["state"]})
    session.ledger.audit(
        "flag-set",
        image=image,
        flag=name,
        old=change["old"],
        new=change["new"],
        record=live.id if live else None,
        state=change["state"],
        ramp=ramp,
        why=why,
    )
    return change


def last_good(session: Session, image: str, live: ReleaseRecord | None) -> Definitions | None:
    """The image's flags on the primary host; when that file is unreadable (someone broke
    it), the last ones the ledger knows for the live release, so a change can repair it."""
    try:
        return flagstate.read(session.targets[0], image)
    except FlagError as exc:
        if live is None:
            raise
        known = flagstate.state_for(live.id, live.flags, session.ledger.audit_events())
        if image not in known:
            raise
        session.out.warn(f"{exc}; starting from the ledger's last flags for {live.id}")
        return known[image]


def _wanted(on: bool, off: bool, percent: int | None) -> int:
    chosen = [x for x in (on, off, percent is not None) if x]
    if len(chosen) != 1:
        raise UsageError("say one of --on, --off or --percent N")
    return 100 if on else 0 if off else int(percent or 0)


def flag_image(session: Session, name: str, image: str | None = None) -> str:
    """The image whose flags hold ``name`` (on the primary host), or a line saying none does."""
    images = _images(session, image)
    known: list[str] = []
    live = session.observe().live_record()
    for candidate in images:
        definitions = last_good(session, candidate, live)
        if definitions and name in definitions.get("flags", {}):
            return candidate
        known += sorted((definitions or {}).get("flags", {}))
    raise FlagError(
        f"{session.env.name}: no flag named {name!r} (flags of {', '.join(images)}: "
        f"{', '.join(known) or 'none written yet'})"
    )


def _change(
    before: Definitions | None, image: str, name: str, value: int, env_name: str
) -> dict[str, Any]:
    if before is None:
        raise FlagError(f"{env_name}: no {image} flags written yet — deploy a release first")
    # with_percent first: it names the known flags when ``name`` is not one of them.
    state = flags.with_percent(before, name, value, f"{env_name} {image} flags")
    old = flags.percent(before["flags"][name])
    return {"image": image, "flag": name, "old": old, "new": value, "state": state}


def _describe(env_name: str, change: dict[str, Any]) -> str:
    return (
        f"{env_name}: {change['flag']} ({change['image']}) {change['old']}% → {change['new']}% on"
    )
