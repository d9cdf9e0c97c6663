"""deploy.toml: environments, hosts, services, health checks and build settings.

The file is validated when it is loaded. Every error names the key path, what is allowed and,
for a typo, the closest known name: ``deploy.toml [environments.staging] 'helth': unknown key
(did you mean 'health'?)``. Secrets are references (``env:NAME`` or ``file:PATH``), never values.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from conveyor.errors import ConfigError, UsageError

DEFAULT_FILE = "deploy.toml"
COLORS = ("blue", "green")
SECRET_SCHEMES = ("env", "file")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")

T = TypeVar("T")
_MISSING: Any = object()


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` when a close match exists, else an empty string.

    An abbreviation wins over spelling: 'prod' means 'production', not 'pr'.
    """
    options = list(choices)
    longer = [c for c in options if c.startswith(word) and c != word]
    if word and len(longer) == 1:
        return f" (did you mean '{longer[0]}'?)"
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class TomlTable:
    """A TOML table being validated: remembers its key path and which keys were read.

    Every config conveyor reads (deploy.toml, ``[tool.conveyor.scan]``) goes through this, so
    errors look alike: ``FILE [key.path]: what is wrong (allowed: …) (did you mean …?)``.
    """

    def __init__(self, data: Any, path: str, source: str) -> None:
        if not isinstance(data, Mapping):
            where = f" [{path}]" if path else ""
            raise ConfigError(f"{source}{where}: expected a table, got {type(data).__name__}")
        self.data: Mapping[str, Any] = data
        self.path = path
        self.source = source
        self._read: set[str] = set()

    def fail(self, key: str | None, message: str) -> ConfigError:
        where = f"{self.path}.{key}" if key and self.path else (key or self.path)
        return ConfigError(f"{self.source} [{where}]: {message}")

    def value(self, key: str, default: Any) -> Any:
        """The raw value (marked as read), ``default`` when absent."""
        self._read.add(key)
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise self.fail(key, "required key is missing")
        return default

    def string(
        self, key: str, default: Any = _MISSING, choices: Iterable[str] | None = None
    ) -> Any:
        value = self.value(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {type(value).__name__}")
        if choices is not None:
            allowed = list(choices)
            if value not in allowed:
                raise self.fail(
                    key,
                    f"'{value}' is not allowed (allowed: {', '.join(allowed)})"
                    + did_you_mean(value, allowed),
                )
        return value

    def integer(self, key: str, default: Any = _MISSING, minimum: int | None = None) -> Any:
        value = self.value(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer, got {type(value).__name__}")
        if minimum is not None and value < minimum:
            raise self.fail(key, f"must be at least {minimum}, got {value}")
        return value

    def number(self, key: str, default: Any = _MISSING, minimum: float | None = 0.0) -> Any:
        value = self.value(key, default)
        if value is default and default is not _MISSING:
            return float(value) if value is not None else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"expected a number, got {type(value).__name__}")
        if minimum is not None and value < minimum:
            raise self.fail(key, f"must be at least {minimum}, got {value}")
        return float(value)

    def boolean(self, key: str, default: Any = _MISSING) -> Any:
        value = self.value(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {value!r}")
        return value

    def positive(self, key: str, default: float) -> float:
        value = self.value(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.fail(key, f"expected a positive number, got {value!r}")
        return float(value)

    def string_list(self, key: str, default: list[str]) -> list[str]:
        value = self.value(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, f"expected a list of strings, got {value!r}")
        return list(value)

    def table(self, key: str, *, required: bool = False) -> TomlTable:
        value = self.value(key, _MISSING if required else {})
        if not isinstance(value, Mapping):
            raise self.fail(key, f"expected a table, got {type(value).__name__}")
        return TomlTable(value, f"{self.path}.{key}" if self.path else key, self.source)

    def tables(self, key: str) -> dict[str, TomlTable]:
        outer = self.table(key)
        result: dict[str, TomlTable] = {}
        for name in outer.data:
            result[name] = outer.table(name)
        outer.finish()
        return result

    def strings(self, key: str, default: Any = _MISSING) -> dict[str, str]:
        table = self.table(key) if key in self.data or default is _MISSING else None
        if table is None:
            return dict(default)
        out: dict[str, str] = {}
        for name, value in table.data.items():
            if not isinstance(value, str):
                raise table.fail(name, f"expected a string, got {type(value).__name__}")
            out[name] = value
        return out

    def finish(self) -> None:
        unknown = [key for key in self.data if key not in self._read]
        if unknown:
            key = unknown[0]
            allowed = sorted(self._read)
            raise self.fail(
                key,
                f"unknown key (allowed: {', '.join(allowed)})" + did_you_mean(key, allowed),
            )


SECRET_DELIVERY = ("env", "file")
SECRETS_DIR = "/run/secrets"
_SECRET_FILE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


@dataclass(frozen=True)
class SecretRef:
    """Where a secret comes from. The value itself is read only when a container is created
    (``as = "env"``) or delivered into it after start (``as = "file"``)."""

    name: str
    scheme: str
    target: str
    # "env": the value is an environment variable of the container (shown by docker inspect).
    # "file": a read-only file on a tmpfs, named by the NAME_FILE variable (never inspected).
    delivery: str = "env"

    @property
    def file_path(self) -> str:
        return f"{SECRETS_DIR}/{self.name}"

    @property
    def file_variable(self) -> str:
        return f"{self.name}_FILE"

    def resolve(self) -> str:
        if self.scheme == "env":
            value = os.environ.get(self.target)
            if value is None:
                raise ConfigError(
                    f"secret {self.name}: environment variable {self.target} is not set — "
                    f"export it before deploying"
                )
            return value
        path = Path(self.target).expanduser()
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"secret {self.name}: cannot read {path} ({exc.strerror}) — create the file "
                f"or change the reference"
            ) from None


@dataclass(frozen=True)
class HealthCheck:
    path: str = "/readyz"
    interval: float = 1.0
    timeout: float = 5.0
    retries: int = 3
    start_period: float = 0.0


@dataclass(frozen=True)
class Service:
    name: str
    image: str
    ports: dict[str, int]
    route: str
    health: HealthCheck
    env: dict[str, str] = field(default_factory=dict)
    secrets: tuple[SecretRef, ...] = ()
    volumes: dict[str, str] = field(default_factory=dict)


HOST_ACCESS = ("auto", "direct", "exec")


@dataclass(frozen=True)
class Host:
    name: str
    docker: str
    port_offset: int = 0
    # How conveyor reaches the host's loopback ports (health checks, the router's admin API):
    # "direct" from this machine, "exec" from inside the router container; "auto" picks
    # direct for local engines and exec for remote ones.
    access: str = "auto"
    # With docker = "env:NAME": the endpoint to use when NAME is unset ("local" or a URL),
    # so one deploy.toml serves a laptop (local engine) and CI (a real host from a secret).
    fallback: str | None = None

    def reaches_directly(self) -> bool:
        if self.access != "auto":
            return self.access == "direct"
        endpoint = self.endpoint()
        return endpoint is None or endpoint.startswith(
            ("unix://", "tcp://127.0.0.1", "tcp://localhost")
        )

    def endpoint(self) -> str | None:
        """The Docker endpoint URL; None means the local default (DOCKER_HOST or the socket)."""
        if self.docker == "local":
            return None
        if self.docker.startswith("env:"):
            var = self.docker[4:]
            value = os.environ.get(var)
            if value:
                return value
            if self.fallback is not None:
                return None if self.fallback == "local" else self.fallback
            raise ConfigError(
                f"host {self.name}: environment variable {var} (its Docker endpoint) is not set"
            )
        return self.docker


@dataclass(frozen=True)
class Router:
    bind: str = "127.0.0.1"
    port: int = 8080
    preview_port: int = 8081
    admin_port: int = 8082


@dataclass(frozen=True)
class Timeouts:
    ready: float = 60.0
    verify: float = 5.0
    drain: float = 2.0
    stop: float = 10.0
    lock_stale: float = 30.0


MAX_APPROVAL_HOURS = 8760


@dataclass(frozen=True)
class Approval:
    required: bool = False
    allow_self_approval: bool = False
    expires_hours: float = 24.0


# What a deploy tells people about (conveyor.notify sends them through apprise).
NOTIFY_EVENTS = ("started", "succeeded", "failed", "rolled-back", "approval-needed")


@dataclass(frozen=True)
class Notifications:
    """Where deploy notifications go. An apprise URL carries its token, so the file only
    names where to read each one (``env:NAME`` or ``file:PATH``), never the URL itself."""

    urls: tuple[SecretRef, ...] = ()
    events: tuple[str, ...] = NOTIFY_EVENTS
    timeout: float = 10.0


@dataclass(frozen=True)
class Environment:
    name: str
    hosts: tuple[Host, ...]
    services: dict[str, Service]
    router: Router
    timeouts: Timeouts
    approval: Approval
    keep_releases: int = 3
    max_error_rate: float = 0.0
    # Refuse a release whose image scan is missing (a failed scan is always refused).
    require_scan: bool = False
    # Extra notification URLs (references) for this environment only, beside [notifications].
    notify: tuple[SecretRef, ...] = ()
    # Where releases must come from: a deploy here takes only a release that succeeded there
    # and was not rolled back (the same checks `promote` runs).
    promote_from: str | None = None

    @property
    def gated(self) -> bool:
        """Whether a release enters only through the gate (conveyor.promotion.admit)."""
        return bool(self.promote_from or self.approval.required or self.require_scan)


@dataclass(frozen=True)
class ImageSpec:
    name: str
    dockerfile: str
    kind: str
    title: str


@dataclass(frozen=True)
class BuildSettings:
    base_image: str = "python:3.11-slim-bookworm"
    offline_base_image: str = "localhost/conveyor-base:bookworm"
    dist_dir: str = "dist"


@dataclass(frozen=True)
class RegistrySettings:
    url: str = ""
    prefix: str = "conveyor"


@dataclass(frozen=True)
class ArtifactSettings:
    store: str = "local"
    path: str = ".conveyor/artifacts"
    keep: int = 10


@dataclass(frozen=True)
class Config:
    path: Path
    project: str
    source_url: str
    build: BuildSettings
    registry: RegistrySettings
    artifacts: ArtifactSettings
    images: dict[str, ImageSpec]
    environments: dict[str, Environment]
    notifications: Notifications = field(default_factory=Notifications)

    @property
    def root(self) -> Path:
        return self.path.parent

    def environment(self, name: str) -> Environment:
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments)) or "none"
            raise UsageError(
                f"{self.path.name}: unknown environment '{name}' (known: {known})"
                + did_you_mean(name, self.environments)
            ) from None

    def registry_url(self) -> str:
        """The registry to push to: CONVEYOR_REGISTRY wins over the file, so CI can point
        the same config at its own registry."""
        return (os.environ.get("CONVEYOR_REGISTRY") or self.registry.url).rstrip("/")


