"""An ``ssh://`` host: the engine reached over a real sshd, health checks and the router's
admin API reached from inside the router container (as on a remote machine)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit import sandbox
from testkit.loadgen import proof_load


@pytest.fixture
def ssh_host(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A real OpenSSH server on 127.0.0.1 letting a fresh key in as root."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        pytest.fail("sshd is not installed — run scripts/setup as root (openssh-server)")
    port = sandbox.allocate_ports(1)[0]
    for name in ("host", "client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)],
            check=True,
        )
    (tmp_path / "authorized_keys").write_text((tmp_path / "client.pub").read_text())
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host'}\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nPidFile {tmp_path / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nLogLevel ERROR\n"
        # sshd's defaults otherwise, MaxSessions 10 included: a deploy stays within them.
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    server = subprocess.Popen(
        [sshd, "-D", "-E", str(tmp_path / "sshd.log"), "-f", str(config)], stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sshd did not start: {server.stderr.read() if server.stderr else ''}")
            time.sleep(0.1)
    host_key = (tmp_path / "host.pub").read_text().split()
    known = f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}"
    yield {
        "endpoint": f"ssh://root@127.0.0.1:{port}",
        "CONVEYOR_SSH_KEY": (tmp_path / "client").read_text(),
        "CONVEYOR_SSH_KNOWN_HOSTS": known,
    }
    server.terminate()
    server.wait(timeout=10)


def test_deploy_to_an_ssh_host_through_exec_probes(
    make_environment: Any, ssh_host: dict[str, str], tmp_path: Path
) -> None:
    env = make_environment(hosts=[{"name": "remote", "docker": ssh_host["endpoint"]}])
    secrets = {k: v for k, v in ssh_host.items() if k.startswith("CONVEYOR_")}
    clean = {k: v for k, v in os.environ.items() if k not in {"SSH_AUTH_SOCK", "SSH_AGENT_PID"}}
    clean["HOME"] = str(tmp_path)  # the trusted host key goes to a throwaway ~/.ssh

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["python", "-m", "conveyor", "--config", str(env.config_path), *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={**clean, **secrets},
        )

    first = cli("deploy", "--env", env.name, "--version", "1.0.0")
    assert first.returncode == 0, first.stdout + first.stderr
    assert secrets["CONVEYOR_SSH_KEY"].strip().splitlines()[1] not in first.stdout + first.stderr
    load = proof_load(env.public(), max_seconds=200)
    with load:
        second = cli("deploy", "--env", env.name, "--version", "2.0.0")
    assert second.returncode == 0, second.stdout + second.stderr
    assert load.result.failures == 0, load.result.as_dict()
    status = cli("status", "--env", env.name)
    assert "live 2.0.0" in status.stdout, status.stdout + status.stderr

    wrong = {**secrets, "CONVEYOR_SSH_KEY": "not a key"}
    refused = subprocess.run(
        ["python", "-m", "conveyor", "--config", str(env.config_path), "status", "--env", env.name],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**clean, **wrong},
    )
    assert refused.returncode != 0
    assert "CONVEYOR_SSH_KEY was not accepted" in refused.stderr.strip().splitlines()[-1]
