"""Health checks over HTTP, always to a loopback or configured address, always bounded."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.containers import Container


@dataclass(frozen=True)
class Probe:
    """One HTTP answer, or why there was none."""

    status: int | None
    body: dict[str, Any] | None
    error: str | None = None
    # The body as text (a metrics page is not JSON).
    text: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> str:
        if self.error:
            return self.error
        reason = (self.body or {}).get("reason")
        return f"HTTP {self.status}" + (f" ({reason})" if reason else "")


def probe(
    host: str,
    port: int,
    path: str,
    *,
    timeout: float = 5.0,
    headers: dict[str, str] | None = None,
) -> Probe:
    """GET ``path`` once; connection errors become a Probe with ``error`` set."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Connection": "close", **(headers or {})})
        response = connection.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return Probe(None, None, f"{type(exc).__name__}: {exc}".rstrip(": "))
    finally:
        connection.close()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    text = raw.decode(errors="replace")
    return Probe(response.status, body if isinstance(body, dict) else None, text=text)


def wait_until(
    check: Callable[[], Probe],
    *,
    timeout: float,
    interval: float = 0.1,
    on_wait: Callable[[Probe, float], None] | None = None,
    give_up: Callable[[], str | None] | None = None,
) -> tuple[bool, Probe]:
    """Poll ``check`` until it passes or ``timeout`` seconds pass.

    ``give_up`` may return a reason to stop early (a crashed container never gets ready).
    """
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    last = Probe(None, None, "not checked yet")
    while True:
        last = check()
        if last.ok:
            return True, last
        if give_up is not None:
            reason = give_up()
            if reason:
                return False, Probe(last.status, last.body, reason)
        if time.monotonic() >= deadline:
            return False, last
        if on_wait is not None:
            on_wait(last, time.monotonic() - started)
        time.sleep(interval)


# Runs inside a container on the target host's network when that host is another machine:
# its loopback is only reachable from there.
EXEC_PROBE = (
    "import http.client,json,sys\n"
    "c=http.client.HTTPConnection('127.0.0.1',int(sys.argv[1]),timeout=float(sys.argv[3]))\n"
    "h=json.loads(sys.argv[4])\n"
    "try:\n"
    "    c.request('GET',sys.argv[2],headers=h); r=c.getresponse(); b=r.read()\n"
    "    print(json.dumps({'status':r.status,'body':b.decode('utf-8','replace')}))\n"
    "except Exception as e:\n"
    "    print(json.dumps({'error':type(e).__name__+': '+str(e)}))\n"
)


def probe_via_exec(
    container: Container,
    port: int,
    path: str,
    *,
    timeout: float = 5.0,
    headers: dict[str, str] | None = None,
) -> Probe:
    """The same GET as :func:`probe`, made from inside ``container`` (host networking)."""
    args = [str(port), path, str(timeout), json.dumps({"Connection": "close", **(headers or {})})]
    try:
        result = container.exec_run(["python3", "-c", EXEC_PROBE, *args])
        answer = json.loads(result.output.decode(errors="replace").strip().splitlines()[-1])
    except Exception as exc:
        return Probe(None, None, f"probe via exec failed: {exc}")
    if "error" in answer:
        return Probe(None, None, str(answer["error"]))
    try:
        body = json.loads(answer["body"]) if answer["body"] else None
    except ValueError:
        body = None
    return Probe(
        int(answer["status"]), body if isinstance(body, dict) else None, text=str(answer["body"])
    )
