"""Chaos under load (issue 13, item 4): the state volume full or read-only when the ledger is
written. The deploy stops before the switch with one line saying what to do, the release that
was serving keeps serving, the ledger never shows a torn or misleading event, and once the
volume is writable again the next commands tell the truth and the next deploy works.

The volume is a small ext4 file system on a loop device, given to the tests' own dockerd
(DECISIONS: full volumes never on the user's engine) as the environment's state volume before
its first deploy; it is filled from the host through a second mount of the same device.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conveyor import images
from conveyor.state import state_names
from testkit.steps import load_on, ok, one_line, served

VERSIONS = ("1.0.0", "2.0.0")


def status(env: Any) -> dict[str, Any]:
    return dict(json.loads(ok(env.cli("status", "--env", env.name, "--json")).stdout))


def history(env: Any) -> list[tuple[str, str, str]]:
    records = json.loads(ok(env.cli("history", "--env", env.name, "--json")).stdout)
    return [(r["id"], r["version"], r["outcome"]) for r in records]


def clean(state: dict[str, Any]) -> None:
    """``status --json`` with nothing torn, forged, interrupted, left over or disagreeing."""
    assert state["unreadable_ledger_events"] == [], state["unreadable_ledger_events"]
    assert state["forged_ledger_events"] == [], state
    assert state["interrupted"] == [], state["interrupted"]
    assert state["disagreements"] == [], state["disagreements"]
    assert all(h["leftovers"] == [] for h in state["hosts"]), state["hosts"]


def run_until_phase(env: Any, argv: tuple[str, ...], phase: str, act: Any) -> Any:
    """Run ``argv`` with its phases traced and call ``act()`` as ``phase`` begins."""
    process = env.cli_running(*argv, env={"CONVEYOR_TRACE_PHASES": "1"})
    assert process.stderr is not None and process.stdout is not None
    seen = []
    acted = False
    for line in process.stderr:
        seen.append(line.rstrip("\n"))
        if line.strip() == f"phase: {phase}":
            act()
            acted = True
            break
    rest = process.stderr.read()
    stdout = process.stdout.read()
    process.wait(timeout=120)
    assert acted, f"never reached phase {phase}: {seen}\n{rest}"
    return subprocess.CompletedProcess(argv, process.returncode, stdout, "\n".join(seen) + rest)


# --- a small ext4 volume on a loop device ---------------------------------------------------


@dataclass
class LoopVolume:
    """An ext4 file system on a loop device, mounted on the host to fill it."""

    image: Path
    mountpoint: Path
    device: str = ""
    mounted: bool = False
    fillers: list[Path] = field(default_factory=list)

    def create(self, megabytes: int) -> None:
        with self.image.open("wb") as handle:
            handle.truncate(megabytes * 1024 * 1024)
        # No blocks reserved for root: the engine writes as root, so they would not count.
        sh("mkfs.ext4", "-q", "-F", "-m", "0", "-b", "4096", str(self.image))
        self.device = sh("losetup", "--find", "--show", str(self.image)).strip()

    def mount(self) -> None:
        self.mountpoint.mkdir(exist_ok=True)
        sh("mount", self.device, str(self.mountpoint))
        self.mounted = True

    def unmount(self) -> None:
        if self.mounted:
            sh("umount", str(self.mountpoint))
            self.mounted = False

    def fill(self) -> None:
        """Write fillers until the file system refuses: nothing is left, for anyone.

        ext4 reserves blocks for delayed allocation while a file is written and gives the
        unused ones back at sync, so a filler can stop with a block still free (CI saw
        it); the next filler takes it, or writing it fails too and no one can use it."""
        for _ in range(16):
            wrote = self.write_filler()
            os.sync()
            if os.statvfs(self.mountpoint).f_bavail == 0 or not wrote:
                return
        raise AssertionError(f"{self.mountpoint} still takes writes after 16 fillers")

    def write_filler(self) -> int:
        """One more filler, written until ENOSPC; how many bytes it took."""
        filler = self.mountpoint / f"filler-{len(self.fillers)}"
        self.fillers.append(filler)
        chunk = bytes(4096)
        with filler.open("wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
            with contextlib.suppress(OSError):
                os.fsync(handle.fileno())
        return filler.stat().st_size

    def free(self) -> None:
        for filler in self.fillers:
            filler.unlink(missing_ok=True)
        self.fillers.clear()
        os.sync()

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.unmount()
        if self.mounted:  # busy: lazily, so the device can go
            subprocess.run(["umount", "-l", str(self.mountpoint)], check=False)
        if self.device:
            subprocess.run(["losetup", "-d", self.device], check=False, capture_output=True)
        self.image.unlink(missing_ok=True)


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def loop_volume(tmp_path: Path) -> Iterator[LoopVolume]:
    volume = LoopVolume(image=tmp_path / "state.ext4", mountpoint=tmp_path / "mnt")
    try:
        yield volume
    finally:
        volume.remove()


def state_on_loop(client: Any, env: str, volume: LoopVolume, *, read_only: bool = False) -> None:
    """The environment's state volume, on the loop device (before its state container)."""
    options = {"type": "ext4", "device": volume.device}
    if read_only:
        options["o"] = "ro"
    client.volumes.create(name=state_names(env)[1], driver="local", driver_opts=options)


