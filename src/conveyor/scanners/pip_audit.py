"""pip-audit: known vulnerabilities in the locked Python dependencies.

What is audited: requirement files named in ``requirements``, the runtime dependencies (all
extras) of each workspace package in ``uv_packages`` exported from ``uv.lock``, and — with
``uv_lock`` — everything the lock pins, dependency groups included (the tools CI runs).

Where advisories come from (``source``):

- ``auto`` (default): ``mirror`` when the advisory folder exists, else ``osv``.
- ``mirror``: conveyor's own OSV mirror (:mod:`conveyor.scanners.advisories`) serving a folder
  of OSV advisories on 127.0.0.1 — ``advisory_db``, else ``$CONVEYOR_ADVISORY_DB``, else
  ``<root>/../shared/advisories/pypa-advisory-database``. Works with no network.
- ``osv``: an OSV API at ``osv_url`` (api.osv.dev by default).
- ``pypi``: PyPI's JSON API.

``--strict`` is always on: a dependency that cannot be audited fails the run (``error``), and a
source that cannot be reached makes the scanner ``unavailable`` — never a silent "clean".
The PyPA feed carries no severity, so every vulnerability gets ``severity`` (high by default).
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from packaging.version import InvalidVersion, Version

from conveyor.errors import ToolTimeout
from conveyor.scanners import advisories
from conveyor.scanners.base import (
    ScanContext,
    ScannerSpec,
    execute,
    find_tool,
    line_of,
    missing,
)
from conveyor.scanners.model import SEVERITIES, Finding, ScannerRun

NAME = "pip-audit"
SOURCES = ("auto", "mirror", "osv", "pypi")
PYPI_URL = "https://pypi.org/pypi"
NETWORK_TIMEOUT = 15
_UNREACHABLE = re.compile(
    r"ConnectionError|ConnectTimeout|Could not connect|Max retries exceeded|"
    r"NameResolutionError|Connection refused|Temporary failure in name resolution|ReadTimeout",
)


class Unavailable(Exception):
    pass


@dataclass(frozen=True)
class Target:
    """One requirements set to audit, and where its pins are written (for locations)."""

    label: str
    requirements: Path
    source_file: str
    pins: frozenset[str] = frozenset()
    # False when another target (the whole lock) already audits every pin of this one.
    audit: bool = True


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", re.MULTILINE)


def pins_of(text: str) -> frozenset[str]:
    """``name==version`` (canonical name) of every pinned line of a requirements file."""
    return frozenset(f"{advisories.canonical_name(m[1])}=={m[2]}" for m in _PIN.finditer(text))


def _probe(url: str) -> None:
    """Fail fast, with the address, when the advisory source does not accept connections."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise Unavailable(f"cannot reach the advisory source {host}:{port} ({exc})") from None


def _advisory_db(ctx: ScanContext) -> Path:
    configured: str = ctx.option("advisory_db")
    if os.environ.get(advisories.ENV_DB) or not configured:
        return advisories.default_db(ctx.root)
    return (ctx.root / configured).resolve()


@contextmanager
def _source_args(ctx: ScanContext) -> Iterator[tuple[list[str], str]]:
    source = ctx.option("source")
    path = _advisory_db(ctx)
    if source == "auto":
        # The mirror where the snapshot is laid out (offline CI, this workspace), the OSV API
        # elsewhere (a hosted runner); the note in the report says which one answered.
        source = "mirror" if path.is_dir() else "osv"
    if source == "mirror":
        try:
            db = advisories.AdvisoryDB.load(path)
        except advisories.AdvisoryError as exc:
            raise Unavailable(str(exc)) from None
        with advisories.serving(db) as server:
            described = f"offline OSV mirror of {path.name} ({db.count} advisories"
            described += f"; {db.snapshot})" if db.snapshot else ")"
            yield ["-s", "osv", "--osv-url", server.url], described
        return
    if source == "osv":
        url = ctx.option("osv_url")
        _probe(url)
        yield ["-s", "osv", "--osv-url", url], f"OSV at {url}"
        return
    _probe(PYPI_URL)
    yield ["-s", "pypi"], "PyPI"


def _targets(ctx: ScanContext, workdir: Path) -> list[Target]:
    targets = []
    for name in ctx.option("requirements"):
        path = ctx.root / name
        if not path.is_file():
            raise FileNotFoundError(f"requirements file {name} does not exist")
        targets.append(Target(name, path, name))
    exports: list[tuple[str, list[str]]] = [
        (package, ["--package", package, "--no-dev", "--all-extras"])
        for package in ctx.option("uv_packages")
    ]
    if ctx.option("uv_lock") and (ctx.root / "uv.lock").is_file():
        exports.append(("uv.lock", ["--all-packages", "--all-groups", "--all-extras"]))
    if exports:
        uv = find_tool("uv")
        if uv is None:
            raise Unavailable("uv is not installed — it exports the locked requirements")
        for label, args in exports:
            result = execute(
                [
                    uv,
                    "export",
                    "--frozen",
                    "--no-emit-workspace",
                    "--no-header",
                    "--format",
                    "requirements-txt",
                    *args,
                ],
                cwd=ctx.root,
                timeout=120,
            )
            if result.returncode != 0:
                raise RuntimeError(f"uv export ({label}) failed: {result.tail()}")
            path = workdir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', label)}.txt"
            path.write_text(result.stdout, encoding="utf-8")
            targets.append(Target(label, path, "uv.lock", pins_of(result.stdout)))
    # The whole lock pins a superset of every package's runtime set: audit it once (pip-audit
    # costs a second of start-up per run) and use the package sets only to label findings.
    if any(t.label == "uv.lock" for t in targets):
        targets = [
            replace(t, audit=False) if t.source_file == "uv.lock" and t.label != "uv.lock" else t
            for t in targets
        ]
    return targets


