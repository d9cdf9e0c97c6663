"""Locks that mean something and secrets that stay out of `docker inspect`, on a real engine.

- ``unlock`` refuses a live holder's lock unless forced (recorded); a stale lock says so.
- A holder whose lock was removed and re-taken knows it is no longer the holder.
- A secret declared ``as = "file"`` reaches the service as a read-only file on a tmpfs: its
  value is in neither ``docker inspect`` nor the container's filesystem diff, and a kept
  container started again by a rollback gets it again.
- ``status`` into a closed pipe (``| head -1``) ends quietly, through python -m and invoke.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from conveyor import locks
from conveyor.errors import LockLost
from conveyor.operations import Session
from testkit.steps import ok

ROOT = Path(__file__).resolve().parents[2]


def last_line(result: Any) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("conveyor: "), result.stderr
    return line


def ready_session(env: Any) -> Session:
    """A session whose router image exists, so locks and the state volume can be created."""
    session = Session(env.config, env.name)
    session.ensure_router_images()
    return session


def wait_for(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def holder_lock(session: Session) -> locks.EnvironmentLock:
    return locks.EnvironmentLock(
        session.primary.client, session.env.name, session.router_image or "", stale_after=20
    )


# --- locks ----------------------------------------------------------------------------------


def test_unlock_refuses_a_live_holder_unless_forced_and_the_holder_notices(
    make_environment: Any,
) -> None:
    env = make_environment()
    session = ready_session(env)
    bob = holder_lock(session)
    bob.acquire("bob", "2.0.0", "hotfix in progress")
    try:
        shown = ok(env.cli("status", "--env", env.name)).stdout
        assert "lock: held by bob" in shown and f"process {os.getpid()} alive" in shown

        refused = last_line(env.cli("unlock", "--env", env.name))
        assert "is locked by bob" in refused and "that deploy is alive" in refused
        assert f"invoke unlock --env {env.name} --force" in refused
        assert bob.still_ours() and session.ledger.audit_events() == []

        forced = ok(env.cli("unlock", "--env", env.name, "--force")).stdout
        assert "forced: removed" in forced and "held by bob" in forced
        [event] = session.ledger.audit_events()
        assert event["kind"] == "unlock" and event["forced"] is True
        assert event["holder"]["owner"] == "bob" and event["holder"]["stale"] is None

        # The holder finds out: at once when asked, and by its own heartbeat.
        assert not bob.still_ours()
        with pytest.raises(LockLost, match="no longer holds the lock"):
            bob.ensure_ours()
        assert wait_for(lambda: bob.lost is not None, timeout=15), "the heartbeat did not notice"
    finally:
        bob.release()


def test_a_lock_removed_and_retaken_is_no_longer_ours_and_ours_cannot_remove_theirs(
    make_environment: Any,
) -> None:
    env = make_environment()
    session = ready_session(env)
    first, second = holder_lock(session), holder_lock(session)
    first.acquire("alice", "1.0.0")
    try:
        assert first.still_ours()
        ok(env.cli("unlock", "--env", env.name, "--force"))
        second.acquire("carol", "2.0.0")
        assert second.still_ours() and not first.still_ours()
        with pytest.raises(LockLost, match="re-taken by carol"):
            first.ensure_ours()
        first.release()  # the stale handle removes only its own container, never carol's
        holder = session.read_lock()
        assert holder is not None and holder.owner == "carol"
    finally:
        second.release()
        first.release()


def test_a_stale_lock_is_shown_as_stale_and_unlocked_without_force(
    make_environment: Any, docker_client: Any
) -> None:
    env = make_environment()
    session = ready_session(env)
    dead = subprocess.Popen(["true"])
    dead.wait()
    docker_client.containers.create(
        session.router_image,
        ["true"],
        name=locks.lock_name(env.name),
        labels={
            "conveyor.env": env.name,
            "conveyor.role": "lock",
            "conveyor.lock.owner": "crashed-ci",
            "conveyor.lock.host": os.uname().nodename,
            "conveyor.lock.pid": str(dead.pid),
            "conveyor.lock.since": f"{time.time():.3f}",
            "conveyor.lock.version": "1.5.0",
        },
    )
    shown = ok(env.cli("status", "--env", env.name)).stdout
    [line] = [x for x in shown.splitlines() if x.strip().startswith("lock:")]
    assert line.strip().startswith(f"lock: STALE — its process {dead.pid}") and "is gone" in line
    assert "held by crashed-ci" in line
    as_json = json.loads(ok(env.cli("status", "--env", env.name, "--json")).stdout)
    assert "is gone" in as_json["lock"]["stale"]

    removed = ok(env.cli("unlock", "--env", env.name)).stdout
    assert "removed the stale" in removed and "is gone" in removed
    [event] = session.ledger.audit_events()
    assert event["forced"] is False and "is gone" in event["why"]
    assert session.read_lock() is None


# --- secrets as files -----------------------------------------------------------------------


def with_file_secret(env: Any, variable: str) -> None:
    """The api's DATABASE_URL as a file secret read from ``variable`` (instead of plain env)."""
    text = env.config_path.read_text(encoding="utf-8")
    plain = 'env = { DATABASE_URL = "sqlite:////data/refapi.db" }'
    assert text.count(plain) == 1, "the sandbox's api service changed shape"
    env.config_path.write_text(
        text.replace(
            plain, f'secrets = {{ DATABASE_URL = {{ from = "env:{variable}", as = "file" }} }}'
        ),
        encoding="utf-8",
    )


