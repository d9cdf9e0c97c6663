"""Engine creation and the one-line description of database failures."""

from __future__ import annotations

from typing import Any

import sqlalchemy
from sqlalchemy.engine import URL, Engine

from refapi.errors import ConfigError

# A readiness probe must answer before the deploy tool's probe gives up, so an
# unreachable PostgreSQL host has to fail fast rather than hang on TCP retries.
POSTGRES_CONNECT_TIMEOUT_SECONDS = 3


def create_engine(url: URL) -> Engine:
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_SECONDS
    try:
        # pre_ping: after a database restart the first request gets a fresh connection
        # instead of an error from a dead pooled one.
        return sqlalchemy.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"DATABASE_URL needs the {exc.name} driver, which is not installed; "
            "install refapi[postgres]"
        ) from None


def describe_failure(exc: BaseException) -> str:
    """First line only: SQLAlchemy appends the SQL and a documentation link below it."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