def _load_secrets(table: TomlTable) -> tuple[SecretRef, ...]:
    """``secrets = { NAME = "env:VAR", OTHER = { from = "file:PATH", as = "file" } }``."""
    secrets_table = table.table("secrets")
    env = table.data.get("env")
    declared_env = set(env) if isinstance(env, Mapping) else set()
    refs = []
    for name in list(secrets_table.data):
        value = secrets_table.value(name, None)
        delivery = "env"
        if isinstance(value, Mapping):
            entry = secrets_table.table(name)
            value = entry.string("from", None)
            delivery = entry.string("as", "env", choices=SECRET_DELIVERY)
            entry.finish()  # a typo ('frm') is named before the key it misses
            if value is None:
                raise entry.fail("from", "required key is missing (e.g. from = 'env:VARIABLE')")
            key = f"{name}.from"
        elif isinstance(value, str):
            key = name
        else:
            raise secrets_table.fail(
                name,
                "expected a reference 'env:VARIABLE' or 'file:PATH', or a table "
                "{ from = 'env:VARIABLE', as = 'file' }",
            )
        scheme, sep, target = value.partition(":")
        if not sep or scheme not in SECRET_SCHEMES or not target:
            # Never echo the value: it may be the secret itself pasted by mistake.
            raise secrets_table.fail(
                key, "must be a reference 'env:VARIABLE' or 'file:PATH', never the secret itself"
            )
        if delivery == "file":
            if not _SECRET_FILE_NAME.match(name):
                raise secrets_table.fail(
                    name,
                    "a secret delivered as a file needs a variable-like name (letters, digits, "
                    "'_'): it names the file and the NAME_FILE variable",
                )
            clash = declared_env & {name, f"{name}_FILE"}
            if clash:
                raise secrets_table.fail(
                    name,
                    f"also set in env.{sorted(clash)[0]}: a file secret reaches the service as "
                    f"{name}_FILE={SECRETS_DIR}/{name}, so remove it from env",
                )
        refs.append(SecretRef(name=name, scheme=scheme, target=target, delivery=delivery))
    secrets_table.finish()
    return tuple(refs)


