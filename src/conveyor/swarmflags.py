"""Feature flags on a swarm: every node's flag volume holds the current files, a node that
joins (and is not listed yet) too.

conveyor writes each image's flag file on every listed node at once (:mod:`conveyor.flagstate`):
that is how a change reaches running tasks within the provider's bound. A node it does not list
(one that joined since) would keep an empty volume, and its tasks the image's defaults. So each
change is also *published*, just before those writes: one global Swarm service per image,
``conveyor-<env>-flags-<image>``, whose task on every node writes the file from its environment
into the node's volume, then sleeps. Swarm runs it on a node that joins; a change updates the
service, and Swarm replaces the task on every node, which writes the new file.

Every write carries a stamp (nanoseconds at the change; newer than any stamp already published,
whatever the publishing machine's clock said), kept beside the file in the volume, and a task
writes only a newer one: a task of an older change that Swarm starts late never undoes a newer
file, and a restarted task rewrites nothing."""

from __future__ import annotations

import base64
from typing import Any

import docker.errors
from docker.types import Mount, RestartPolicy, ServiceMode, UpdateConfig

from conveyor.config import Environment
from conveyor.containers import swarm_service_name
from conveyor.flagstate import MOUNT, ROLE, stamp_file, volume_name

STAMP_LABEL = "conveyor.flags-stamp"
# The task only sleeps: nothing to drain, so it stops at once.
STOP_SIGNAL = "SIGKILL"
RESTART = RestartPolicy(condition="any", delay=1_000_000_000)
# Every node's task at once: each only writes a file.
UPDATE = UpdateConfig(parallelism=0, order="stop-first", failure_action="continue")

# The task's command, run by sh in the router image (it has sh, base64 and mv). The file and
# its stamp are renamed into place, the file first: a stamp never names a file not yet there.
WRITE = """set -eu
file="$FLAGS_DIR/$FLAGS_IMAGE.json"
stamp="$FLAGS_DIR/$FLAGS_STAMP_FILE"
held=$(cat "$stamp" 2>/dev/null || true)
case "$held" in ''|*[!0-9]*) held=0 ;; esac
if [ "$held" -lt "$FLAGS_STAMP" ]; then
  printf '%s' "$FLAGS_CONTENT" | base64 -d > "$file.published"
  mv -f "$file.published" "$file"
  printf '%s\\n' "$FLAGS_STAMP" > "$stamp.published"
  mv -f "$stamp.published" "$stamp"
fi
exec sleep infinity
"""


def service_name(env: str, image: str) -> str:
    return swarm_service_name(
        f"conveyor-{env}-flags-{image}", "the environment's or the image's name"
    )


def task_env(image: str, content: bytes, stamp: int) -> list[str]:
    return [
        f"FLAGS_DIR={MOUNT}",
        f"FLAGS_IMAGE={image}",
        f"FLAGS_STAMP={stamp}",
        f"FLAGS_STAMP_FILE={stamp_file(image)}",
        f"FLAGS_CONTENT={base64.b64encode(content).decode()}",
    ]


def next_stamp(manager: Any, env: Environment, images: list[str], now: int) -> int:
    """``now``, or one more than the newest stamp the images' flag services publish, if a
    machine with a clock ahead of this one published it: a newer write must win."""
    newest = 0
    for image in images:
        name = service_name(env.name, image)  # a name Swarm refuses fails before any write
        try:
            found = manager.services.get(name)
        except docker.errors.NotFound:
            continue
        label = (found.attrs["Spec"].get("Labels") or {}).get(STAMP_LABEL, "0")
        newest = max(newest, int(label) if label.isdigit() else 0)
    return max(now, newest + 1)


def publish(
    manager: Any, env: Environment, helper_image: str, files: dict[str, bytes], stamp: int
) -> None:
    """Create or update each image's flag service to write ``files[image]`` with ``stamp``.

    ``helper_image`` is the router image as the router service names it, so a node that can
    run a router can run this too."""
    for image, content in files.items():
        name = service_name(env.name, image)
        labels = {"conveyor.env": env.name, "conveyor.role": ROLE, STAMP_LABEL: str(stamp)}
        spec: dict[str, Any] = {
            "command": ["sh", "-c", WRITE],
            "env": task_env(image, content, stamp),
            "labels": labels,
            "container_labels": {"conveyor.env": env.name, "conveyor.role": ROLE},
            "mounts": [Mount(target=MOUNT, source=volume_name(env.name), type="volume")],
            "networks": ["host"],
            "user": "0",
            "stop_signal": STOP_SIGNAL,
            "restart_policy": RESTART,
            "update_config": UPDATE,
            # Only where the environment's tasks run (conveyor.placement).
            "constraints": list(env.placement),
        }
        try:
            found = manager.services.get(name)
        except docker.errors.NotFound:
            manager.services.create(helper_image, name=name, mode=ServiceMode("global"), **spec)
        else:
            found.update(image=helper_image, **spec)
