"""An environment's current feature flags: one file per image in a volume on every host.

Service containers of an image with flags mount the volume read-only at ``/flags`` and read
``FLAGS_FILE=/flags/<image>.json``. A write never shows a half-written file: the new content
goes in under a temporary name through the engine's archive API, and a short-lived helper
container renames it over the old one (Docker 20.10 cannot mount a single file of a volume, so
the app watches the file in the mounted folder). Reads go through a created, never started,
helper container, which works on remote engines alike.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import docker.errors

from conveyor import flags, state
from conveyor.config import Service
from conveyor.containers import Container
from conveyor.flags import Definitions, FlagError

if TYPE_CHECKING:
    # hosts.py mounts the flag volume (it imports this module's names).
    from conveyor.hosts import HostTarget

MOUNT = "/flags"
ROLE = "flags"


def volume_name(env: str) -> str:
    return f"conveyor-{env}-flags"


def container_file(image: str) -> str:
    """Where a service container finds its image's flags (``FLAGS_FILE``)."""
    return f"{MOUNT}/{image}.json"


def _helper(target: HostTarget, command: list[str]) -> Container:
    if target.router_image is None:
        raise FlagError(f"{target.name}: the router image (the flag helper's) is not known yet")
    helper: Container = target.client.containers.create(
        target.router_image,
        command,
        user="0",
        network_mode="none",
        labels={"conveyor.env": target.env.name, "conveyor.role": ROLE},
        volumes={volume_name(target.env.name): {"bind": MOUNT, "mode": "rw"}},
    )
    return helper


def read(target: HostTarget, image: str) -> Definitions | None:
    """The image's current flags on one host; None when none were ever written there. A host
    without the flags volume has none, and reading creates nothing (a helper container would
    create the volume: ``status`` left it behind on a host that never had flags)."""
    try:
        target.client.volumes.get(volume_name(target.env.name))
    except docker.errors.NotFound:
        return None
    helper = _helper(target, ["true"])
    try:
        raw = state.get_file(helper, container_file(image))
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            helper.remove(force=True)
    if raw is None:
        return None
    return flags.parse(raw, f"{target.name}:{volume_name(target.env.name)}/{image}.json")


def stamp_file(image: str) -> str:
    """Beside ``<image>.json``: when it was written (ns), so that an older write never
    replaces it (a swarm's flag service writes only a newer one: conveyor.swarmflags)."""
    return f".stamp-{image}"


def write(target: HostTarget, image: str, definitions: Definitions, stamp: int) -> None:
    """Replace the image's flag file on one host: upload under a temporary name, rename; then
    its stamp."""
    flags.validate(definitions, f"{image} flags")
    incoming = f".incoming-{image}-{time.time_ns()}"
    renames = 'mv -f "$1.json" "$2" && mv -f "$1.stamp" "$3"'
    helper = _helper(
        target,
        ["sh", "-c", renames, "sh", f"{MOUNT}/{incoming}", container_file(image),
         f"{MOUNT}/{stamp_file(image)}"],
    )  # fmt: skip
    try:
        state.put_files(
            helper,
            MOUNT,
            {f"{incoming}.json": flags.dumps(definitions), f"{incoming}.stamp": b"%d\n" % stamp},
        )
        helper.start()
        result = helper.wait(timeout=30)
        if result.get("StatusCode") != 0:
            logs = helper.logs(tail=3).decode(errors="replace").strip()
            raise FlagError(f"{target.name}: could not replace {image}.json ({logs[-200:]})")
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            helper.remove(force=True)


def read_all(
    targets: Iterable[HostTarget], images: Iterable[str]
) -> dict[str, dict[str, Definitions | None]]:
    """Per host, per image, the current flags."""
    names = list(images)
    return {t.name: {image: read(t, image) for image in names} for t in targets}


def write_all(targets: Iterable[HostTarget], states: Mapping[str, Definitions]) -> None:
    """Every host gets the same flag files (an abort on one would leave hosts apart). They
    are published first, for the hosts not listed (a swarm's flag services: a node that
    joins), so that a failed publication changes nothing."""
    listed = list(targets)
    if not listed:
        return
    for image, definitions in states.items():
        flags.validate(definitions, f"{image} flags")
    stamp = listed[0].flags_stamp(sorted(states), time.time_ns())
    listed[0].publish_flags(
        {image: flags.dumps(definitions) for image, definitions in states.items()}, stamp
    )
    for target in listed:
        for image, definitions in states.items():
            write(target, image, definitions, stamp)


def images_with_flags(services: Iterable[Service]) -> list[str]:
    """The images, among an environment's services', that declare flags."""
    return sorted({s.image for s in services if s.flags})


def state_for(
    record_id: str, recorded: Mapping[str, object], events: Iterable[Mapping[str, object]]
) -> dict[str, Definitions]:
    """The flag files that went with a release: its deploy's, then every ``flag-set`` made
    while it was live (the latest per image wins) — except that a flag a ramp killed stays
    off until a person sets it again or starts a new ramp of it (DECISIONS)."""
    found: dict[str, Definitions] = {}
    written = recorded.get("state")
    if isinstance(written, Mapping):
        found.update({str(k): dict(v) for k, v in written.items() if isinstance(v, Mapping)})
    # (image, flag): off until a person turns it on again — by flag-set, or a new ramp
    killed: set[tuple[str, str]] = set()
    for event in events:
        kind, image = event.get("kind"), event.get("image")
        if not isinstance(image, str):
            continue
        flag = str(event.get("flag"))
        if kind == "flag-killed":
            killed.add((image, flag))
        elif kind == "flag-ramp-started":
            killed.discard((image, flag))
        if kind != "flag-set":
            continue
        if not event.get("ramp"):
            killed.discard((image, flag))
        definitions = event.get("state")
        if event.get("record") == record_id and isinstance(definitions, Mapping):
            found[image] = dict(definitions)
    for image, flag in sorted(killed):
        # A release whose flag was not rampable yet (no split to set to 0) keeps its own.
        definition = found.get(image, {}).get("flags", {}).get(flag)
        if isinstance(definition, Mapping) and flags.split_of(definition) is not None:
            found[image] = flags.with_percent(found[image], flag, 0, f"{image} flags")
    return found