def _load_references(table: TomlTable, key: str) -> tuple[SecretRef, ...]:
    """A list of ``env:NAME`` / ``file:PATH`` references, e.g. notification URLs."""
    raw = table.value(key, [])
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise table.fail(key, "expected an array of strings like 'env:VARIABLE'")
    refs = []
    for index, value in enumerate(raw):
        scheme, sep, target = value.partition(":")
        if not sep or scheme not in SECRET_SCHEMES or not target or "/" in scheme:
            # Never echo the value: an apprise URL carries its token.
            raise table.fail(
                f"{key}[{index}]",
                "must be a reference 'env:VARIABLE' or 'file:PATH' — a notification URL "
                "holds its token, so keep it in the environment, never in this file",
            )
        refs.append(SecretRef(name=f"{key}[{index}]", scheme=scheme, target=target))
    return tuple(refs)


def _load_notifications(root: TomlTable) -> Notifications:
    table = root.table("notifications")
    events = table.value("events", list(NOTIFY_EVENTS))
    if not isinstance(events, list):
        raise table.fail("events", "expected an array of event names")
    for event in events:
        if event not in NOTIFY_EVENTS:
            raise table.fail(
                "events",
                f"unknown event {event!r} (allowed: {', '.join(NOTIFY_EVENTS)})"
                + did_you_mean(str(event), NOTIFY_EVENTS),
            )
    notifications = Notifications(
        urls=_load_references(table, "urls"),
        events=tuple(events),
        timeout=table.number("timeout", 10.0),
    )
    table.finish()
    return notifications


