"""Secrets delivered as read-only files on a tmpfs, so their values never show in ``docker
inspect``, in the image or in the container's filesystem diff.

A secret declared ``as = "file"`` reaches the service as ``NAME_FILE=/run/secrets/NAME`` (the
convention of the official database images); the service reads the file, waiting for it to
appear. The container gets an empty tmpfs at ``/run/secrets`` when it is created, and the
values are written into it right after every start: ``put_archive`` cannot do it (on a tmpfs
mount it writes *under* the mount, into the container's layer — moby#22020), so each value
goes through ``exec``'s stdin into a file owned by root, readable by the container user's
group only, moved into place in one rename so the service never reads half a value.

A tmpfs is emptied whenever its container stops, so a kept container that is started again
needs ``deliver`` again; a container the engine restarts by itself (a crash, a daemon restart)
waits for its secrets until conveyor delivers them.
"""

from __future__ import annotations

import base64
import contextlib

from docker.utils.socket import consume_socket_output, frames_iter

from conveyor.config import SECRETS_DIR, SecretRef, Service
from conveyor.containers import Container
from conveyor.errors import SecretDeliveryFailed

# rw for the exec that writes; nothing on it may run, be a device or gain privileges.
TMPFS_OPTIONS = "rw,nosuid,nodev,noexec,size=1m,mode=0755"
DELIVERY_TIMEOUT = 30.0

# Runs as root in the container: $1 is the secret's name, $2 the container's user (name or
# uid, may be empty) and $3 its group (may be empty). One line of base64 on stdin is the value,
# so the script needs no EOF (which not every engine transport can send) and any bytes pass.
_WRITE = r"""set -eu
umask 077
tmp="__DIR__/.$1.$$"
IFS= read -r line
printf '%s' "$line" | base64 -d > "$tmp"
group="$3"
if [ -z "$group" ] && [ -n "$2" ]; then group="$(id -g "$2" 2>/dev/null || true)"; fi
if [ -n "$group" ]; then chgrp "$group" "$tmp"; chmod 0440 "$tmp"
elif [ -n "$2" ]; then chown "$2" "$tmp"; chmod 0400 "$tmp"
else chmod 0400 "$tmp"; fi
mv -f "$tmp" "__DIR__/$1"
""".replace("__DIR__", SECRETS_DIR)


def file_secrets(service: Service) -> list[SecretRef]:
    return [secret for secret in service.secrets if secret.delivery == "file"]


def tmpfs(service: Service) -> dict[str, str]:
    """The ``tmpfs`` argument for creating the service's container: empty without file
    secrets, so other services' containers are created exactly as before."""
    return {SECRETS_DIR: TMPFS_OPTIONS} if file_secrets(service) else {}


def environment(service: Service) -> dict[str, str]:
    """``NAME_FILE`` variables for the service's file secrets: where, never what."""
    return {secret.file_variable: secret.file_path for secret in file_secrets(service)}


def start(container: Container, service: Service) -> None:
    """Start a service container and deliver its file secrets: every start goes through here."""
    container.start()
    deliver(container, service)


def deliver(container: Container, service: Service) -> None:
    """Write every file secret of ``service`` into ``container``, which must be running.

    Call it after every start of a service container, fresh or kept. Values are resolved
    here, just in time, and never printed or logged.
    """
    secrets = file_secrets(service)
    if not secrets:
        return
    user, _, group = str(container.attrs.get("Config", {}).get("User") or "").partition(":")
    for secret in secrets:
        _write(container, secret.name, secret.resolve().encode(), user, group)


def _write(container: Container, name: str, value: bytes, user: str, group: str) -> None:
    api = container.client.api
    where = f"{container.name}: secret {name}"
    try:
        exec_id = api.exec_create(
            container.id,
            ["sh", "-c", _WRITE, "sh", name, user, group],
            stdin=True,
            stdout=True,
            stderr=True,
            user="0",
        )["Id"]
        sock = api.exec_start(exec_id, socket=True)
        try:
            raw = getattr(sock, "_sock", sock)
            with contextlib.suppress(AttributeError, OSError):
                raw.settimeout(DELIVERY_TIMEOUT)
            raw.sendall(base64.b64encode(value) + b"\n")
            _out, err = consume_socket_output(frames_iter(sock, tty=False), demux=True)
        finally:
            with contextlib.suppress(OSError):
                sock.close()
        code = api.exec_inspect(exec_id).get("ExitCode")
    except OSError as exc:
        raise SecretDeliveryFailed(f"{where}: could not be delivered ({exc})") from None
    except Exception as exc:  # the engine's own errors (docker.errors.APIError and kin)
        raise SecretDeliveryFailed(
            f"{where}: could not be delivered ({type(exc).__name__}: {str(exc)[:160]}) — is "
            f"the container running?"
        ) from None
    if code != 0:
        # The script's stderr names a missing tool or a bad user, never the value.
        said = (err or b"").decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise SecretDeliveryFailed(
            f"{where}: writing {SECRETS_DIR}/{name} failed (exit {code}: {said[0][:160]}) — "
            f"the image needs sh, base64, id and chgrp (coreutils or busybox)"
        )
