"""Runtime configuration, read from environment variables only.

An empty variable counts as unset, so `PORT=` in a compose file or an unset build
argument falls back to the default instead of failing.

Any variable NAME may instead be given as a file: NAME_FILE=/run/secrets/NAME (the
convention of the official database images), which wins over NAME. A deploy tool that keeps
secrets out of `docker inspect` writes that file right after the container starts, so a
missing file is waited for, up to SECRET_FILE_WAIT seconds (default 300; 0 waits not at all).

FLAGS_FILE names the flagd flag definitions to evaluate and watch (refapi.flagfile); unset,
refapi evaluates the definitions packaged with it (backend/flags.json).

The migration runner's limits (see refapi.migrations) come from MIGRATE_* variables:
MIGRATE_LOCK_TIMEOUT and MIGRATE_STATEMENT_TIMEOUT (seconds, PostgreSQL only; a statement
timeout of 0 means none), MIGRATE_LOCK_RETRIES, and MIGRATE_RUNNER_WAIT (seconds a second
runner waits for the first).
"""

from __future__ import annotations

import difflib
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Literal, get_args

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from refapi.errors import ConfigError

FaultKind = Literal[
    "none", "not-ready", "crash", "fail-after-ready", "fail-ratio", "slow", "flag-on-fails"
]
FAULT_NAMES: tuple[FaultKind, ...] = get_args(FaultKind)
SUPPORTED_BACKENDS = ("sqlite", "postgresql")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
SECRET_FILE_WAIT = 300.0


@dataclass(frozen=True)
class FaultArgument:
    """How the value of a fault written `name=VALUE` is named, read and bounded."""

    letter: str
    noun: str
    unit: str
    rule: str
    example: str
    accepts: Callable[[float], bool]


FAULT_ARGUMENTS: Mapping[FaultKind, FaultArgument] = {
    "fail-after-ready": FaultArgument(
        "N", "a delay", "seconds", "a number of seconds >= 0", "5", lambda v: v >= 0
    ),
    "fail-ratio": FaultArgument(
        "R", "a share", "of ordinary requests", "a number in (0, 1]", "0.2", lambda v: 0 < v <= 1
    ),
    "slow": FaultArgument(
        "MS",
        "a delay",
        "milliseconds",
        "a number of milliseconds in (0, 60000]",
        "500",
        lambda v: 0 < v <= 60000,
    ),
}


def _fault_usage() -> str:
    forms = [
        f"{name}={FAULT_ARGUMENTS[name].letter}" if name in FAULT_ARGUMENTS else name
        for name in FAULT_NAMES
    ]
    return ", ".join(forms[:-1]) + " or " + forms[-1]


FAULT_USAGE = _fault_usage()


@dataclass(frozen=True)
class Fault:
    """A deliberate misbehaviour, so the deploy tool can prove it rolls back bad releases,
    canary tests can watch a release that fails a share of requests or answers slowly, and
    flag ramps can watch a feature that fails (flag-on-fails: every request served the
    new-notes-view flag's on-variant answers 500, while the off-variant stays healthy).

    ``argument`` is the fault's value as FAULT_ARGUMENTS describes it: seconds for
    fail-after-ready, the failing share for fail-ratio, milliseconds for slow.
    """

    kind: FaultKind = "none"
    argument: float = 0.0

    @classmethod
    def parse(cls, raw: str) -> Fault:
        name, sep, value = raw.strip().partition("=")
        for known in FAULT_NAMES:
            if name == known and known in FAULT_ARGUMENTS:
                return cls(known, _fault_argument(raw, known, sep, value))
            if name == known and not sep:
                return cls(known)
        hint = difflib.get_close_matches(name, FAULT_NAMES, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(
            f"REFAPI_FAULT={raw!r} is not a known fault{suggestion}; expected {FAULT_USAGE}"
        )


def _fault_argument(raw: str, name: FaultKind, sep: str, value: str) -> float:
    argument = FAULT_ARGUMENTS[name]
    if not sep:
        raise ConfigError(
            f"REFAPI_FAULT={raw!r} needs {argument.noun}: "
            f"{name}={argument.letter} ({argument.unit})"
        )
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and argument.accepts(number)):
        raise ConfigError(
            f"REFAPI_FAULT={raw!r}: {argument.letter} must be {argument.rule}, "
            f"e.g. {name}={argument.example}"
        )
    return number