def _load_service(name: str, table: TomlTable, images: Mapping[str, ImageSpec]) -> Service:
    image = table.string("image", name)
    if image not in images:
        raise table.fail(
            "image",
            f"unknown image '{image}' (known: {', '.join(sorted(images))})"
            + did_you_mean(image, images),
        )
    ports_table = table.table("ports", required=True)
    ports = {color: ports_table.integer(color, minimum=1) for color in COLORS}
    ports_table.finish()
    for color, port in ports.items():
        if port > 65535:
            raise ports_table.fail(color, f"port {port} is above 65535")
    if ports["blue"] == ports["green"]:
        raise ports_table.fail(None, "blue and green need different ports")
    route = table.string("route", "/")
    if not route.startswith("/"):
        raise table.fail("route", f"must start with '/', got '{route}'")
    health_table = table.table("health")
    health = HealthCheck(
        path=health_table.string("path", "/readyz"),
        interval=health_table.number("interval", 1.0),
        timeout=health_table.number("timeout", 5.0),
        retries=health_table.integer("retries", 3, minimum=1),
        start_period=health_table.number("start_period", 0.0),
    )
    health_table.finish()
    service = Service(
        name=name,
        image=image,
        ports=ports,
        route=route,
        health=health,
        env=table.strings("env", {}),
        secrets=_load_secrets(table),
        volumes=table.strings("volumes", {}),
    )
    table.finish()
    return service


