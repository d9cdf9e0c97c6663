"""One scan: pick the scanners, run them side by side, judge, report, record.

Scanners are independent processes, so they run concurrently in threads (the wall time is the
slowest scanner, not the sum); only trivy invocations queue on trivy's cache lock.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

from conveyor.scanners import gate, report, trivy_image
from conveyor.scanners.base import ScanContext, ScannerSpec
from conveyor.scanners.model import GateContext, ScannerRun
from conveyor.scanners.policy import Policy
from conveyor.scanners.redact import redact
from conveyor.scanners.registry import DISTRIBUTIONS, REGISTRY, spec

ENV_CACHE = "CONVEYOR_CACHE_DIR"
MAX_WORKERS = 8


def cache_dir(root: Path) -> Path:
    """``$CONVEYOR_CACHE_DIR``, else ``<project>/.conveyor/cache`` (git-ignored)."""
    override = os.environ.get(ENV_CACHE)
    return Path(override) if override else root / ".conveyor" / "cache"


@dataclass
class Selection:
    specs: list[ScannerSpec]
    left_out: list[str] = field(default_factory=list)


def select(policy: Policy, names: Sequence[str], *, artifacts: Path | None) -> Selection:
    """The scanners to run, and the required ones a narrowed selection leaves out."""
    wanted = [spec(name) for name in names]  # unknown names fail here, with a hint
    default = [
        s for s in REGISTRY
        if policy.scanner(s.name).enabled and (artifacts is not None or not s.needs_artifacts)
    ]  # fmt: skip
    chosen = wanted or default
    left_out = [s.name for s in default if policy.scanner(s.name).required and s not in chosen]
    return Selection(chosen, left_out)


def _version(name: str) -> str:
    distribution = DISTRIBUTIONS.get(name)
    if distribution is None:
        return ""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


def run_one(scanner: ScannerSpec, ctx: ScanContext) -> ScannerRun:
    """Run one scanner; a bug in conveyor's own code is an ``error``, not a crash of the gate."""
    started = time.monotonic()
    try:
        result = scanner.run(ctx)
    except Exception as exc:  # reported as the scanner's error status
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        result = ScannerRun.error(
            scanner.name,
            f"internal error {type(exc).__name__}: {redact(str(exc))[:200]} "
            f"({Path(frame.filename).name}:{frame.lineno})",
        )
    result.duration = time.monotonic() - started
    result.version = result.version or _version(scanner.name)
    return result


def run_all(
    selection: Selection,
    policy: Policy,
    *,
    cache: Path,
    artifacts: Path | None,
    say: Callable[[str], None],
) -> list[ScannerRun]:
    contexts = {}
    for scanner in selection.specs:
        rules = policy.scanner(scanner.name)
        contexts[scanner.name] = ScanContext(
            root=policy.root,
            cache=cache,
            options=rules.options,
            exclude=policy.exclude,
            artifacts=artifacts,
            timeout=rules.timeout,
        )
    results: dict[str, ScannerRun] = {}
    workers = max(1, min(MAX_WORKERS, len(selection.specs)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scan") as pool:
        futures = {pool.submit(run_one, s, contexts[s.name]): s for s in selection.specs}
        for future in as_completed(futures):
            scanner = futures[future]
            result = future.result()
            result.required = policy.scanner(scanner.name).required
            results[scanner.name] = result
            found = f", {len(result.findings)} finding(s)" if result.findings else ""
            say(f"  {scanner.name}: {redact(result.label)}{found} ({result.duration:.1f} s)")
    return [results[s.name] for s in selection.specs]


@dataclass
class ScanOutcome:
    runs: list[ScannerRun]
    verdict: gate.Verdict
    reports: dict[str, Path]
    images: dict[str, Any]
    step_summary: Path | None


def scan(
    policy: Policy,
    *,
    context: GateContext,
    names: Sequence[str] = (),
    artifacts: Path | None = None,
    reports_dir: Path | None = None,
    today: date | None = None,
    say: Callable[[str], None] = print,
) -> ScanOutcome:
    """Run the selected scanners, apply the gate, write the reports and image results."""
    selection = select(policy, names, artifacts=artifacts)
    cache = cache_dir(policy.root)
    say(
        f"Scanning {policy.root.name} (context {context}, fail on {policy.fail_on}+): "
        + ", ".join(s.name for s in selection.specs)
    )
    runs = run_all(selection, policy, cache=cache, artifacts=artifacts, say=say)
    verdict = gate.evaluate(
        runs, policy, context, today or date.today(), left_out=selection.left_out
    )
    images: dict[str, Any] = {}
    for run in runs:
        if run.scanner == trivy_image.NAME and run.extra.get("images"):
            images = trivy_image.record(run, verdict)
    folder = reports_dir or policy.root / policy.reports
    paths = report.write(folder, runs, verdict, project=policy.root.name, images=images)
    step = report.append_step_summary(paths["summary"].read_text(encoding="utf-8"))
    return ScanOutcome(runs, verdict, paths, images, step)