@dataclass(frozen=True)
class MigrationSettings:
    """How a migration run treats locks: its own, and the tables' it alters."""

    # Bounds how long *other* sessions queue behind a lock request of the migration.
    lock_timeout: float = 2.0
    statement_timeout: float = 0.0
    lock_retries: int = 3
    runner_wait: float = 300.0


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: URL = field(default_factory=lambda: make_url("sqlite:///./refapi.db"))
    version: str = "0.0.0"
    commit: str = "unknown"
    migrate_on_start: bool = True
    access_log: bool = False
    fault: Fault = field(default_factory=Fault)
    migration: MigrationSettings = field(default_factory=MigrationSettings)
    flags_file: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read and validate every variable; the first bad one raises ConfigError."""

        wait = _seconds(
            "SECRET_FILE_WAIT", environ.get("SECRET_FILE_WAIT", "").strip(), SECRET_FILE_WAIT
        )

        def get(name: str, default: str) -> str:
            path = environ.get(f"{name}_FILE", "").strip()
            if path:
                return read_secret_file(f"{name}_FILE", path, wait=wait)
            return environ.get(name, "").strip() or default

        return cls(
            host=get("HOST", "127.0.0.1"),
            port=_port(get("PORT", "8000")),
            database_url=database_url(get("DATABASE_URL", "sqlite:///./refapi.db")),
            version=get("APP_VERSION", "") or _installed_version(),
            commit=get("GIT_COMMIT", "unknown"),
            migrate_on_start=_flag("MIGRATE_ON_START", get("MIGRATE_ON_START", "1")),
            access_log=_flag("ACCESS_LOG", get("ACCESS_LOG", "0")),
            fault=Fault.parse(get("REFAPI_FAULT", "none")),
            migration=_migration_settings(get),
            flags_file=_optional_path(environ.get("FLAGS_FILE", "")),
        )


def _migration_settings(get: Callable[[str, str], str]) -> MigrationSettings:
    defaults = MigrationSettings()

    def seconds(name: str, default: float) -> float:
        return _seconds(name, get(name, ""), default)

    return MigrationSettings(
        lock_timeout=seconds("MIGRATE_LOCK_TIMEOUT", defaults.lock_timeout),
        statement_timeout=seconds("MIGRATE_STATEMENT_TIMEOUT", defaults.statement_timeout),
        lock_retries=_count(
            "MIGRATE_LOCK_RETRIES", get("MIGRATE_LOCK_RETRIES", ""), defaults.lock_retries
        ),
        runner_wait=seconds("MIGRATE_RUNNER_WAIT", defaults.runner_wait),
    )


def database_url(raw: str) -> URL:
    """Parse DATABASE_URL; plain postgresql:// means the psycopg (v3) driver we ship."""
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        # The value is not echoed: it may carry a password.
        raise ConfigError(
            "DATABASE_URL is not a database URL; expected e.g. sqlite:///./refapi.db "
            "or postgresql://user:password@host:5432/name"
        ) from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in SUPPORTED_BACKENDS:
        raise ConfigError(
            f"DATABASE_URL uses {url.get_backend_name()!r}; refapi supports "
            + " and ".join(SUPPORTED_BACKENDS)
        )
    return url


def read_secret_file(variable: str, path: str, *, wait: float, poll: float = 0.05) -> str:
    """The stripped contents of a secret file, waiting up to ``wait`` seconds for it to
    appear. Errors name the variable and the path, never the contents."""
    deadline = time.monotonic() + wait
    said = False
    while True:
        try:
            with open(path, encoding="utf-8") as handle:
                value = handle.read().strip()
            # A file that appeared while we waited may be caught between its creation and its
            # write (an archive upload does both): empty, it is not complete yet.
            if value or not said or time.monotonic() >= deadline:
                break
            time.sleep(poll)
            continue
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"{variable}={path}: no such file after waiting {wait:g} s — it is written "
                    "after the container starts (conveyor's file secrets); set SECRET_FILE_WAIT "
                    "to wait longer"
                ) from None
            if not said:
                print(f"refapi: waiting for {variable}={path}", file=sys.stderr, flush=True)
                said = True
            time.sleep(poll)
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"{variable}={path}: cannot read it ({why})") from None
    if not value:
        raise ConfigError(f"{variable}={path} is empty")
    return value


def _optional_path(raw: str) -> Path | None:
    return Path(raw.strip()) if raw.strip() else None


def _seconds(name: str, raw: str, default: float) -> float:
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds >= 0")
    return value


def _count(name: str, raw: str, default: int) -> int:
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) > 100:
        raise ConfigError(f"{name}={raw!r} is not a count; expected an integer 0-100")
    return int(raw)


def _port(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 65535:
        raise ConfigError(f"PORT={raw!r} is not a port number; expected an integer 1-65535")
    return int(raw)


def _flag(name: str, raw: str) -> bool:
    value = raw.lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a flag; expected 1 or 0")


def _installed_version() -> str:
    try:
        return metadata.version("refapi")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"