def _load_environment(name: str, table: TomlTable, images: Mapping[str, ImageSpec]) -> Environment:
    if not _NAME.match(name):
        raise table.fail(None, "environment names are lower-case letters, digits and '-'")
    hosts_raw = table.value("hosts", [{"name": "local", "docker": "local"}])
    if not isinstance(hosts_raw, list) or not hosts_raw:
        raise table.fail("hosts", "expected a non-empty array of tables")
    hosts = []
    for index, raw in enumerate(hosts_raw):
        if not isinstance(raw, Mapping):
            raise table.fail(f"hosts[{index}]", "expected a table")
        host_table = TomlTable(raw, f"{table.path}.hosts[{index}]", table.source)
        docker = host_table.string("docker", "local")
        if docker != "local" and not docker.startswith(("unix://", "tcp://", "ssh://", "env:")):
            raise host_table.fail(
                "docker", "expected 'local', 'unix://…', 'tcp://…', 'ssh://…' or 'env:VARIABLE'"
            )
        hosts.append(
            Host(
                name=host_table.string("name", f"host{index + 1}"),
                docker=docker,
                port_offset=host_table.integer("port_offset", 0, minimum=0),
                access=host_table.string("access", "auto", choices=HOST_ACCESS),
                fallback=host_table.string("fallback", None),
            )
        )
        host_table.finish()
    if len({h.name for h in hosts}) != len(hosts):
        raise table.fail("hosts", "host names must be unique")

    services = {
        sname: _load_service(sname, stable, images)
        for sname, stable in table.tables("services").items()
    }
    if not services:
        raise table.fail("services", "an environment needs at least one service")
    routes = [s.route for s in services.values()]
    if len(set(routes)) != len(routes):
        raise table.fail("services", "two services share a route")

    router_table = table.table("router")
    router = Router(
        bind=router_table.string("bind", "127.0.0.1"),
        port=router_table.integer("port", 8080, minimum=1),
        preview_port=router_table.integer("preview_port", 8081, minimum=1),
        admin_port=router_table.integer("admin_port", 8082, minimum=1),
    )
    router_table.finish()

    timeouts_table = table.table("timeouts")
    timeouts = Timeouts(
        ready=timeouts_table.number("ready", 60.0),
        verify=timeouts_table.number("verify", 5.0),
        drain=timeouts_table.number("drain", 2.0),
        stop=timeouts_table.number("stop", 10.0),
        lock_stale=timeouts_table.number("lock_stale", 30.0),
    )
    timeouts_table.finish()

    approval_table = table.table("approval")
    approval = Approval(
        required=approval_table.boolean("required", False),
        allow_self_approval=approval_table.boolean("allow_self_approval", False),
        expires_hours=approval_table.number("expires_hours", 24.0, minimum=None),
    )
    if not 0 < approval.expires_hours <= MAX_APPROVAL_HOURS:
        # 0 is a gate that can never pass; 1e9 is an approval that never expires.
        raise approval_table.fail(
            "expires_hours",
            f"must be more than 0 and at most {MAX_APPROVAL_HOURS} (a year), "
            f"got {approval.expires_hours:g}",
        )
    approval_table.finish()

    env = Environment(
        name=name,
        hosts=tuple(hosts),
        services=services,
        router=router,
        timeouts=timeouts,
        approval=approval,
        keep_releases=table.integer("keep_releases", 3, minimum=1),
        max_error_rate=table.number("max_error_rate", 0.0),
        require_scan=table.boolean("require_scan", False),
        notify=_load_references(table, "notify"),
        promote_from=table.string("promote_from", None),
    )
    table.finish()
    _check_ports(env, table)
    return env


def _check_ports(env: Environment, table: TomlTable) -> None:
    """Host networking shares one port space per host: a clash would only show at deploy time."""
    used: dict[int, str] = {}
    for what, port in [
        ("router.port", env.router.port),
        ("router.preview_port", env.router.preview_port),
        ("router.admin_port", env.router.admin_port),
    ] + [
        (f"services.{s.name}.ports.{color}", port)
        for s in env.services.values()
        for color, port in s.ports.items()
    ]:
        if port in used:
            raise table.fail(what, f"port {port} is also used by {used[port]}")
        used[port] = what


def _check_promote_from(
    env: Environment, environments: Mapping[str, Environment], table: TomlTable
) -> None:
    source = env.promote_from
    if source is None:
        return
    if source == env.name:
        raise table.fail("promote_from", f"'{source}' is this environment itself")
    if source not in environments:
        others = sorted(n for n in environments if n != env.name)
        raise table.fail(
            "promote_from",
            f"unknown environment '{source}' (known: {', '.join(others) or 'none'})"
            + did_you_mean(source, others),
        )
    missing = sorted(set(env.services) - set(environments[source].services))
    if missing:
        raise table.fail(
            "promote_from",
            f"'{source}' does not run {', '.join(missing)}, so no release of it can come "
            f"from there",
        )


def engine_key(host: Host) -> str:
    """Which engine a host names, as far as the file and the environment tell at load time.

    ``local`` and a fallback to it are this machine's default engine; ``env:NAME`` is what
    NAME holds now. Two hosts with one key share one host network, hence one port space.
    """
    docker = host.docker
    if docker.startswith("env:"):
        docker = os.environ.get(docker[4:]) or host.fallback or f"unset {docker}"
    if docker == "local":
        docker = os.environ.get("DOCKER_HOST") or "local"
    return docker.rstrip("/")


def _host_ports(env: Environment, host: Host) -> dict[int, str]:
    off = host.port_offset
    used = {
        env.router.port + off: "router.port",
        env.router.preview_port + off: "router.preview_port",
        env.router.admin_port + off: "router.admin_port",
    }
    for service in env.services.values():
        for color, port in service.ports.items():
            used[port + off] = f"services.{service.name}.ports.{color}"
    return used