def drop_state(client: Any, env: str) -> dict[str, Any]:
    """Remove the state container and volume (the data stays on the device); how the
    container was made, to make it again."""
    name, volume = state_names(env)
    container = client.containers.get(name)
    made = {"image": container.attrs["Config"]["Image"], "labels": container.labels}
    container.remove(force=True)
    client.volumes.get(volume).remove(force=True)
    return made


def make_state(client: Any, env: str, made: dict[str, Any]) -> None:
    """The state container as conveyor.state creates it."""
    name, volume = state_names(env)
    client.containers.create(
        made["image"],
        ["true"],
        name=name,
        labels=made["labels"],
        volumes={volume: {"bind": "/state", "mode": "rw"}},
        network_mode="none",
    )


def preload(source: Any, target: tuple[str, Any], config: Any, dist: Path) -> None:
    """The base, router and release images on the second engine (it has no registry)."""
    wanted = [
        images.resolve_base_image(source, config),
        images.router_image_tag(config, source),
        *(
            entry["image"]
            for version in VERSIONS
            for entry in json.loads((dist / version / "manifest.json").read_text())[
                "images"
            ].values()
        ),
    ]
    url, client = target
    missing = [name for name in wanted if not images.image_present(client, name)]
    if not missing:
        return
    save = subprocess.Popen(["docker", "save", *missing], stdout=subprocess.PIPE)
    load = subprocess.run(
        ["docker", "-H", url, "load", "-q"], stdin=save.stdout, capture_output=True, check=False
    )
    assert save.wait() == 0 and load.returncode == 0, load.stderr


@pytest.fixture(scope="module")
def images_on_second_engine(
    second_engine: tuple[str, Any], docker_client: Any, isolated_config: Any, test_releases: Any
) -> None:
    """Once per module: the images these tests deploy, copied to the second engine."""
    preload(docker_client, second_engine, isolated_config, test_releases.dist)


def on_second_engine(make_environment: Any, second_engine: tuple[str, Any]) -> Any:
    url, client = second_engine
    env = make_environment(
        hosts=[{"name": "h1", "docker": url, "port_offset": 0}], verify=1, drain=0.5
    )
    make_environment.clients.append(client)
    return env


def new_containers(client: Any, env: str, version: str) -> list[str]:
    found = client.containers.list(
        all=True, filters={"label": [f"conveyor.env={env}", f"conveyor.version={version}"]}
    )
    return [c.name for c in found if c.status == "running"]


# --- the tests ------------------------------------------------------------------------------


