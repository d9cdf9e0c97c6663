"""deploy.toml: environments, hosts, services, health checks and build settings.

The file is validated when it is loaded. Every error names the key path, what is allowed and,
for a typo, the closest known name: ``deploy.toml [environments.staging] 'helth': unknown key
(did you mean 'health'?)``. Secrets are references (``env:NAME`` or ``file:PATH``), never values.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import string
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor import placement, tomltable
from conveyor.errors import ConfigError, UsageError
from conveyor.terms import COLORS, ENGINES, STRATEGIES, Engine, Strategy
from conveyor.tomltable import TomlTable, did_you_mean

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

DEFAULT_FILE = "deploy.toml"
SECRET_SCHEMES = ("env", "file")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")

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

    @classmethod
    def parse(cls, name: str, reference: str, delivery: str = "env") -> SecretRef | None:
        """The reference ``env:VARIABLE`` or ``file:PATH`` named ``name``; None when
        ``reference`` is not one (say so without echoing it: it may be the secret itself)."""
        scheme, sep, target = reference.partition(":")
        if not sep or scheme not in SECRET_SCHEMES or not target:
            return None
        return cls(name=name, scheme=scheme, target=target, delivery=delivery)

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
    # How long Docker ignores failed checks while the service starts; unset, the environment's
    # ready timeout, so a slow start on a busy host is judged by that timeout, not by 3 checks.
    start_period: float | None = None


BACKUP_KINDS = ("sqlite", "postgres", "none")
DEFAULT_PGTOOLS_IMAGE = "localhost/conveyor-pgtools:15"


@dataclass(frozen=True)
class Migrations:
    """How a service's schema changes run: the image's migration command (declared once, on
    ``[images.X] migrate``) with this environment's limits, and the backup taken first.

    ``backup`` is ``sqlite:/path/in/the/container.db``, ``postgres:VARIABLE`` (the service's
    env or secret holding the database URL) or ``none`` — said explicitly, never guessed.
    """

    command: str = ""
    backup: str = ""
    timeout: float = 300.0
    lock_timeout: float = 2.0
    statement_timeout: float = 0.0
    lock_retries: int = 3
    # pg_dump must match the server's major version: scripts/setup builds this one offline.
    backup_image: str = DEFAULT_PGTOOLS_IMAGE

    @property
    def backup_kind(self) -> str:
        return self.backup.partition(":")[0]

    @property
    def backup_target(self) -> str:
        """The SQLite file's path in the container, or the variable holding the URL."""
        return self.backup.partition(":")[2]

    def environment(self) -> dict[str, str]:
        """The protocol's settings, as the migration command reads them."""
        # No statement may outlive the run's own time limit: a one-off killed on timeout
        # would leave the server running it (and holding its locks).
        statement = self.statement_timeout or self.timeout
        return {
            "MIGRATE_LOCK_TIMEOUT": f"{self.lock_timeout:g}",
            "MIGRATE_STATEMENT_TIMEOUT": f"{min(statement, self.timeout):g}",
            "MIGRATE_LOCK_RETRIES": str(self.lock_retries),
        }


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
    # Present when the service's image declares a migration command.
    migrations: Migrations | None = None
    # The service's image has feature flags: its containers get the environment's flag file.
    flags: bool = False


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
NOTIFY_EVENTS = (
    "started",
    "succeeded",
    "failed",
    "rolled-back",
    "approval-needed",
    "canary-window",
    "canary-aborted",
    "flag-killed",
)


@dataclass(frozen=True)
class Notifications:
    """Where deploy notifications go. An apprise URL carries its token, so the file only
    names where to read each one (``env:NAME`` or ``file:PATH``), never the URL itself."""

    urls: tuple[SecretRef, ...] = ()
    events: tuple[str, ...] = NOTIFY_EVENTS
    timeout: float = 10.0