def _check_shared_engines(environments: Mapping[str, Environment], source: str) -> None:
    """Environments whose hosts share an engine share its ports: refuse a clash at load."""
    seen: dict[tuple[str, int], tuple[str, str, str]] = {}
    for env in environments.values():
        for host in env.hosts:
            key = engine_key(host)
            for port, what in sorted(_host_ports(env, host).items()):
                other = seen.get((key, port))
                if other is not None and other[0] != env.name:
                    raise ConfigError(
                        f"{source} [environments.{env.name}.{what}]: port {port} is also "
                        f"[environments.{other[0]}.{other[1]}], and hosts {other[2]} and "
                        f"{host.name} share one engine ({key}) — give one of them other ports "
                        f"(or a port_offset)"
                    )
                seen[(key, port)] = (env.name, what, host.name)


def unresolved_secrets(env: Environment) -> list[str]:
    """Every secret reference of ``env`` that does not resolve now, each said without its
    value (a value is read, never kept or shown)."""
    problems = []
    for service in env.services.values():
        for ref in service.secrets:
            try:
                ref.resolve()
            except ConfigError as exc:
                why = str(exc).removeprefix(f"secret {ref.name}: ").split(" — ", 1)[0]
                problems.append(f"{service.name} {ref.name} ({ref.scheme}:{ref.target}: {why})")
    return problems


def require_secrets(env: Environment) -> None:
    """Raise one ConfigError naming every secret of ``env`` that does not resolve."""
    problems = unresolved_secrets(env)
    if problems:
        raise ConfigError(
            f"{env.name}: secret reference(s) do not resolve: {'; '.join(problems)} — set "
            f"them (or fix deploy.toml) before deploying; nothing was changed"
        )


def _load_images(root: TomlTable) -> dict[str, ImageSpec]:
    images = {}
    for name, table in root.tables("images").items():
        images[name] = ImageSpec(
            name=name,
            dockerfile=table.string("dockerfile"),
            kind=table.string("kind", choices=("python-service", "static-site", "router")),
            title=table.string("title", name),
        )
        table.finish()
    return images


def parse(data: Mapping[str, Any], path: Path) -> Config:
    """Validate a parsed deploy.toml."""
    root = TomlTable(data, "", path.name)
    project = root.table("project")
    name = project.string("name", "conveyor")
    source_url = project.string("source", "")
    project.finish()

    build_table = root.table("build")
    build = BuildSettings(
        base_image=build_table.string("base_image", BuildSettings.base_image),
        offline_base_image=build_table.string(
            "offline_base_image", BuildSettings.offline_base_image
        ),
        dist_dir=build_table.string("dist_dir", BuildSettings.dist_dir),
    )
    build_table.finish()

    registry_table = root.table("registry")
    registry = RegistrySettings(
        url=registry_table.string("url", ""),
        prefix=registry_table.string("prefix", "conveyor"),
    )
    registry_table.finish()

    artifacts_table = root.table("artifacts")
    artifacts = ArtifactSettings(
        store=artifacts_table.string("store", "local", choices=("local", "registry")),
        path=artifacts_table.string("path", ArtifactSettings.path),
        keep=artifacts_table.integer("keep", ArtifactSettings.keep, minimum=1),
    )
    artifacts_table.finish()

    images = _load_images(root)
    notifications = _load_notifications(root)
    env_tables = root.tables("environments")
    environments = {
        env_name: _load_environment(env_name, table, images)
        for env_name, table in env_tables.items()
    }
    root.finish()
    for env_name, env in environments.items():
        _check_promote_from(env, environments, env_tables[env_name])
    _check_shared_engines(environments, path.name)
    return Config(
        path=path,
        project=name,
        source_url=source_url,
        build=build,
        registry=registry,
        artifacts=artifacts,
        images=images,
        environments=environments,
        notifications=notifications,
    )


def find_config(start: Path | None = None) -> Path:
    """deploy.toml from CONVEYOR_CONFIG, else the nearest one at or above ``start``."""
    explicit = os.environ.get("CONVEYOR_CONFIG")
    if explicit:
        return Path(explicit)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / DEFAULT_FILE
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no {DEFAULT_FILE} found in {here} or above — run from the project or set CONVEYOR_CONFIG"
    )


def load(path: Path | None = None) -> Config:
    """Read and validate deploy.toml."""
    path = path or find_config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: not valid TOML ({exc})") from None
    return parse(data, path)
