"""Steps the integration tests share: check what a conveyor command returned, read the
version a port serves, and hold a bounded keep-alive load on it while something happens."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from conveyor import health
from testkit.loadgen import KeepAliveLoad


def ok(result: Any) -> Any:
    """The command succeeded (its output in the message when it did not)."""
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def one_line(result: Any, *, alone: bool = False) -> str:
    """The command failed the way every failure must: one ``conveyor: …`` line last on stderr,
    no traceback; ``alone``: and nothing else there but traced phases. Returns that line."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("phase:")]
    assert lines and lines[-1].startswith("conveyor: "), result.stderr
    assert len(lines) == 1 or not alone, result.stderr
    return str(lines[-1])


def served(port: int, path: str = "/api/version") -> str | None:
    """The version 127.0.0.1:``port`` answers with, or None."""
    answer = health.probe("127.0.0.1", port, path, timeout=1.0)
    return None if answer.body is None else answer.body.get("version")


@contextmanager
def load_on(port: int, *, rate: float = 200, timeout: float = 2.0) -> Iterator[KeepAliveLoad]:
    """Four keep-alive connections on 127.0.0.1:``port``, stopping by themselves in 4 min."""
    load = KeepAliveLoad(
        "127.0.0.1",
        port,
        "/api/version",
        connections=4,
        rate=rate,
        max_seconds=240,
        timeout=timeout,
    )
    with load:
        yield load