@dataclass(frozen=True)
class Analysis:
    """How a canary step is judged, from the router's own counters: one table, ``[analysis]``,
    for canary steps and flag ramps alike (separate from the verify window's
    ``max_error_rate``). A window passes only on enough traffic; it fails at once on clear
    evidence."""

    # Fewer requests than this on the canary (or the stable color) in a window: inconclusive.
    min_requests: int = 50
    # This many inconclusive windows in one rollout abort it: too little traffic never passes.
    max_inconclusive: int = 3
    # Fail when the canary's error rate exceeds the stable color's by more than this.
    max_error_rate_increase: float = 0.01
    # Fail when the canary's mean response time is this many times the stable color's...
    max_latency_ratio: float = 1.5
    # ...and at least this many milliseconds slower (1 ms against 2 ms is noise, not a fault).
    latency_slack_ms: float = 25.0
    # Fail between samples, before the window ends, once the canary has this many errors and a
    # one-sided binomial test puts the chance that it is no worse than stable below this.
    fail_fast_errors: int = 10
    fail_fast_p: float = 0.001
    # Seconds between two reads of the routers' counters.
    sample: float = 1.0


@dataclass(frozen=True)
class Canary:
    """``strategy = "canary"``: the new color takes these percentages of traffic in turn, each
    for ``interval`` seconds of analysis; the last step (100) is the switch and verify window."""

    steps: tuple[int, ...] = (5, 25, 50, 100)
    interval: float = 30.0
    # A cookie keeps a user on the color they first got for the whole rollout.
    sticky: bool = False
    # Requests per second of synthetic traffic (health path through the public route) for an
    # environment with too little real traffic; 0 = none. Verdicts say when it ran.
    synthetic: float = 0.0


@dataclass(frozen=True)
class Environment:
    name: str
    hosts: tuple[Host, ...]
    services: dict[str, Service]
    router: Router
    timeouts: Timeouts
    approval: Approval
    keep_releases: int = 3
    # Seconds the previous release keeps running, out of rotation, after a verified deploy: a
    # rollback inside that window is a switch, with no container to start. 0: stop it at once.
    keep_warm: float = 600.0
    max_error_rate: float = 0.0
    # Refuse a release whose image scan is missing (a failed scan is always refused).
    require_scan: bool = False
    # Extra notification URLs (references) for this environment only, beside [notifications].
    notify: tuple[SecretRef, ...] = ()
    # Where releases must come from: a deploy here takes only a release that succeeded there
    # and was not rolled back (the same checks `promote` runs).
    promote_from: str | None = None
    # "blue-green" (switch at once, then verify) or "canary" (weighted steps, each analysed).
    strategy: Strategy = "blue-green"
    canary: Canary = field(default_factory=Canary)
    analysis: Analysis = field(default_factory=Analysis)
    # "swarm": each color is a global Swarm service; the first host is the manager conveyor
    # talks to (services, ledger, lock) and every host is a node (its router, its probes).
    engine: Engine = "docker"
    # A swarm's: the Swarm constraints a node meets to run this environment (conveyor.placement).
    placement: tuple[str, ...] = ()
    # A swarm's: how to reach a node that runs the environment and that hosts does not list (one
    # that joined): its docker endpoint names the node's {address}. None: such a node is refused.
    other_nodes: Host | None = None

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
    # The app's migration command (conveyor's protocol: plan, expand, contract, current, sql);
    # empty when the image has no database schema to change.
    migrate: str = ""
    # The app's feature-flag definitions (flagd's format), relative to deploy.toml: validated at
    # build, versioned with each release, and each environment's current state mounted
    # read-only into the image's containers. Empty: the image has no flags.
    flags: str = ""


@dataclass(frozen=True)
class BuildSettings:
    base_image: str = "python:3.11-slim-bookworm"
    offline_base_image: str = "localhost/conveyor-base:bookworm"
    dist_dir: str = "dist"


@dataclass(frozen=True)
class RegistrySettings:
    url: str = ""
    prefix: str = "conveyor"


ARTIFACT_STORES = ("local", "registry")


@dataclass(frozen=True)
class ArtifactSettings:
    store: str = "local"  # one of ARTIFACT_STORES
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


Settings = TypeVar("Settings", bound="DataclassInstance")


def _read_settings(
    table: TomlTable,
    cls: type[Settings],
    *,
    minimum: Mapping[str, int | None] | None = None,
    choices: Mapping[str, tuple[str, ...]] | None = None,
) -> Settings:
    """One key per field of the dataclass ``cls``, typed like the field and defaulting to the
    field's default: a default is written once, on the dataclass. Numbers are at least 0
    unless ``minimum`` says otherwise; the caller finishes the table."""
    minimum = minimum or {}
    choices = choices or {}
    values: dict[str, Any] = {}
    for spec in fields(cls):
        key = spec.name
        default = tomltable.MISSING if spec.default is MISSING else spec.default
        if spec.type == "bool":
            values[key] = table.boolean(key, default)
        elif spec.type == "int":
            values[key] = table.integer(key, default, minimum=minimum.get(key))
        elif spec.type in ("float", "float | None"):
            values[key] = table.number(key, default, minimum=minimum.get(key, 0.0))
        elif spec.type == "str":
            values[key] = table.string(key, default, choices=choices.get(key))
        else:
            raise TypeError(f"{cls.__name__}.{key}: no TOML reader for {spec.type}")
    return cls(**values)