def layer_files_containing(container: Any, needle: bytes) -> list[str]:
    """Files of the container's own layer (its diff) whose contents include ``needle``."""
    found = []
    for change in container.diff() or []:
        path = change["Path"]
        if change["Kind"] == 2 or path == "/run/secrets":  # deleted; the tmpfs mount point
            continue
        stream, _stat = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            for member in tar.getmembers():
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is not None and needle in handle.read():
                    found.append(f"{path} ({member.name})")
    return found


def api_container(docker_client: Any, env: Any, release: str) -> Any:
    [container] = docker_client.containers.list(
        all=True,
        filters={
            "label": [
                f"conveyor.env={env.name}",
                "conveyor.service=api",
                f"conveyor.release={release}",
            ]
        },
    )
    return container


def test_a_file_secret_is_in_neither_inspect_nor_the_layer_and_reaches_a_kept_container(
    make_environment: Any, docker_client: Any
) -> None:
    env = make_environment()
    token = secrets.token_hex(8)
    value = f"sqlite:////data/secret-{token}.db"
    variable = f"CONVEYOR_T_DB_{token}"
    with_file_secret(env, variable)
    given = {variable: value}

    ok(env.cli("deploy", "--env", env.name, "--version", "1.0.0", env=given))
    first = api_container(docker_client, env, "r0001")
    first.reload()
    inspected = json.dumps(first.attrs)
    assert token not in inspected
    assert "DATABASE_URL_FILE=/run/secrets/DATABASE_URL" in first.attrs["Config"]["Env"]
    assert "/run/secrets" in first.attrs["HostConfig"]["Tmpfs"]

    changes = [c["Path"] for c in first.diff() or []]
    assert not [p for p in changes if p.startswith("/run/secrets/")], changes
    assert layer_files_containing(first, token.encode()) == []

    # The service read the file: its database is the one the secret names.
    listing = first.exec_run(["ls", "/data"]).output.decode()
    assert f"secret-{token}.db" in listing, listing
    # Read-only for the service: owned by root, readable by its group, not writable.
    mode = first.exec_run(["stat", "-c", "%A %U", "/run/secrets/DATABASE_URL"]).output.decode()
    assert mode.split() == ["-r--r-----", "root"], mode
    written = first.exec_run(["sh", "-c", "echo x >> /run/secrets/DATABASE_URL"])
    assert written.exit_code != 0

    ok(env.cli("deploy", "--env", env.name, "--version", "2.0.0", env=given))
    first.reload()
    assert first.status == "exited"

    # A rollback starts the kept r0001 container again: its tmpfs came back empty, so it
    # becomes ready only if the secret is delivered again.
    back = ok(env.cli("rollback", "--env", env.name, env=given))
    assert "restarting kept api" in back.stdout, back.stdout
    first.reload()
    assert first.status == "running"
    assert token not in json.dumps(first.attrs)
    assert not [c["Path"] for c in first.diff() or [] if c["Path"].startswith("/run/secrets/")]


# --- a closed pipe ----------------------------------------------------------------------------


def into_a_closed_pipe(argv: list[str], env: dict[str, str]) -> Any:
    """Like `… | head -1` once head has gone: every write to stdout fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            argv,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, **env},
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)


def test_status_into_a_closed_pipe_ends_quietly(make_environment: Any) -> None:
    env = make_environment()
    use = {"CONVEYOR_CONFIG": str(env.config_path)}
    for argv in (
        [sys.executable, "-m", "conveyor", "status", "--env", env.name],
        [sys.executable, "-m", "invoke", "status", "--env", env.name],
    ):
        result = into_a_closed_pipe(argv, use)
        assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result
        assert result.stderr == "", result.stderr
        assert result.returncode == 141, result
