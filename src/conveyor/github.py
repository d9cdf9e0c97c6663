"""Status reporting in GitHub Actions: step summaries, annotations and deployment statuses.

Everything here acts only when ``GITHUB_ACTIONS=true``. The REST API's base URL comes from
``GITHUB_API_URL`` (GitHub sets it; tests point it at a local server that records requests)
and the token from ``GITHUB_TOKEN``, which is sent only in the Authorization header and never
printed. Reporting is best-effort: a GitHub that cannot be reached is a warning, never a
failed deploy.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conveyor.console import Console
from conveyor.ledger import ReleaseRecord

SUMMARY_LIMIT = 1024 * 1024  # GitHub's limit for one step's summary
DESCRIPTION_LIMIT = 140  # GitHub truncates deployment status descriptions past this
TIMEOUT = 10.0


class GitHubError(Exception):
    """The REST API answered with an error or could not be reached."""


def active(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("GITHUB_ACTIONS") == "true"


# --- workflow commands ------------------------------------------------------------------------


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(level: str, message: str, *, title: str | None = None) -> str:
    """A ``::error``/``::warning``/``::notice`` workflow command, escaped as GitHub requires."""
    if level not in {"error", "warning", "notice"}:
        raise ValueError(f"unknown annotation level {level!r}")
    props = f" title={_escape_property(title)}" if title else ""
    return f"::{level}{props}::{_escape_data(message)}"


def annotate(
    level: str, message: str, *, title: str | None = None, environ: Mapping[str, str] | None = None
) -> None:
    """Print an annotation when running in GitHub Actions (stdout is where the runner reads)."""
    if active(environ):
        print(annotation(level, message, title=title), flush=True)


def append_summary(
    markdown: str,
    environ: Mapping[str, str] | None = None,
    *,
    where_else: str = "",
) -> Path | None:
    """Append to ``$GITHUB_STEP_SUMMARY``, never taking it past GitHub's 1 MiB.

    ``where_else`` names where the full text is when it had to be cut.
    """
    env = os.environ if environ is None else environ
    target = env.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    path = Path(target)
    used = path.stat().st_size if path.exists() else 0
    room = SUMMARY_LIMIT - used - 1
    data = markdown.encode()
    if len(data) > room:
        see = f": see {where_else}" if where_else else ""
        note = f"\n\n…truncated to fit GitHub's 1 MiB step summary{see}\n".encode()
        data = data[: max(0, room - len(note))].decode(errors="ignore").encode() + note
        if len(data) > room:
            return None
    with path.open("ab") as handle:
        handle.write(data)
    return path


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def deploy_summary(
    record: ReleaseRecord, *, url: str | None = None, serving: str | None = None
) -> str:
    """Markdown for a deploy's step summary: the release, its images, its phases, its end."""
    icon = {"succeeded": "✅", "failed": "❌"}.get(record.outcome, "⚠️")
    lines = [
        f"### {icon} {record.kind} {record.version} → {record.environment}: {record.outcome}",
        "",
        "| | |",
        "| --- | --- |",
        f"| release | `{record.id}` |",
        f"| commit | `{record.commit[:12]}`{' (dirty tree)' if record.dirty else ''} |",
        f"| by | {_cell(record.who)} |",
    ]
    if record.duration is not None:
        lines.append(f"| took | {record.duration:.1f} s |")
    if record.approval:
        approval = record.approval
        lines.append(
            f"| approval | {_cell(approval.get('approver', approval.get('method', '?')))} "
            f"({_cell(approval.get('method', '?'))}) |"
        )
    if record.failed_phase:
        lines.append(f"| failed in | {record.failed_phase}: {_cell(record.reason or '')} |")
    if serving:
        lines.append(f"| serving | {_cell(serving)} |")
    if url:
        lines.append(f"| url | {url} |")
    lines += ["", "| service | image |", "| --- | --- |"]
    for name, service in sorted(record.services.items()):
        lines.append(f"| {name} | `{service.get('image_id', '?')}` |")
    if record.phases:
        lines += ["", "| phase | seconds |", "| --- | ---: |"]
        lines.extend(f"| {phase} | {seconds:.2f} |" for phase, seconds in record.phases.items())
    return "\n".join(lines) + "\n\n"


def build_summary(manifest: Mapping[str, Any]) -> str:
    """Markdown for a build's step summary: version, commit, files and images with IDs."""
    lines = [
        f"### 📦 build {manifest.get('version', '?')}",
        "",
        f"commit `{str(manifest.get('commit', ''))[:12]}`"
        + (" (dirty tree)" if manifest.get("dirty") else ""),
        "",
        "| file | bytes | sha256 |",
        "| --- | ---: | --- |",
    ]
    for name, entry in sorted(dict(manifest.get("files", {})).items()):
        lines.append(
            f"| {_cell(name)} | {entry.get('size', '?')} | `{str(entry.get('sha256', ''))[:16]}` |"
        )
    images = dict(manifest.get("images", {}))
    if images:
        lines += ["", "| image | id |", "| --- | --- |"]
        lines.extend(
            f"| {_cell(name)} | `{entry.get('id', '?')}` |"
            for name, entry in sorted(images.items())
        )
    return "\n".join(lines) + "\n\n"