def _section(
    table: TomlTable,
    key: str,
    cls: type[Settings],
    *,
    minimum: Mapping[str, int | None] | None = None,
    choices: Mapping[str, tuple[str, ...]] | None = None,
) -> Settings:
    """The table ``key`` of ``table`` read as the settings dataclass ``cls``, nothing else."""
    section = table.table(key)
    settings = _read_settings(section, cls, minimum=minimum, choices=choices)
    section.finish()
    return settings


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
                raise entry.error("from", "required key is missing (e.g. from = 'env:VARIABLE')")
            key = f"{name}.from"
        elif isinstance(value, str):
            key = name
        else:
            raise secrets_table.error(
                name,
                "expected a reference 'env:VARIABLE' or 'file:PATH', or a table "
                "{ from = 'env:VARIABLE', as = 'file' }",
            )
        ref = SecretRef.parse(name, value, delivery)
        if ref is None:
            # Never echo the value: it may be the secret itself pasted by mistake.
            raise secrets_table.error(
                key, "must be a reference 'env:VARIABLE' or 'file:PATH', never the secret itself"
            )
        if delivery == "file":
            _check_file_secret(name, declared_env, secrets_table)
        refs.append(ref)
    secrets_table.finish()
    return tuple(refs)


def _check_file_secret(name: str, declared_env: set[str], secrets_table: TomlTable) -> None:
    if not _SECRET_FILE_NAME.match(name):
        raise secrets_table.error(
            name,
            "a secret delivered as a file needs a variable-like name (letters, digits, "
            "'_'): it names the file and the NAME_FILE variable",
        )
    clash = declared_env & {name, f"{name}_FILE"}
    if clash:
        raise secrets_table.error(
            name,
            f"also set in env.{sorted(clash)[0]}: a file secret reaches the service as "
            f"{name}_FILE={SECRETS_DIR}/{name}, so remove it from env",
        )


def _load_references(table: TomlTable, key: str) -> tuple[SecretRef, ...]:
    """A list of ``env:NAME`` / ``file:PATH`` references, e.g. notification URLs."""
    raw = table.value(key, [])
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise table.error(key, "expected an array of strings like 'env:VARIABLE'")
    refs = []
    for index, value in enumerate(raw):
        ref = SecretRef.parse(f"{key}[{index}]", value)
        if ref is None:
            # Never echo the value: an apprise URL carries its token.
            raise table.error(
                f"{key}[{index}]",
                "must be a reference 'env:VARIABLE' or 'file:PATH' — a notification URL "
                "holds its token, so keep it in the environment, never in this file",
            )
        refs.append(ref)
    return tuple(refs)


def _load_notifications(root: TomlTable) -> Notifications:
    table = root.table("notifications")
    events = table.value("events", list(Notifications.events))
    if not isinstance(events, list):
        raise table.error("events", "expected an array of event names")
    for event in events:
        if event not in NOTIFY_EVENTS:
            raise table.error(
                "events",
                f"unknown event {event!r} (allowed: {', '.join(NOTIFY_EVENTS)})"
                + did_you_mean(str(event), NOTIFY_EVENTS),
            )
    notifications = Notifications(
        urls=_load_references(table, "urls"),
        events=tuple(events),
        timeout=table.number("timeout", Notifications.timeout),
    )
    table.finish()
    return notifications


def _load_ports(table: TomlTable) -> dict[str, int]:
    ports_table = table.table("ports", required=True)
    ports = {color: ports_table.integer(color, minimum=1) for color in COLORS}
    ports_table.finish()
    for color, port in ports.items():
        if port > 65535:
            raise ports_table.error(color, f"port {port} is above 65535")
    if ports["blue"] == ports["green"]:
        raise ports_table.error(None, "blue and green need different ports")
    return ports


