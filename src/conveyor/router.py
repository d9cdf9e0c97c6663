"""The router: HAProxy in a container on each host, switched through its runtime API.

Each service has two backends, ``<svc>_live`` and ``<svc>_preview``, each holding a ``blue``
and a ``green`` server. Outside a canary exactly one server per backend is ``ready``; the other
is in ``maint``. Switching traffic is one runtime-API call that readies the new color and puts
the old one in maintenance: no reload, no dropped connection, and requests in flight on the old
color finish. A canary step readies both colors of the live backend and splits traffic by
their weights (``set weight``, out of ``FULL``), again without a reload. The config file
written into the container always names the live color too, so a restarted router comes back
serving the right release (the stable one, mid-canary).

A request may pick a service explicitly with the ``X-Conveyor-Service`` header; deploys use it
to smoke-check and verify each service through the real proxy path.
"""

from __future__ import annotations

import csv
import hashlib
import io
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from conveyor.analysis import LOG_FORMAT
from conveyor.config import Environment, Service
from conveyor.errors import ConveyorError
from conveyor.terms import COLORS, other

SERVICE_HEADER = "X-Conveyor-Service"
CONFIG_PATH = "/etc/conveyor/haproxy.cfg"
# A server's weight when it takes all of its backend's traffic; a canary step gives the new
# color ``percent`` and the stable one ``FULL - percent``.
FULL = 100
# With ``[canary] sticky = true``: the cookie that keeps a user on the color they first got.
STICKY_COOKIE = "conveyor_color"


class RouterError(ConveyorError):
    """The router could not be reached or refused a command."""


@dataclass(frozen=True)
class Ports:
    """A host's view of an environment's ports (config ports plus the host's offset)."""

    bind: str
    public: int
    preview: int
    admin: int
    services: Mapping[str, Mapping[str, int]]

    @classmethod
    def of(cls, env: Environment, offset: int) -> Ports:
        return cls(
            bind=env.router.bind,
            public=env.router.port + offset,
            preview=env.router.preview_port + offset,
            admin=env.router.admin_port + offset,
            services={
                name: {color: port + offset for color, port in svc.ports.items()}
                for name, svc in env.services.items()
            },
        )


# Where a request that matches no route goes when no service is at "/".
NO_ROUTE = "no_route"


def _root_service(services: Iterable[Service]) -> Service | None:
    """The service at "/", which gets whatever no other route matches."""
    return next((svc for svc in services if svc.route == "/"), None)


def _routing_rules(services: Iterable[Service], suffix: str) -> list[str]:
    lines = []
    ordered = sorted(services, key=lambda s: len(s.route), reverse=True)
    for svc in ordered:
        lines.append(
            f"    use_backend {svc.name}_{suffix} "
            f"if {{ req.hdr({SERVICE_HEADER}) -m str {svc.name} }}"
        )
    default = _root_service(services)
    for svc in ordered:
        if svc is default:
            continue
        prefix = svc.route.rstrip("/")
        lines.append(
            f"    use_backend {svc.name}_{suffix} "
            f"if {{ path {prefix} }} || {{ path_beg {prefix}/ }}"
        )
    # Without a service at "/", what no route matches goes to a backend that answers 404: a
    # frontend's `http-request return` would run before every `use_backend` and answer all.
    fallback = NO_ROUTE if default is None else f"{default.name}_{suffix}"
    lines.append(f"    default_backend {fallback}")
    return lines


def render(env: Environment, ports: Ports, live: Mapping[str, str | None]) -> str:
    """The HAProxy config. ``live`` maps each service to its live color (None: not yet).

    The first line carries a hash of everything except the colors, so a changed structure
    (ports, routes) can be told apart from a switch, which needs no reload. The same hash is
    HAProxy's ``description``, which ``show info`` prints: the running process says which
    structure it loaded without the file being copied out of its container.
    """
    hashed = structure(env, ports)
    return f"# conveyor structure {hashed}\n{_render(env, ports, live, hashed)}"


def structure(env: Environment, ports: Ports) -> str:
    """The hash of the config without its colors (and without the description carrying it,
    so routers rendered before the description existed hash the same)."""
    return hashlib.sha256(_render(env, ports, {}).encode()).hexdigest()[:16]


def structure_of(config_text: str) -> str | None:
    first = config_text.split("\n", 1)[0]
    prefix = "# conveyor structure "
    return first[len(prefix) :].strip() if first.startswith(prefix) else None


DESCRIPTION_PREFIX = "conveyor-structure "


