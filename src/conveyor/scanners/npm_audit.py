"""npm audit: known vulnerabilities in the frontend's locked npm packages.

It asks the npm registry's audit endpoint. When that endpoint does not answer (offline, or a
registry mirror that does not serve it) the scanner is ``unavailable`` with the registry's
own words — an audit that did not happen is never "0 vulnerabilities".
"""

from __future__ import annotations

import json
from typing import Any

from conveyor.errors import ToolTimeout
from conveyor.scanners.base import (
    ScanContext,
    ScannerSpec,
    execute,
    find_tool,
    line_of,
    missing,
)
from conveyor.scanners.model import Finding, ScannerRun, normalize_severity

NAME = "npm-audit"
LOCK = "package-lock.json"


class Unavailable(Exception):
    pass


def _installed(lock: dict[str, Any], name: str) -> str:
    packages = lock.get("packages") or {}
    return str((packages.get(f"node_modules/{name}") or {}).get("version", "?"))


def parse(
    data: dict[str, Any], folder: str, lock: dict[str, Any], ctx: ScanContext
) -> list[Finding]:
    findings = []
    lock_path = f"{folder}/{LOCK}" if folder not in ("", ".") else LOCK
    for name, vuln in (data.get("vulnerabilities") or {}).items():
        version = _installed(lock, name)
        fix = vuln.get("fixAvailable")
        if isinstance(fix, dict):
            hint = f"upgrade {fix.get('name', name)} to {fix.get('version', '?')}"
        else:
            hint = "run `npm audit fix`" if fix else "no fix available"
        for via in vuln.get("via") or []:
            if not isinstance(via, dict):
                continue  # "via": ["other-package"]: reported under that package itself
            advisory = str(via.get("url", "")).rstrip("/").rsplit("/", 1)[-1]
            rule = advisory or f"npm-{via.get('source', '?')}"
            findings.append(
                Finding(
                    scanner=NAME,
                    rule=rule,
                    severity=normalize_severity(via.get("severity") or vuln.get("severity")),
                    location=f"{name}@{version}",
                    message=f"{via.get('title', 'vulnerability')} "
                    f"(affects {via.get('range', '?')})",
                    fix=hint,
                    path=lock_path,
                    line=line_of(ctx.root / lock_path, f'"node_modules/{name}"'),
                    help_uri=str(via.get("url", "")),
                    title=str(via.get("title", "")),
                    component=folder,
                )
            )
    return findings


def _audit(npm: str, folder: str, ctx: ScanContext) -> list[Finding]:
    cwd = ctx.root / folder
    result = execute([npm, "audit", "--json"], cwd=cwd, timeout=ctx.timeout)
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise Unavailable(f"{folder}: npm audit gave no report ({result.tail(1)})") from None
    error = data.get("error") if isinstance(data.get("error"), dict) else None
    if "message" in data and "vulnerabilities" not in data:
        raise Unavailable(f"{folder}: the registry's audit endpoint failed: {data['message']}")
    if error is not None:
        raise Unavailable(f"{folder}: npm audit failed: {error.get('summary') or error}")
    if result.returncode not in (0, 1) or "vulnerabilities" not in data:
        raise RuntimeError(f"{folder}: exit {result.returncode}: {result.tail()}")
    lock = json.loads((cwd / LOCK).read_text(encoding="utf-8"))
    return parse(data, folder, lock, ctx)


def run(ctx: ScanContext) -> ScannerRun:
    folders = [p for p in ctx.option("paths") if (ctx.root / p / LOCK).is_file()]
    if not ctx.option("paths"):
        return ScannerRun.completed(NAME, [], notes=["no npm projects configured"])
    if not folders:
        return ScannerRun.error(
            NAME, f"no {LOCK} in {', '.join(ctx.option('paths'))} — run `npm install` there"
        )
    npm = find_tool("npm")
    if npm is None:
        return missing(NAME, "npm", "install Node.js 20 and npm")
    findings: list[Finding] = []
    try:
        for folder in folders:
            findings += _audit(npm, folder, ctx)
    except Unavailable as exc:
        return ScannerRun.unavailable(NAME, str(exc))
    except ToolTimeout as exc:
        return ScannerRun.unavailable(NAME, f"the registry did not answer: {exc}")
    except RuntimeError as exc:
        return ScannerRun.error(NAME, str(exc))
    return ScannerRun.completed(NAME, findings, notes=[f"audited: {', '.join(folders)}"])


SPEC = ScannerSpec(
    name=NAME,
    description="known vulnerabilities in locked npm packages (npm audit, needs the registry)",
    run=run,
    options={"paths": ["frontend"]},
)