def _load_service(name: str, table: TomlTable, images: Mapping[str, ImageSpec]) -> Service:
    image = table.string("image", name)
    if image not in images:
        raise table.error(
            "image",
            f"unknown image '{image}' (known: {', '.join(sorted(images))})"
            + did_you_mean(image, images),
        )
    ports = _load_ports(table)
    route = table.string("route", "/")
    if not route.startswith("/"):
        raise table.error("route", f"must start with '/', got '{route}'")
    service = Service(
        name=name,
        image=image,
        ports=ports,
        route=route,
        health=_section(table, "health", HealthCheck, minimum={"retries": 1}),
        env=table.strings("env", {}),
        secrets=_load_secrets(table),
        volumes=table.strings("volumes", {}),
        migrations=_load_migrations(table, images[image]),
        flags=bool(images[image].flags),
    )
    table.finish()
    return service


def _load_migrations(table: TomlTable, image: ImageSpec) -> Migrations | None:
    """``[…services.X.migrations]``: required (for its backup) when the image migrates."""
    if not image.migrate:
        if "migrations" in table.data:
            raise table.error(
                "migrations",
                f"image '{image.name}' declares no migrate command ([images.{image.name}] migrate)",
            )
        return None
    section = table.table("migrations")
    settings = _read_settings(section, Migrations, minimum={"lock_retries": 0})
    section.finish()
    if settings.command:
        raise section.error("command", f"declared once, on [images.{image.name}] migrate")
    kind, sep, target = settings.backup.partition(":")
    if (
        kind not in BACKUP_KINDS
        or (kind != "none" and not (sep and target))
        or (kind == "none" and sep)
    ):
        raise section.error(
            "backup",
            "required: 'sqlite:/path/in/the/container.db', 'postgres:VARIABLE' (the env or "
            "secret holding the database URL) or 'none'",
        )
    if settings.timeout <= 0:
        raise section.error("timeout", "must be more than 0 seconds")
    return replace(settings, command=image.migrate)


def _load_services(table: TomlTable, images: Mapping[str, ImageSpec]) -> dict[str, Service]:
    services = {
        name: _load_service(name, service_table, images)
        for name, service_table in table.tables("services").items()
    }
    if not services:
        raise table.error("services", "an environment needs at least one service")
    routes = [s.route for s in services.values()]
    if len(set(routes)) != len(routes):
        raise table.error("services", "two services share a route")
    return services


def _load_host(index: int, raw: Any, table: TomlTable) -> Host:
    if not isinstance(raw, Mapping):
        raise table.error(f"hosts[{index}]", "expected a table")
    host_table = TomlTable(raw, f"{table.path}.hosts[{index}]", table.source)
    docker = host_table.string("docker", "local")
    if docker != "local" and not docker.startswith(("unix://", "tcp://", "ssh://", "env:")):
        raise host_table.error(
            "docker", "expected 'local', 'unix://…', 'tcp://…', 'ssh://…' or 'env:VARIABLE'"
        )
    host = Host(
        name=host_table.string("name", f"host{index + 1}"),
        docker=docker,
        port_offset=host_table.integer("port_offset", Host.port_offset, minimum=0),
        access=host_table.string("access", Host.access, choices=HOST_ACCESS),
        fallback=host_table.string("fallback", Host.fallback),
    )
    host_table.finish()
    return host


def _load_hosts(table: TomlTable) -> tuple[Host, ...]:
    raw_hosts = table.value("hosts", [{"name": "local", "docker": "local"}])
    if not isinstance(raw_hosts, list) or not raw_hosts:
        raise table.error("hosts", "expected a non-empty array of tables")
    hosts = tuple(_load_host(index, raw, table) for index, raw in enumerate(raw_hosts))
    if len({h.name for h in hosts}) != len(hosts):
        raise table.error("hosts", "host names must be unique")
    return hosts


def _load_approval(table: TomlTable) -> Approval:
    approval_table = table.table("approval")
    approval = _read_settings(approval_table, Approval, minimum={"expires_hours": None})
    if not 0 < approval.expires_hours <= MAX_APPROVAL_HOURS:
        # 0 is a gate that can never pass; 1e9 is an approval that never expires.
        raise approval_table.error(
            "expires_hours",
            f"must be more than 0 and at most {MAX_APPROVAL_HOURS} (a year), "
            f"got {approval.expires_hours:g}",
        )
    approval_table.finish()
    return approval


_ROUTER_PORTS = {"port": 1, "preview_port": 1, "admin_port": 1}