def loaded_structure(show_info: str) -> str | None:
    """From ``show info``, the structure hash the running HAProxy loaded (its ``description``);
    None for a router rendered before the description carried it."""
    for line in show_info.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "description":
            value = value.strip()
            if value.startswith(DESCRIPTION_PREFIX):
                return value[len(DESCRIPTION_PREFIX) :].strip() or None
    return None


def _logging(env: Environment) -> tuple[list[str], list[str]]:
    """Under a canary strategy, one line per forwarded request on stdout (the analysis reads
    response times from it); otherwise no request log at all."""
    if env.strategy != "canary":
        return [], []
    return ["    log stdout format raw local0 info"], [
        "    log global",
        f'    log-format "{LOG_FORMAT}"',
    ]


# The timeouts of an HTTP proxy before conveyor's services: the routers' and the front's.
HTTP_TIMEOUTS = (
    "    timeout connect 2s",
    "    timeout client 30s",
    "    timeout server 30s",
    "    timeout http-keep-alive 10s",
    "    timeout http-request 10s",
)


def _render(
    env: Environment, ports: Ports, live: Mapping[str, str | None], hashed: str | None = None
) -> str:
    services = list(env.services.values())
    global_log, defaults_log = _logging(env)
    sticky = env.strategy == "canary" and env.canary.sticky
    lines = [
        "global",
        *([f"    description {DESCRIPTION_PREFIX}{hashed}"] if hashed else []),
        f"    stats socket ipv4@127.0.0.1:{ports.admin} level admin",
        "    stats timeout 10s",
        *global_log,
        "",
        "defaults",
        "    mode http",
        *defaults_log,
        *HTTP_TIMEOUTS,
        # A request that could not reach a server (it was just stopped) is retried on the
        # other ready one instead of failing the client.
        "    retries 3",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response response-timeout",
        # A reload's old worker closes a keep-alive connection only with its next answer
        # ("Connection: close"), never while a request may be on its way (HAProxy 2.6+).
        "    option idle-close-on-response",
        "",
        "frontend public",
        f"    bind {ports.bind}:{ports.public}",
        *_routing_rules(services, "live"),
        "",
        "frontend preview",
        f"    bind {ports.bind}:{ports.preview}",
        *_routing_rules(services, "preview"),
        "",
    ]
    for svc in services:
        live_color = live.get(svc.name)
        for suffix in ("live", "preview"):
            lines.append(f"backend {svc.name}_{suffix}")
            if sticky and suffix == "live":
                lines.append(f"    cookie {STICKY_COOKIE} insert indirect nocache")
            for color in COLORS:
                port = ports.services[svc.name][color]
                on = live_color == color if suffix == "live" else False
                cookie = f" cookie {color}" if sticky and suffix == "live" else ""
                lines.append(
                    f"    server {color} 127.0.0.1:{port} weight {FULL}{cookie}"
                    + ("" if on else " disabled")
                )
            lines.append("")
    if _root_service(services) is None:
        lines += [
            f"backend {NO_ROUTE}",
            '    http-request return status 404 content-type text/plain string "no route\\n"',
            "",
        ]
    return "\n".join(lines)


def switch_commands(services: Iterable[str], color: str, *, backend: str = "live") -> str:
    """Runtime-API commands putting ``color`` in service and the other color in maintenance.

    The new server is readied before the old one is disabled, so a backend is never empty; both
    get their full weight back, which also ends a canary's split.
    """
    commands = []
    for name in services:
        commands.append(f"set weight {name}_{backend}/{color} {FULL}")
        commands.append(f"set server {name}_{backend}/{color} state ready")
        commands.append(f"set server {name}_{backend}/{other(color)} state maint")
        commands.append(f"set weight {name}_{backend}/{other(color)} {FULL}")
    return "; ".join(commands)


def split_commands(services: Iterable[str], canary: str, percent: int) -> str:
    """Runtime-API commands giving the ``canary`` color ``percent`` of each service's live
    traffic and the other color the rest. The canary's weight is set before it is readied."""
    if not 0 < percent < FULL:
        raise ValueError(f"a split needs 0 < percent < {FULL}, got {percent}")
    commands = []
    for name in services:
        commands.append(f"set weight {name}_live/{canary} {percent}")
        commands.append(f"set server {name}_live/{canary} state ready")
        commands.append(f"set weight {name}_live/{other(canary)} {FULL - percent}")
    return "; ".join(commands)