def test_a_full_state_volume_stops_a_deploy_before_the_switch_and_nothing_is_half_recorded(
    images_on_second_engine: None,
    make_environment: Any,
    second_engine: tuple[str, Any],
    loop_volume: LoopVolume,
) -> None:
    _url, client = second_engine
    env = on_second_engine(make_environment, second_engine)
    loop_volume.create(megabytes=8)
    state_on_loop(client, env.name, loop_volume)
    loop_volume.mount()
    port = env.public()
    deploy = ("deploy", "--env", env.name, "--version")
    ok(env.cli(*deploy, "1.0.0"))
    volume = state_names(env.name)[1]

    # Full before the deploy: it stops at its first record, having started nothing.
    loop_volume.fill()
    with load_on(port) as load:
        line = one_line(env.cli(*deploy, "2.0.0"), alone=True)
    before = line
    stopped_at_once = load.result.failures
    assert f"state volume {volume} on host h1" in line and "full" in line, line
    assert "did not start" in line and "1.0.0 (r0001) is still serving" in line, line
    assert line.endswith("free space on it, then re-run"), line
    assert stopped_at_once == 0, load.result.as_dict()
    assert new_containers(client, env.name, "2.0.0") == []
    # Still full: status and history read, and show nothing torn and no record of it.
    assert history(env) == [("r0001", "1.0.0", "succeeded")]
    clean(status(env))

    # Full while the new color starts: the intent before the switch is refused; the new
    # color is stopped, and the failure is recorded from the volume's reserve.
    loop_volume.free()
    with load_on(port) as load:
        result = run_until_phase(env, (*deploy, "2.0.0"), "start", loop_volume.fill)
        line = one_line(result, alone=True)
    assert "stopped before switching h1" in line and "full" in line, (line, result.stdout)
    assert "1.0.0 (r0001) is still serving" in line and "could not record" not in line, line
    between = load.result.failures
    assert between == 0, load.result.as_dict()
    assert served(port) == "1.0.0"
    assert new_containers(client, env.name, "2.0.0") == []
    records = json.loads(ok(env.cli("history", "--env", env.name, "--json")).stdout)
    failed = records[-1]
    assert (failed["id"], failed["outcome"], failed["switched"]) == ("r0002", "failed", [])
    assert "full" in failed["reason"], failed
    clean(status(env))

    # Space freed: the next deploy works and the ledger tells the whole story.
    loop_volume.free()
    with load_on(port) as load:
        ok(env.cli(*deploy, "2.0.0"))
    assert load.result.failures == 0, load.result.as_dict()
    assert served(port) == "2.0.0"
    assert history(env) == [
        ("r0001", "1.0.0", "succeeded"),
        ("r0002", "2.0.0", "failed"),
        ("r0003", "2.0.0", "succeeded"),
    ]
    clean(status(env))
    print(
        f"\nfull before the deploy: {stopped_at_once} failed requests; the user saw: {before}"
        f"\nfull as the new color starts: {between} failed requests; the user saw: {line}"
    )


def test_a_read_only_state_volume_stops_a_deploy_before_it_starts_anything(
    images_on_second_engine: None,
    make_environment: Any,
    second_engine: tuple[str, Any],
    loop_volume: LoopVolume,
) -> None:
    _url, client = second_engine
    env = on_second_engine(make_environment, second_engine)
    loop_volume.create(megabytes=8)
    state_on_loop(client, env.name, loop_volume)
    port = env.public()
    deploy = ("deploy", "--env", env.name, "--version")
    ok(env.cli(*deploy, "1.0.0"))

    # The same data, mounted read-only (as after an operator's or the kernel's remount).
    made = drop_state(client, env.name)
    state_on_loop(client, env.name, loop_volume, read_only=True)
    make_state(client, env.name, made)
    with load_on(port) as load:
        line = one_line(env.cli(*deploy, "2.0.0"), alone=True)
    assert "read-only" in line and "did not start" in line, line
    assert line.endswith("make it writable, then re-run"), line
    assert load.result.failures == 0, load.result.as_dict()
    assert served(port) == "1.0.0"
    assert history(env) == [("r0001", "1.0.0", "succeeded")]
    clean(status(env))

    made = drop_state(client, env.name)
    state_on_loop(client, env.name, loop_volume)
    make_state(client, env.name, made)
    ok(env.cli(*deploy, "2.0.0"))
    assert served(port) == "2.0.0"
    assert history(env) == [("r0001", "1.0.0", "succeeded"), ("r0002", "2.0.0", "succeeded")]
    print(f"\nread-only state volume: failed requests {load.result.failures}; the user saw: {line}")