# --- the REST API -----------------------------------------------------------------------------


class Client:
    """The few REST calls conveyor makes, with the token in a header and nowhere else."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.base = env.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
        self.repository = env.get("GITHUB_REPOSITORY", "")
        self.token = env.get("GITHUB_TOKEN", "")
        if urllib.parse.urlsplit(self.base).scheme not in {"http", "https"}:
            raise GitHubError("GITHUB_API_URL must be an http(s) URL")

    @property
    def usable(self) -> bool:
        return bool(self.token and self.repository)

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked to be http(s)
            f"{self.base}/repos/{self.repository}{path}",
            data=data,
            method=method,
            headers={
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
                "User-Agent": "conveyor",
                "X-GitHub-Api-Version": "2022-11-28",
            },
        )
        try:
            # The base URL's scheme is checked to be http(s) in __init__.
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310  # nosec B310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise GitHubError(f"{method} {path}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise GitHubError(f"{method} {path}: {reason}") from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise GitHubError(f"{method} {path}: the answer is not JSON") from None


def environment_approval(
    environment: str, *, environ: Mapping[str, str] | None = None
) -> tuple[str | None, str]:
    """(reviewer, how) when this run's ``environment`` deployment was approved, else
    (None, why not). Reads the run's review history, so a job that merely claims to be in
    the environment proves nothing."""
    env = os.environ if environ is None else environ
    run_id = env.get("GITHUB_RUN_ID", "")
    try:
        client = Client(env)
    except GitHubError as exc:
        return None, str(exc)
    if not client.usable or not run_id:
        return None, "GITHUB_TOKEN, GITHUB_REPOSITORY and GITHUB_RUN_ID are needed to check it"
    try:
        reviews = client.request("GET", f"/actions/runs/{run_id}/approvals")
    except GitHubError as exc:
        return None, f"cannot read the run's approvals ({exc}; the job needs `actions: read`)"
    for review in reviews if isinstance(reviews, list) else []:
        names = {e.get("name") for e in review.get("environments", []) if isinstance(e, dict)}
        if review.get("state") == "approved" and environment in names:
            login = str(review.get("user", {}).get("login", "?"))
            return login, f"run {run_id}"
    return None, f"no reviewer approved GitHub's {environment} environment in run {run_id}"


class DeploymentReporter:
    """A GitHub deployment per conveyor deploy, with in_progress → success/failure statuses."""

    def __init__(self, environment: str, out: Console, environ: Mapping[str, str] | None = None):
        self.environ = dict(os.environ if environ is None else environ)
        self.environment = environment
        self.out = out
        self.deployment_id: int | None = None
        self.requests_failed = 0
        try:
            self.client: Client | None = Client(self.environ)
        except GitHubError as exc:
            out.warn(f"GitHub deployment statuses are off: {exc}")
            self.client = None

    def _log_url(self) -> str | None:
        server = self.environ.get("GITHUB_SERVER_URL", "https://github.com")
        run = self.environ.get("GITHUB_RUN_ID")
        repo = self.environ.get("GITHUB_REPOSITORY")
        return f"{server}/{repo}/actions/runs/{run}" if run and repo else None

    def _call(self, method: str, path: str, body: Mapping[str, Any]) -> Any:
        if self.client is None or not self.client.usable:
            return None
        try:
            return self.client.request(method, path, body)
        except GitHubError as exc:
            self.requests_failed += 1
            self.out.warn(f"GitHub deployment status not reported: {exc}")
            return None

    def started(self, record: ReleaseRecord, *, production: bool) -> None:
        answer = self._call(
            "POST",
            "/deployments",
            {
                "ref": self.environ.get("GITHUB_SHA") or record.commit,
                "environment": self.environment,
                "description": f"{record.kind} {record.version} ({record.id})"[:DESCRIPTION_LIMIT],
                "auto_merge": False,
                "required_contexts": [],
                "production_environment": production,
                "payload": {
                    "release": record.id,
                    "version": record.version,
                    "images": record.digests(),
                },
            },
        )
        if isinstance(answer, dict) and isinstance(answer.get("id"), int):
            self.deployment_id = answer["id"]
            self.status("in_progress", f"{record.kind} {record.version} started")

    def status(self, state: str, description: str, environment_url: str | None = None) -> None:
        if self.deployment_id is None:
            return
        body: dict[str, Any] = {
            "state": state,
            "description": description[:DESCRIPTION_LIMIT],
            "environment": self.environment,
        }
        log_url = self._log_url()
        if log_url:
            body["log_url"] = log_url
        if environment_url:
            body["environment_url"] = environment_url
        self._call("POST", f"/deployments/{self.deployment_id}/statuses", body)