def park_commands(services: Iterable[str], *, backend: str = "preview") -> str:
    """Put every server of a backend in maintenance (the preview route after a deploy)."""
    return "; ".join(
        f"set server {name}_{backend}/{color} state maint" for name in services for color in COLORS
    )


def admin_direct(port: int, command: str, *, timeout: float = 5.0) -> str:
    """Send runtime-API commands to a router on this machine's loopback."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        raise RouterError(f"router admin API on 127.0.0.1:{port} unreachable: {exc}") from None
    return _checked(b"".join(chunks).decode(errors="replace"), command)


def _checked(answer: str, command: str) -> str:
    lowered = answer.lower()
    for marker in (
        "unknown command",
        "no such server",
        "no such backend",
        "require 'backend",
        "permission denied",
    ):
        if marker in lowered:
            raise RouterError(f"router refused '{command[:80]}': {answer.strip()[:200]}")
    return answer


def parse_weights(stat_csv: str, services: Iterable[str]) -> dict[str, dict[str, int]]:
    """From ``show stat`` CSV, per service, the live backend's servers that are not in
    maintenance and their weights: one color normally, two during a canary step."""
    text = stat_csv.lstrip("# ")
    rows = list(csv.DictReader(io.StringIO(text)))
    result: dict[str, dict[str, int]] = {}
    for name in services:
        result[name] = {
            str(row["svname"]): int(row.get("weight") or 0)
            for row in rows
            if row.get("pxname") == f"{name}_live"
            and row.get("svname") in COLORS
            and not str(row.get("status", "")).startswith("MAINT")
        }
    return result


def parse_live_colors(stat_csv: str, services: Iterable[str]) -> dict[str, str | None]:
    """From ``show stat`` CSV, the one color in service in each live backend (None when none,
    or when a canary splits it between both)."""
    return {
        name: next(iter(ready)) if len(ready) == 1 else None
        for name, ready in parse_weights(stat_csv, services).items()
    }


# Runs inside the router container (host network) when the router is on another machine:
# the admin port listens on that machine's loopback only.
EXEC_ADMIN = (
    "import socket,sys\n"
    "s=socket.create_connection(('127.0.0.1',int(sys.argv[1])),timeout=5)\n"
    "s.sendall(sys.argv[2].encode()+b'\\n')\n"
    "out=b''\n"
    "while True:\n"
    "    c=s.recv(65536)\n"
    "    if not c: break\n"
    "    out+=c\n"
    "sys.stdout.write(out.decode(errors='replace'))\n"
)


# Runs inside a router container (host network): exits 0 once processes of this container
# listen on every port given. /proc/net/tcp lists the listening sockets of the whole host;
# /proc/*/fd shows only this container's processes, so a socket found in both is its own.
EXEC_LISTENS = (
    "import os,sys\n"
    "ports={int(p) for p in sys.argv[1:]}\n"
    "listening={}\n"
    "for table in ('/proc/net/tcp','/proc/net/tcp6'):\n"
    "    try: rows=open(table).read().splitlines()[1:]\n"
    "    except OSError: continue\n"
    "    for row in rows:\n"
    "        f=row.split()\n"
    "        if f[3]=='0A': listening['socket:['+f[9]+']']=int(f[1].rsplit(':',1)[1],16)\n"
    "mine=set()\n"
    "for pid in filter(str.isdigit,os.listdir('/proc')):\n"
    "    try: fds=os.listdir('/proc/'+pid+'/fd')\n"
    "    except OSError: continue\n"
    "    for fd in fds:\n"
    "        try: mine.add(listening.get(os.readlink('/proc/'+pid+'/fd/'+fd)))\n"
    "        except OSError: pass\n"
    "sys.exit(0 if ports<=mine else 1)\n"
)


def listens(container: object, ports: Iterable[int]) -> bool:
    """Whether this router container's own HAProxy listens on every one of ``ports`` (another
    router may listen on the same ports: HAProxy binds with SO_REUSEPORT)."""
    argv = ["python3", "-S", "-c", EXEC_LISTENS, *map(str, ports)]
    result = container.exec_run(argv)  # type: ignore[attr-defined]
    return bool(result.exit_code == 0)


def admin_via_exec(container: object, port: int, command: str) -> str:
    """Send runtime-API commands from inside the router container."""
    result = container.exec_run(["python3", "-c", EXEC_ADMIN, str(port), command])  # type: ignore[attr-defined]
    if result.exit_code != 0:
        raise RouterError(
            f"router admin API (via exec) failed: {result.output.decode(errors='replace')[-200:]}"
        )
    return _checked(result.output.decode(errors="replace"), command)
