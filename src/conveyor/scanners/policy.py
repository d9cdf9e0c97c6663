"""The gate policy: ``[tool.conveyor.scan]`` in the scanned project's ``pyproject.toml``.

```toml
[tool.conveyor.scan]
fail_on = "medium"                 # lowest severity that fails the gate
reports = "reports/scan"           # where results.sarif, findings.json, summary.md go
exclude = ["tests/fixtures/planted"]

[tool.conveyor.scan.unavailable]   # a *required* scanner that could not run, per context
pr = "warn"
main = "fail"
production = "fail"

[tool.conveyor.scan.scanners.npm-audit]
required = false                   # optional scanners only ever warn
paths = ["frontend"]               # scanner-specific options (see `conveyor scan --list`)

[[tool.conveyor.scan.allow]]
id = "PYSEC-2018-28"               # rule id or alias (CVE, GHSA…)
scanner = "pip-audit"              # optional: only this scanner's findings
location = "requests@*"            # optional: fnmatch pattern on the finding's location
reason = "only used against our own server"
expires = 2026-12-31               # required; an expired entry fails the gate
```

Everything is validated when loaded, naming the key path and, for a typo, the closest name.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from conveyor.errors import ConfigError, UsageError
from conveyor.scanners.base import ScannerSpec
from conveyor.scanners.model import CONTEXTS, SEVERITIES, Finding, GateContext
from conveyor.tomltable import TomlTable, did_you_mean

PYPROJECT = "pyproject.toml"
TABLE = "tool.conveyor.scan"
ON_UNAVAILABLE = ("fail", "warn")
DEFAULT_UNAVAILABLE: dict[GateContext, str] = {"pr": "warn", "main": "fail", "production": "fail"}
ENV_CONTEXT = "CONVEYOR_SCAN_CONTEXT"


def default_context(environ: Mapping[str, str] | None = None) -> GateContext:
    """The context a scan runs in when ``--context`` is not given.

    - ``$CONVEYOR_SCAN_CONTEXT`` wins when set.
    - In GitHub Actions (``GITHUB_ACTIONS=true``): a ``pull_request``, ``pull_request_target``
      or ``merge_group`` event is ``pr``; a tag ref (``refs/tags/…``) is ``production``, since
      tags are what gets released; anything else — a push to main, a schedule, a manual run — is
      ``main``. CI fails closed unless it is clearly looking at a proposal.
    - Another CI (``CI`` set to a true value, as ``.ci/run`` does): ``main`` — it gates what
      lands, and cannot tell a proposal apart.
    - Anywhere else (a developer's machine) it is ``pr``: a laptop may be offline, so an
      unavailable scanner warns instead of blocking work; CI enforces the strict contexts.
    """
    env = os.environ if environ is None else environ
    forced = env.get(ENV_CONTEXT, "").strip()
    if forced:
        if forced not in CONTEXTS:
            raise UsageError(
                f"{ENV_CONTEXT}={forced}: unknown context (allowed: {', '.join(CONTEXTS)})"
                + did_you_mean(forced, CONTEXTS)
            )
        return forced
    if env.get("GITHUB_ACTIONS") != "true":
        ci = env.get("CI", "").strip().lower()
        return "main" if ci and ci not in ("0", "false", "no") else "pr"
    event = env.get("GITHUB_EVENT_NAME", "")
    if event in ("pull_request", "pull_request_target", "merge_group"):
        return "pr"
    if env.get("GITHUB_REF", "").startswith("refs/tags/"):
        return "production"
    return "main"


@dataclass(frozen=True)
class AllowEntry:
    """A suppression: which finding, why, and until when."""

    id: str
    reason: str
    expires: date
    scanner: str | None = None
    location: str | None = None

    def matches(self, finding: Finding) -> bool:
        if self.scanner and self.scanner != finding.scanner:
            return False
        if self.id.lower() not in {i.lower() for i in finding.ids}:
            return False
        return self.location is None or fnmatch.fnmatchcase(finding.location, self.location)

    def expired(self, today: date) -> bool:
        return today > self.expires

    def describe(self) -> str:
        where = "".join(
            f" {k}={v}" for k, v in (("scanner", self.scanner), ("location", self.location)) if v
        )
        return f"{self.id}{where} (expires {self.expires.isoformat()}: {self.reason})"


@dataclass(frozen=True)
class ScannerPolicy:
    name: str
    enabled: bool
    required: bool
    timeout: float
    options: dict[str, Any]


@dataclass(frozen=True)
class Policy:
    root: Path
    source: str
    fail_on: str = "medium"
    reports: Path = Path("reports/scan")
    exclude: tuple[str, ...] = ()
    unavailable: dict[GateContext, str] = field(default_factory=lambda: dict(DEFAULT_UNAVAILABLE))
    scanners: dict[str, ScannerPolicy] = field(default_factory=dict)
    allow: tuple[AllowEntry, ...] = ()

    def scanner(self, name: str) -> ScannerPolicy:
        return self.scanners[name]


def _allow_entry(raw: Any, index: int, source: str, scanners: Sequence[str]) -> AllowEntry:
    table = TomlTable(raw, f"{TABLE}.allow[{index}]", source)
    for key in ("id", "reason", "expires"):
        if key not in table.data:
            raise table.error(
                key, "required key is missing (every allowlist entry needs id, reason and expires)"
            )
    ident, reason = table.string("id").strip(), table.string("reason").strip()
    scanner = table.value("scanner", None)
    location = table.value("location", None)
    expires = table.value("expires", None)
    table.finish()
    if not ident or not reason:
        raise table.error("reason" if ident else "id", "must not be empty")
    if isinstance(expires, str):
        try:
            expires = date.fromisoformat(expires)
        except ValueError:
            raise table.error("expires", f"{expires!r} is not a date (YYYY-MM-DD)") from None
    if not isinstance(expires, date):
        raise table.error("expires", f"expected a date (YYYY-MM-DD), got {expires!r}")
    if scanner is not None and scanner not in scanners:
        raise table.error(
            "scanner",
            f"unknown scanner {scanner!r} (known: {', '.join(scanners)})"
            + did_you_mean(str(scanner), scanners),
        )
    if location is not None and not isinstance(location, str):
        raise table.error("location", f"expected a string pattern, got {location!r}")
    return AllowEntry(ident, reason, expires, scanner, location)


def parse(
    data: Mapping[str, Any], root: Path, source: str, registry: Sequence[ScannerSpec]
) -> Policy:
    """Validate the ``[tool.conveyor.scan]`` table (``data``) against the scanner registry."""
    top = TomlTable(data, TABLE, source)
    fail_on = top.string("fail_on", "medium", choices=SEVERITIES)
    reports = Path(top.string("reports", "reports/scan"))
    exclude = tuple(e.strip("/") for e in top.string_list("exclude", []))

    unavailable = dict(DEFAULT_UNAVAILABLE)
    ctx_table = top.table("unavailable")
    for context in CONTEXTS:
        unavailable[context] = ctx_table.string(
            context, unavailable[context], choices=ON_UNAVAILABLE
        )
    ctx_table.finish()

    scanners_table = top.table("scanners")
    scanners: dict[str, ScannerPolicy] = {}
    for spec in registry:
        table = scanners_table.table(spec.name)
        scanners[spec.name] = ScannerPolicy(
            name=spec.name,
            enabled=table.boolean("enabled", True),
            required=table.boolean("required", spec.required),
            timeout=table.positive("timeout", spec.timeout),
            options={
                key: table.string(key, default, choices=spec.choices[key])
                if key in spec.choices
                else _option(table, key, default)
                for key, default in spec.options.items()
            },
        )
        table.finish()
    scanners_table.finish()

    raw_allow = top.value("allow", [])
    if not isinstance(raw_allow, list):
        raise top.error("allow", "expected an array of tables ([[tool.conveyor.scan.allow]])")
    names = [spec.name for spec in registry]
    allow = tuple(_allow_entry(raw, i, source, names) for i, raw in enumerate(raw_allow))
    top.finish()
    return Policy(
        root=root,
        source=source,
        fail_on=fail_on,
        reports=reports,
        exclude=exclude,
        unavailable=unavailable,
        scanners=scanners,
        allow=allow,
    )


def _option(table: TomlTable, key: str, default: Any) -> Any:
    """A scanner option, typed like its default."""
    if isinstance(default, bool):
        return table.boolean(key, default)
    if isinstance(default, int | float):
        return table.positive(key, default)
    if isinstance(default, list):
        return table.string_list(key, default)
    return table.string(key, default)


def find_project(start: Path | None = None) -> Path:
    """The nearest folder (from ``start`` upwards) holding a ``pyproject.toml``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PYPROJECT).is_file():
            return folder
    raise UsageError(f"no {PYPROJECT} in {here} or above — run from the project, or pass --project")


def load(root: Path, registry: Sequence[ScannerSpec]) -> Policy:
    """Read ``root/pyproject.toml``; a missing table means the defaults."""
    path = root / PYPROJECT
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist — pass --project DIR") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    data: Any = document
    for key in TABLE.split("."):
        data = data.get(key, {}) if isinstance(data, Mapping) else {}
    return parse(data, root, path.name, registry)