def _load_environment(
    name: str, table: TomlTable, images: Mapping[str, ImageSpec], analysis: Analysis
) -> Environment:
    """An environment, read in the order its keys appear in the docs: hosts, services, router,
    timeouts, approval, then its own keys; each default comes from its dataclass."""
    if not _NAME.match(name):
        raise table.error(None, "environment names are lower-case letters, digits and '-'")
    env = Environment(
        name=name,
        hosts=_load_hosts(table),
        services=_load_services(table, images),
        router=_section(table, "router", Router, minimum=_ROUTER_PORTS),
        timeouts=_section(table, "timeouts", Timeouts),
        approval=_load_approval(table),
        keep_releases=table.integer("keep_releases", Environment.keep_releases, minimum=1),
        keep_warm=_duration(table, "keep_warm", Environment.keep_warm),
        max_error_rate=table.number("max_error_rate", Environment.max_error_rate),
        require_scan=table.boolean("require_scan", Environment.require_scan),
        notify=_load_references(table, "notify"),
        promote_from=table.string("promote_from", Environment.promote_from),
        strategy=table.string("strategy", Environment.strategy, choices=STRATEGIES),
        canary=_load_canary(table),
        analysis=analysis,
        engine=table.string("engine", Environment.engine, choices=ENGINES),
        placement=_load_placement(table),
        other_nodes=_load_other_nodes(table),
    )
    table.finish()
    _check_ports(env, table)
    _check_swarm(env, table)
    _check_migrations(env, table)
    return env


def _load_canary(table: TomlTable) -> Canary:
    """Steps rise strictly from 1 to a last step of 100; the interval is a duration."""
    section = table.table("canary")
    raw = section.value("steps", list(Canary.steps))
    if (
        not isinstance(raw, list)
        or len(raw) < 2  # a canary needs a step below 100; [100] alone is blue-green
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw)
        or any(not 1 <= v <= 100 for v in raw)
        or any(a >= b for a, b in itertools.pairwise(raw))
        or raw[-1] != 100
    ):
        raise section.error(
            "steps",
            "expected rising percentages from 1 that end at 100, at least one below it, "
            "e.g. [5, 25, 50, 100], "
            f"got {raw!r}",
        )
    canary = Canary(
        steps=tuple(raw),
        interval=_duration(section, "interval", Canary.interval),
        sticky=section.boolean("sticky", Canary.sticky),
        synthetic=section.number("synthetic", Canary.synthetic),
    )
    section.finish()
    if canary.interval <= 0:
        raise section.error("interval", "must be more than 0 seconds")
    return canary


def _load_analysis(root: TomlTable) -> Analysis:
    analysis = _section(
        root,
        "analysis",
        Analysis,
        minimum={"min_requests": 1, "max_inconclusive": 0, "fail_fast_errors": 1},
    )
    if not 0 < analysis.fail_fast_p < 1:
        raise root.error("analysis.fail_fast_p", "must be between 0 and 1, e.g. 0.001")
    if analysis.max_latency_ratio < 1:
        raise root.error("analysis.max_latency_ratio", "must be at least 1 (canary no slower)")
    if analysis.sample <= 0:
        raise root.error("analysis.sample", "must be more than 0 seconds")
    return analysis


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(table: TomlTable, key: str, default: float) -> float:
    """Seconds, written as a number or as ``"90s"``, ``"10m"``, ``"2h"``."""
    raw = table.value(key, default)
    if isinstance(raw, bool):
        raise table.error(key, "expected seconds or a duration like '10m'")
    if isinstance(raw, int | float) and 0 <= raw <= sys.float_info.max:  # TOML ints are unbounded
        return float(raw)
    if isinstance(raw, str):
        number, unit = raw.strip()[:-1], raw.strip()[-1:]
        with contextlib.suppress(ValueError):
            if unit in _UNITS and float(number) >= 0:
                return float(number) * _UNITS[unit]
    raise table.error(
        key, f"expected seconds (>= 0) or a duration like '90s', '10m', '2h', got {raw!r}"
    )


