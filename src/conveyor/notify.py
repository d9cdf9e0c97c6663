"""Tell people about deploys: apprise notifications, and GitHub when running in Actions.

Events: ``started``, ``succeeded``, ``failed`` (with the failed phase), ``rolled-back`` and
``approval-needed``. Notification URLs come from ``[notifications] urls`` and an environment's
``notify`` in deploy.toml, each a reference (``env:NAME`` or ``file:PATH``) because an apprise
URL carries its token. URLs are never printed: a target is named by its reference and scheme.

Delivery is best-effort and off the deploy's path: each message goes out on a background
thread with the configured timeout; at the end the deploy waits at most that long for what is
still in flight, and a message that could not be delivered is a warning, never a failure.
Every message passes through :func:`redact` with the values of the URLs, the services' secrets
and the GitHub token, so none of them can reach a chat room through a failure reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from conveyor import github
from conveyor.config import Config, Environment, SecretRef
from conveyor.console import Console
from conveyor.errors import ConfigError
from conveyor.ledger import ReleaseRecord, who
from conveyor.scanners.redact import redact as redact_token_shapes

if TYPE_CHECKING:
    from conveyor.analysis import Verdict
    from conveyor.releases import Release

MASK = "[REDACTED]"
MIN_SECRET = 6  # shorter URL parts (ports, "api", "v1") are not secrets and would mask noise
LEVELS = {
    "started": "info",
    "succeeded": "success",
    "failed": "failure",
    "rolled-back": "warning",
    "approval-needed": "warning",
    "canary-window": "info",
    "canary-aborted": "failure",
    "flag-killed": "failure",
}


@dataclass(frozen=True)
class Message:
    event: str
    title: str
    body: str

    @property
    def level(self) -> str:
        return LEVELS[self.event]


def secret_values(urls: Iterable[str], others: Iterable[str] = ()) -> set[str]:
    """What must never appear in a message: each URL and the parts of it that may be tokens."""
    values = {v for v in others if v and len(v) >= MIN_SECRET}
    for url in urls:
        values.add(url)
        parts = urllib.parse.urlsplit(url)
        pieces = [parts.username or "", parts.password or "", parts.netloc]
        pieces += [p for p in parts.path.split("/") if p]
        pieces += [v for _k, v in urllib.parse.parse_qsl(parts.query)]
        values.update(p for p in pieces if len(p) >= MIN_SECRET)
        values.update(urllib.parse.unquote(p) for p in pieces if len(p) >= MIN_SECRET)
    return values


def redact(text: str, secrets: Iterable[str]) -> str:
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, MASK)
    return redact_token_shapes(text)


def _short_id(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def deploy_message(
    event: str, record: ReleaseRecord, *, url: str | None = None, serving: str | None = None
) -> Message:
    """The words of a deploy notification: one title line and a few ``key: value`` lines."""
    what = {
        "started": "started",
        "succeeded": "succeeded",
        "failed": f"failed in {record.failed_phase or '?'}",
        "rolled-back": "rolled back",
    }[event]
    title = f"{record.environment}: {record.kind} of {record.version} {what}"
    lines = [
        f"environment: {record.environment}",
        f"release: {record.id} ({record.kind})",
        f"version: {record.version}",
        f"commit: {record.commit[:12]}" + (" (dirty tree)" if record.dirty else ""),
        f"by: {record.who}",
        "images: " + ", ".join(f"{s} {_short_id(i)}" for s, i in sorted(record.digests().items())),
    ]
    if record.approval and record.approval.get("approver"):
        lines.append(f"approved by: {record.approval['approver']}")
    if record.rollback_of:
        lines.append(f"rollback of: {record.rollback_of}")
    if event == "failed":
        lines.append(f"failed phase: {record.failed_phase}")
        lines.append(f"reason: {record.reason}")
    if serving:
        lines.append(f"serving: {serving}")
    if record.duration is not None and event != "started":
        lines.append(f"took: {record.duration:.1f} s")
    if url:
        lines.append(f"url: {url}")
    return Message(event=event, title=title, body="\n".join(lines))


def approval_message(environment: str, release: Release, key: str, deployer: str) -> Message:
    short = key[:16]
    lines = [
        f"environment: {environment}",
        f"version: {release.version}",
        f"commit: {release.commit[:12]}",
        f"release key: {short}",
        "images: " + ", ".join(f"{s} {_short_id(i)}" for s, i in sorted(release.digests().items())),
        f"requested by: {deployer}",
        f"approve with: invoke approve --env {environment} --release {short}",
    ]
    return Message(
        event="approval-needed",
        title=f"{environment}: {release.version} needs an approval",
        body="\n".join(lines),
    )


@contextlib.contextmanager
def _quiet_apprise() -> Iterator[None]:
    """Apprise logs hosts and, at debug level, URLs: keep its logger away from our output."""
    logger = logging.getLogger("apprise")
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.CRITICAL + 1)
    logger.propagate = False
    try:
        yield
    finally:
        logger.setLevel(level)
        logger.propagate = propagate


@dataclass
class Target:
    """One place notifications go; ``label`` is how it is named in output (never the URL)."""

    label: str
    url: str


@dataclass
class Notifier:
    targets: list[Target]
    events: tuple[str, ...]
    timeout: float
    out: Console
    secrets: set[str] = field(default_factory=set)
    sent: list[tuple[str, str, bool]] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: Message) -> None:
        """Deliver in the background; :meth:`wait` collects the outcome."""
        if message.event not in self.events or not self.targets:
            return
        safe = Message(
            event=message.event,
            title=redact(message.title, self.secrets),
            body=redact(message.body, self.secrets),
        )
        # In the background, but in order: "started" must never arrive after "succeeded"
        # (the first delivery also pays for importing apprise).
        previous = self._threads[-1] if self._threads else None
        thread = threading.Thread(target=self._deliver, args=(safe, previous), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _deliver(self, message: Message, after: threading.Thread | None = None) -> None:
        if after is not None:
            after.join(2 * self.timeout + 1)
        try:
            import apprise  # noqa: PLC0415 - a deploy without notification targets never loads it
        except ImportError:
            self.out.warn("notifications need apprise: run `uv sync` (it is a dependency)")
            with self._lock:
                self.sent.extend((message.event, t.label, False) for t in self.targets)
            return
        for target in self.targets:
            ok = False
            with contextlib.suppress(Exception), _quiet_apprise():
                service = apprise.Apprise.instantiate(target.url)
                if service is not None:
                    service.socket_connect_timeout = self.timeout
                    service.socket_read_timeout = self.timeout
                    ok = bool(
                        service.notify(
                            body=message.body,
                            title=message.title,
                            notify_type=apprise.NotifyType(message.level),
                        )
                    )
            with self._lock:
                self.sent.append((message.event, target.label, ok))

    def wait(self) -> list[tuple[str, str]]:
        """Wait (at most the timeout, twice for a slow connect and read) for deliveries in
        flight; warn about each one that failed. Returns (event, target) of the failures."""
        deadline = time.monotonic() + 2 * self.timeout + 1
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        late = sum(t.is_alive() for t in self._threads)
        self._threads = [t for t in self._threads if t.is_alive()]
        with self._lock:
            failed = [(event, label) for event, label, ok in self.sent if not ok]
            self.sent = [s for s in self.sent if not s[2]]
        for event, label in failed:
            self.out.warn(f"notification '{event}' could not be delivered to {label}")
            github.annotate("warning", f"notification '{event}' not delivered to {label}")
        if late:
            self.out.warn(f"{late} notification(s) still in flight after {self.timeout:g} s")
        return failed


def _targets(refs: Iterable[SecretRef], out: Console) -> list[Target]:
    targets = []
    for number, ref in enumerate(refs, 1):
        label = f"target {number} ({ref.scheme}:{ref.target})"
        try:
            url = ref.resolve()
        except ConfigError:
            out.say(f"notifications: {ref.scheme}:{ref.target} is not set here; skipping it")
            continue
        if not url:
            continue
        scheme = url.split("://", 1)[0] if "://" in url else "?"
        targets.append(Target(label=f"{label}, {scheme}://…", url=url))
    return targets


def notifier_for(config: Config, env: Environment, out: Console) -> Notifier:
    refs = list(config.notifications.urls) + list(env.notify)
    targets = _targets(refs, out)
    others = [os.environ.get("GITHUB_TOKEN", "")]
    for service in env.services.values():
        for secret in service.secrets:
            with contextlib.suppress(ConfigError):
                others.append(secret.resolve())
    return Notifier(
        targets=targets,
        events=config.notifications.events,
        timeout=config.notifications.timeout,
        out=out,
        secrets=secret_values([t.url for t in targets], others),
    )


class Announcer:
    """Everything a deploy tells the world, called from ``operations._move`` at each turn:
    notifications, and in GitHub Actions a deployment status, step summary and annotations."""

    def __init__(self, config: Config, env: Environment, out: Console) -> None:
        self.env = env
        self.out = out
        self.notifier = notifier_for(config, env, out)
        self.github = github.DeploymentReporter(env.name, out) if github.active() else None
        self.record: ReleaseRecord | None = None
        self.finished = False

    def started(self, record: ReleaseRecord) -> None:
        self.record = record
        self.notifier.send(deploy_message("started", record))
        if self.github is not None:
            self.github.started(record, production=self.env.approval.required)

    def succeeded(self, record: ReleaseRecord, url: str) -> None:
        self.finished = True
        event = "rolled-back" if record.kind == "rollback" else "succeeded"
        self.notifier.send(deploy_message(event, record, url=url))
        if self.github is not None:
            self.github.status(
                "success",
                f"{record.version} is live ({record.id})",
                environment_url=None if "//127." in url or "//localhost" in url else url,
            )
            github.append_summary(github.deploy_summary(record, url=url))

    def failed(self, record: ReleaseRecord, serving: str) -> None:
        self.finished = True
        self.notifier.send(deploy_message("failed", record, serving=serving))
        if self.github is not None:
            why = f"failed in {record.failed_phase}: {record.reason}"
            self.github.status("failure", f"{why}; {serving}")
            github.annotate(
                "error",
                f"{record.kind} of {record.version} to {record.environment} {why} — {serving}",
                title=f"{record.environment} {record.kind} failed",
            )
            github.append_summary(github.deploy_summary(record, serving=serving))

    def canary_window(self, record: ReleaseRecord, verdict: Verdict) -> None:
        """Each canary window's verdict, with its numbers; a failure is the abort."""
        event = "canary-aborted" if verdict.outcome == "fail" else "canary-window"
        title = (
            f"{record.environment}: canary of {record.version} at {verdict.percent}%: "
            f"{verdict.outcome}" + (" — aborting" if verdict.outcome == "fail" else "")
        )
        body = "\n".join(
            [
                f"environment: {record.environment}",
                f"release: {record.id} ({record.kind})",
                f"version: {record.version}",
                f"verdict: {verdict.line()}",
            ]
        )
        self.notifier.send(Message(event=event, title=title, body=body))

    def flag_killed(self, environment: str, flag: str, verdict: Verdict) -> None:
        """A ramp turned a flag off: its on-variant failed against its off-variant."""
        title = f"{environment}: flag {flag} turned off at {verdict.percent}% (errors)"
        body = f"environment: {environment}\nflag: {flag}\nverdict: {verdict.line()}"
        self.notifier.send(Message(event="flag-killed", title=title, body=body))

    def approval_needed(self, release: Release, key: str) -> None:
        self.notifier.send(approval_message(self.env.name, release, key, who()))
        if github.active():
            github.annotate(
                "error",
                f"{self.env.name} needs an approval of {release.version} (release key "
                f"{key[:16]}): nothing was deployed",
                title=f"{self.env.name} approval needed",
            )
        self.notifier.wait()  # the deploy ends here: let the request go out first

    def close(self) -> None:
        """At the end of the deploy, whatever happened: report the end if nobody did, then
        wait for deliveries in flight."""
        record = self.record
        if record is not None and not self.finished:
            self.finished = True
            stopped = replace(
                record,
                failed_phase=record.failed_phase or "interrupted",
                reason=record.reason or "the deploy stopped before finishing",
            )
            self.notifier.send(deploy_message("failed", stopped))
            if self.github is not None:
                self.github.status("error", "the deploy stopped before finishing")
        self.notifier.wait()