def _fix(version: str, fixes: list[str]) -> str:
    if not fixes:
        return "no fixed version published"
    try:
        current = Version(version)
        later = sorted(Version(f) for f in fixes if Version(f) > current)
    except InvalidVersion:
        later = []
    return f"upgrade to {later[0] if later else fixes[0]}"


def parse(
    data: dict[str, Any], target: Target, ctx: ScanContext
) -> tuple[list[Finding], list[str]]:
    findings, skipped = [], []
    for dep in data.get("dependencies") or []:
        name, version = str(dep.get("name")), str(dep.get("version", "?"))
        if "skip_reason" in dep:
            skipped.append(f"{name}: {dep['skip_reason']}")
            continue
        for vuln in dep.get("vulns") or []:
            description = " ".join(str(vuln.get("description") or "").split())
            source = target.source_file
            needle = f'name = "{name}"' if source == "uv.lock" else f"{name}=="
            findings.append(
                Finding(
                    scanner=NAME,
                    rule=str(vuln["id"]),
                    severity=ctx.option("severity"),
                    location=f"{name}@{version}",
                    message=(description[:500] or "known vulnerability"),
                    fix=_fix(version, [str(v) for v in vuln.get("fix_versions") or []]),
                    path=source,
                    line=line_of(ctx.root / source, needle),
                    aliases=tuple(str(a) for a in vuln.get("aliases") or []),
                    help_uri=f"https://osv.dev/vulnerability/{vuln['id']}",
                    title=f"{vuln['id']} in {name} {version}",
                    component=target.label,
                )
            )
    return findings, skipped


def _audit(pip_audit: str, target: Target, source: list[str], ctx: ScanContext) -> dict[str, Any]:
    argv = [
        pip_audit, "-r", str(target.requirements), "--no-deps", "--disable-pip", "--strict",
        "-f", "json", "--progress-spinner", "off", "--timeout", str(NETWORK_TIMEOUT),
        "--cache-dir", str(ctx.cache / "pip-audit"), *source,
    ]  # fmt: skip
    result = execute(argv, cwd=ctx.root, timeout=ctx.timeout)
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and "dependencies" in data:
        return data
    output = result.stderr + result.stdout
    if _UNREACHABLE.search(output):
        match = _UNREACHABLE.search(output)
        raise Unavailable(
            f"advisory source unreachable while auditing {target.label} "
            f"({match.group(0) if match else 'connection failed'})"
        )
    raise RuntimeError(f"{target.label}: exit {result.returncode}: {result.tail()}")


def run(ctx: ScanContext) -> ScannerRun:
    pip_audit = find_tool("pip-audit")
    if pip_audit is None:
        return missing(NAME, "pip-audit")
    findings: dict[tuple[str, str], Finding] = {}
    labels: dict[tuple[str, str], list[str]] = {}
    notes: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="conveyor-pip-audit-") as tmp:
            targets = _targets(ctx, Path(tmp))
            if not targets:
                return ScannerRun.error(
                    NAME, "nothing to audit: no requirements, uv_packages or uv.lock configured"
                )
            with _source_args(ctx) as (source, described):
                notes.append(f"source: {described}")
                audited = [t for t in targets if t.audit]
                with ThreadPoolExecutor(max_workers=len(audited)) as pool:
                    reports = list(pool.map(lambda t: _audit(pip_audit, t, source, ctx), audited))
                for target, data in zip(audited, reports, strict=True):
                    found, skipped = parse(data, target, ctx)
                    if skipped:  # --strict should have failed already; never let it pass
                        return ScannerRun.error(
                            NAME, f"could not audit {', '.join(skipped[:3])} in {target.label}"
                        )
                    for finding in found:
                        key = (finding.rule, finding.location)
                        findings.setdefault(key, finding)
                        name, _, version = finding.location.partition("@")
                        pin = f"{advisories.canonical_name(name)}=={version}"
                        owners = [t.label for t in targets if not t.audit and pin in t.pins]
                        labels.setdefault(key, []).extend(owners or [target.label])
    except Unavailable as exc:
        return ScannerRun.unavailable(NAME, str(exc))
    except ToolTimeout as exc:
        return ScannerRun.error(NAME, str(exc))
    except (RuntimeError, FileNotFoundError) as exc:
        return ScannerRun.error(NAME, str(exc))
    merged = []
    for key, finding in findings.items():
        where = ", ".join(sorted(set(labels[key])))
        merged.append(replace(finding, message=f"{finding.message} (in {where})", component=where))
    notes.append(f"audited: {', '.join(t.label for t in targets)}")
    return ScannerRun.completed(NAME, merged, notes=notes)


SPEC = ScannerSpec(
    name=NAME,
    description="known vulnerabilities in locked Python dependencies (pip-audit --strict)",
    run=run,
    options={
        "source": "auto",
        "advisory_db": "",
        "osv_url": "https://api.osv.dev/v1/query",
        "requirements": [],
        "uv_packages": [],
        "uv_lock": True,
        "severity": "high",
    },
    choices={"source": SOURCES, "severity": SEVERITIES},
)
