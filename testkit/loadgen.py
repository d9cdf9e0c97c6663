"""A bounded keep-alive HTTP load, counting every failed request, reset and non-2xx answer.

Used to prove zero-downtime switches: benchmarks report its numbers, tests assert that a
deploy under load loses nothing. Traffic goes only where it is pointed (127.0.0.1 here), and
every run stops by itself after ``max_seconds``.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any


@dataclass
class LoadResult:
    requests: int = 0
    failures: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    failure_times: list[float] = field(default_factory=list)
    seconds: float = 0.0
    # version -> (first, last) time it answered, in seconds since the load began
    versions: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))
        return ordered[index]

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "failures": self.failures,
            "errors": dict(self.errors),
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
            "p50_ms": round(self.percentile(0.50) * 1000, 2),
            "p99_ms": round(self.percentile(0.99) * 1000, 2),
        }


# The load of a test that proves a change loses no request: four keep-alive connections, a
# request every 40 ms on each. On the 2-core machine, with the api answering directly, 100
# req/s cost 0.11 core and 200 req/s 0.2 (20 s each): with two workers the suite is bound by
# CPU, and what a switch would drop, a connection open through it shows at either rate.
PROOF_RATE = 100.0


def proof_load(port: int, path: str = "/api/version", **options: Any) -> KeepAliveLoad:
    """The load of a zero-failure proof on 127.0.0.1:``port``, 240 s at most."""
    return KeepAliveLoad(
        "127.0.0.1",
        port,
        path,
        **{"connections": 4, "rate": PROOF_RATE, "max_seconds": 240, **options},
    )


class KeepAliveLoad:
    """``connections`` threads, each with one persistent connection, pacing to ``rate``."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str = "/",
        *,
        connections: int = 4,
        rate: float = 250.0,
        max_seconds: float = 300.0,
        timeout: float = 5.0,
        headers: dict[str, str] | None = None,
        track_versions: bool = False,
    ) -> None:
        self.track_versions = track_versions
        self.host = host
        self.port = port
        self.path = path
        self.connections = connections
        self.interval = connections / rate
        self.max_seconds = max_seconds
        self.timeout = timeout
        self.headers = headers or {}
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = 0.0

    def __enter__(self) -> KeepAliveLoad:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._started = time.monotonic()
        for index in range(self.connections):
            thread = threading.Thread(target=self._worker, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> LoadResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)
        self.result.seconds = time.monotonic() - self._started
        return self.result

    def _record(self, latency: float | None, error: str | None, version: str | None = None) -> None:
        with self._lock:
            if version is not None:
                now = time.monotonic() - self._started
                first, _last = self.result.versions.get(version, (now, now))
                self.result.versions[version] = (first, now)
            self.result.requests += 1
            if error is None and latency is not None:
                self.result.latencies.append(latency)
            else:
                self.result.failures += 1
                self.result.errors[error or "unknown"] += 1
                self.result.failure_times.append(time.monotonic() - self._started)

    def _version(self, body: bytes) -> str | None:
        if not self.track_versions:
            return None
        try:
            value = json.loads(body).get("version")
        except (ValueError, AttributeError):
            return None
        return str(value) if value is not None else None

    @property
    def started(self) -> float:
        """When the load began, on the time.monotonic() clock."""
        return self._started

    def elapsed(self) -> float:
        """Seconds since the load began, on the clock ``versions`` uses."""
        return time.monotonic() - self._started

    def _worker(self, index: int) -> None:
        connection: http.client.HTTPConnection | None = None
        deadline = self._started + self.max_seconds
        next_at = time.monotonic() + index * self.interval / self.connections
        while not self._stop.is_set() and time.monotonic() < deadline:
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            next_at = max(next_at + self.interval, time.monotonic() - self.interval)
            if connection is None:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            began = time.monotonic()
            try:
                connection.request("GET", self.path, headers=self.headers)
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self._record(None, type(exc).__name__)
                connection.close()
                connection = None
                continue
            latency = time.monotonic() - began
            if 200 <= response.status < 300:
                self._record(latency, None, self._version(body))
            else:
                self._record(None, f"HTTP {response.status}")
            if response.will_close:
                connection.close()
                connection = None
        if connection is not None:
            connection.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m testkit.loadgen HOST:PORT…``: one load per target until stdin closes (or
    ``--max-seconds``), then each result as JSON on stdout. How a benchmark runs load where
    only a network namespace reaches (``nsenter --net=… python -m testkit.loadgen …``)."""
    import argparse  # noqa: PLC0415
    import sys  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m testkit.loadgen")
    parser.add_argument("targets", nargs="+", metavar="HOST:PORT")
    parser.add_argument("--path", default="/")
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s per target")
    parser.add_argument("--connections", type=int, default=4, help="per target")
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args(argv)
    loads = {}
    for target in args.targets:
        host, _, port = target.rpartition(":")
        loads[target] = KeepAliveLoad(
            host,
            int(port),
            args.path,
            connections=args.connections,
            rate=args.rate,
            max_seconds=args.max_seconds,
            track_versions=True,
        )
    for load in loads.values():
        load.start()
    print("started", flush=True)
    sys.stdin.read()  # the caller closes it to stop the load
    for load in loads.values():
        load.stop()
    json.dump(
        {
            target: {
                **load.result.as_dict(),
                "versions": load.result.versions,
                "started": load.started,
                "failure_times": [round(t, 3) for t in load.result.failure_times],
            }
            for target, load in loads.items()
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
