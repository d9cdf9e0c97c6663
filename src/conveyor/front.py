"""The front load balancer's HAProxy config: your traffic spread across every host's router.

Each host (each swarm node) runs its own router; something in front must spread the traffic
across them and stop sending to a node that does not serve, before its requests fail
(DECISIONS: draining a node removes its router task too, so its port refuses connections).
``conveyor front`` writes
that front's config from deploy.toml and the engines:

- **One server per host**, at the host's address (a swarm node's, as its manager knows it; a
  remote engine's host name; 127.0.0.1 for a local one) and its router's public port.
- **A node serves only while every service answers** its readiness path through that node's
  router (the service chosen by conveyor's own routing header, as deploys probe it): checked
  every second, out after two failed checks, back after two good ones. So a node that joins
  or is made active again gets traffic only once its tasks are healthy, and one slow check
  (a busy machine) does not take out the last node that serves. (With one failed check out,
  a swarm test's front once answered 503 for about 3 s while n2 was drained; its log was not
  kept, and a single failed check of n1 would do exactly that.)
- **A request that meets a node which stopped serving is retried on another**: a refused or
  dropped connection for any request, a 503 only for GET, HEAD and OPTIONS, which are safe to
  send twice.

Regenerate it when hosts change; the routers' ports and paths come from deploy.toml.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from conveyor.config import Config, Environment, Host
from conveyor.router import HTTP_TIMEOUTS, SERVICE_HEADER

# Where the front listens unless told: plain HTTP on every address (TLS is the front's own).
DEFAULT_BIND = "*:80"


@dataclass(frozen=True)
class Server:
    name: str
    address: str
    port: int


def host_address(host: Host, node: dict[str, str] | None) -> str:
    """Where the front reaches a host's router: a swarm node's address, else the engine's host
    name, else (a local engine) this machine."""
    if node and node.get("address"):
        return node["address"]
    endpoint = host.endpoint()
    if endpoint is None or endpoint.startswith("unix://"):
        return "127.0.0.1"
    return urlsplit(endpoint).hostname or "127.0.0.1"


def render(env: Environment, servers: list[Server], bind: str) -> str:
    """The front's whole HAProxy config, listening on ``bind`` (ADDRESS:PORT)."""
    checks = []
    for service in env.services.values():
        checks += [
            "    http-check connect",
            f"    http-check send meth GET uri {service.health.path} ver HTTP/1.1 "
            f"hdr Host conveyor-front hdr {SERVICE_HEADER} {service.name}",
            "    http-check expect status 200",
        ]
    lines = [
        f"# The front load balancer of conveyor environment {env.name}: written by",
        f"# `conveyor front --env {env.name}`; write it again when the hosts change.",
        "global",
        "    maxconn 4096",
        "",
        "defaults",
        "    mode http",
        *HTTP_TIMEOUTS,
        "    retries 3",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response 503",
        "    option idle-close-on-response",
        "",
        f"frontend {env.name}",
        f"    bind {bind}",
        # A 503 may come from an application that did act: retry it only where that is safe.
        "    http-request disable-l7-retry unless { method GET HEAD OPTIONS }",
        "    default_backend routers",
        "",
        "backend routers",
        "    balance roundrobin",
        "    option httpchk",
        *checks,
        "    default-server check inter 1s fall 2 rise 2",
        *(f"    server {s.name} {s.address}:{s.port}" for s in servers),
        "",
    ]
    return "\n".join(lines)


def front_config(config: Config, env_name: str, *, bind: str | None = None) -> str:
    """The front's config for ``env_name``, with every host's address read from its engine
    (a swarm node's from its manager)."""
    from conveyor.session import Session  # noqa: PLC0415 - the docker SDK only when asked

    session = Session(config, env_name)
    servers = [
        Server(target.name, host_address(target.host, target.node()), target.ports.public)
        for target in session.targets
    ]
    return render(session.env, servers, bind or DEFAULT_BIND)