def _check_migrations(env: Environment, table: TomlTable) -> None:
    """A backup must name something the service really has, and SQLite on two hosts would be
    two databases that one migration run cannot keep in step."""
    for service in env.services.values():
        migrations = service.migrations
        if migrations is None:
            continue
        where = f"services.{service.name}.migrations"
        if migrations.backup_kind == "sqlite" and len(env.hosts) > 1:
            raise table.error(
                where,
                f"SQLite on {len(env.hosts)} hosts is {len(env.hosts)} databases, and conveyor "
                "migrates one database per environment — use PostgreSQL, or one host",
            )
        if migrations.backup_kind == "postgres":
            variable = migrations.backup_target
            known = set(service.env) | {secret.name for secret in service.secrets}
            if variable not in known:
                raise table.error(
                    where,
                    f"backup names {variable}, which is neither an env key nor a secret of "
                    f"service {service.name} (known: {', '.join(sorted(known)) or 'none'})",
                )


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
            raise table.error(what, f"port {port} is also used by {used[port]}")
        used[port] = what


def _load_placement(table: TomlTable) -> tuple[str, ...]:
    """Swarm constraints, each checked as Swarm would read it."""
    raw = table.value("placement", [])
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise table.error(
            "placement", "expected an array of strings like 'node.labels.tier == web'"
        )
    for index, text in enumerate(raw):
        try:
            placement.parse(text)
        except ValueError as exc:
            raise table.error(f"placement[{index}]", str(exc)) from None
    return tuple(raw)


def _load_other_nodes(table: TomlTable) -> Host | None:
    """``{ docker = "ssh://deploy@{address}", access = "exec" }``: a swarm node's endpoint
    from its address, for the nodes that hosts does not list."""
    raw = table.value("other_nodes", None)
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise table.error(
            "other_nodes", 'expected a table like { docker = "ssh://deploy@{address}" }'
        )
    section = TomlTable(raw, f"{table.path}.other_nodes", table.source)
    docker = section.string("docker")
    if not docker.startswith(("unix://", "tcp://", "ssh://")):
        raise section.error(
            "docker", "expected 'unix://…', 'tcp://…' or 'ssh://…' naming {address}"
        )
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(docker) if name is not None}
    except ValueError:
        fields = {"?"}
    if fields != {"address"}:
        raise section.error(
            "docker",
            "must name the node's address as {address} and nothing else in braces, e.g. "
            "'ssh://deploy@{address}'",
        )
    host = Host(
        name="{address}",
        docker=docker,
        access=section.string("access", Host.access, choices=HOST_ACCESS),
    )
    section.finish()
    return host


def _check_swarm(env: Environment, table: TomlTable) -> None:
    """A Swarm service is one spec for every node: one set of ports, no per-host offset."""
    if env.engine != "swarm":
        for key in ("placement", "other_nodes"):
            if getattr(env, key):
                raise table.error(
                    key,
                    'is for a swarm, and this environment runs on hosts — set engine = "swarm" '
                    f"or remove {key}",
                )
        return
    for index, host in enumerate(env.hosts):
        if host.port_offset:
            raise table.error(
                f"hosts[{index}].port_offset",
                "a swarm runs one service spec on every node, so every node uses the same "
                "ports — remove port_offset",
            )


def _check_promote_from(
    env: Environment, environments: Mapping[str, Environment], table: TomlTable
) -> None:
    source = env.promote_from
    if source is None:
        return
    if source == env.name:
        raise table.error("promote_from", f"'{source}' is this environment itself")
    if source not in environments:
        others = sorted(n for n in environments if n != env.name)
        raise table.error(
            "promote_from",
            f"unknown environment '{source}' (known: {', '.join(others) or 'none'})"
            + did_you_mean(source, others),
        )
    missing = sorted(set(env.services) - set(environments[source].services))
    if missing:
        raise table.error(
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
            migrate=table.string("migrate", ImageSpec.migrate),
            flags=table.string("flags", ImageSpec.flags),
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

    build = _section(root, "build", BuildSettings)
    registry = _section(root, "registry", RegistrySettings)
    artifacts = _section(
        root, "artifacts", ArtifactSettings, minimum={"keep": 1}, choices={"store": ARTIFACT_STORES}
    )
    images = _load_images(root)
    notifications = _load_notifications(root)
    analysis = _load_analysis(root)
    env_tables = root.tables("environments")
    environments = {
        env_name: _load_environment(env_name, table, images, analysis)
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
    except OSError as exc:  # a directory, a path through a file, no permission
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path.name}: not UTF-8 text (byte {exc.start})") from None
    except ValueError as exc:  # TOMLDecodeError, or a bare one for an integer of 4300+ digits
        raise ConfigError(f"{path.name}: not valid TOML ({exc})") from None
    return parse(data, path)
