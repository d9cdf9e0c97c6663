"""Apply the policy to the scanner runs: one verdict, with every reason spelled out.

The gate fails when any of these holds:

- a finding at or above ``fail_on`` that no live allowlist entry covers;
- an allowlist entry has expired (named, so it gets fixed or renewed on purpose);
- a required scanner crashed (``error``) — in every context, since a crash can hide anything;
- a required scanner was ``unavailable`` and the context says ``fail`` (main, production);
- in a context that fails closed, a required scanner was left out of a narrowed selection.

Optional scanners that could not run only add warnings. Nothing is ever "clean" by omission.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from conveyor.errors import ConveyorError
from conveyor.scanners.model import Finding, GateContext, ScannerRun, Status, at_least
from conveyor.scanners.policy import AllowEntry, Policy


class ScanGateFailed(ConveyorError):
    """The security gate failed; the reports say why."""


class ScanNotPassed(ConveyorError):
    """An image's recorded scan did not pass (``failed``), or there is no scan of this image."""

    def __init__(self, message: str, *, failed: bool = False) -> None:
        super().__init__(message)
        self.failed = failed


@dataclass(frozen=True)
class Decision:
    finding: Finding
    allowed_by: AllowEntry | None
    blocking: bool


@dataclass
class Verdict:
    context: GateContext
    fail_on: str
    passed: bool
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)

    @property
    def blocking(self) -> list[Decision]:
        return [d for d in self.decisions if d.blocking]

    @property
    def allowed(self) -> list[Decision]:
        return [d for d in self.decisions if d.allowed_by is not None]


def evaluate(
    runs: Sequence[ScannerRun],
    policy: Policy,
    context: GateContext,
    today: date,
    *,
    left_out: Sequence[str] = (),
) -> Verdict:
    """The verdict for ``runs`` under ``policy`` in ``context`` on ``today``."""
    verdict = Verdict(context=context, fail_on=policy.fail_on, passed=False)
    live = [entry for entry in policy.allow if not entry.expired(today)]
    used: set[AllowEntry] = set()
    for entry in policy.allow:
        if entry.expired(today):
            verdict.failures.append(
                f"allowlist entry {entry.describe()} has expired — fix the finding or renew "
                f"the entry with a new reason"
            )
    for run in runs:
        for finding in run.findings:
            allowed_by = next((entry for entry in live if entry.matches(finding)), None)
            if allowed_by is not None:
                used.add(allowed_by)
            blocks = allowed_by is None and at_least(finding.severity, policy.fail_on)
            verdict.decisions.append(Decision(finding, allowed_by, blocks))
        _judge_status(run, policy, context, verdict)
    blocking = verdict.blocking
    if blocking:
        by_scanner: dict[str, int] = {}
        for decision in blocking:
            by_scanner[decision.finding.scanner] = by_scanner.get(decision.finding.scanner, 0) + 1
        detail = ", ".join(f"{name} {count}" for name, count in sorted(by_scanner.items()))
        verdict.failures.append(
            f"{len(blocking)} finding(s) at {policy.fail_on} or above not allowlisted ({detail})"
        )
    for entry in live:
        if entry not in used:
            verdict.warnings.append(f"allowlist entry {entry.describe()} matched no finding")
    if left_out:
        message = f"required scanner(s) not run in this selection: {', '.join(left_out)}"
        if policy.unavailable[context] == "fail":
            verdict.failures.append(f"{message} — context {context} needs the full gate")
        else:
            verdict.warnings.append(message)
    verdict.passed = not verdict.failures
    return verdict


def _judge_status(run: ScannerRun, policy: Policy, context: GateContext, verdict: Verdict) -> None:
    verdict.warnings.extend(f"{run.scanner}: {warning}" for warning in run.warnings)
    if run.ran:
        return
    kind = "required" if run.required else "optional"
    line = f"{kind} scanner {run.scanner} is {run.label}"
    if not run.required:
        verdict.warnings.append(line)
    elif run.status is Status.ERROR:
        verdict.failures.append(line)
    elif policy.unavailable[context] == "fail":
        verdict.failures.append(f"{line} — context {context} fails closed")
    else:
        verdict.warnings.append(f"{line} — context {context} only warns")


def require_passed_scan(manifest: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The scan record of image ``name`` in a release manifest, if it passed the gate.

    The one check of a recorded image scan. A verdict counts only for the image it names: one
    of another image ID (or another registry digest) is no scan of this image. Raises
    ``ScanNotPassed`` — with ``failed`` set when the scan of this very image failed.
    """
    entry = manifest.get("images", {}).get(name)
    version = manifest.get("version", "?")
    if not isinstance(entry, Mapping):
        raise ScanNotPassed(f"release {version} has no image {name!r}")
    scan = entry.get("scan")
    if not isinstance(scan, Mapping) or "passed" not in scan:
        raise ScanNotPassed(
            f"image {name} of {version} was never scanned — run "
            f"`nox -s scan -- --artifacts dist/{version}`"
        )
    if scan.get("image_id") != entry.get("id"):
        raise ScanNotPassed(
            f"image {name} of {version} changed since its scan, so there is no scan of it "
            f"({str(scan.get('image_id'))[:19]} scanned, {str(entry.get('id'))[:19]} recorded)"
        )
    if entry.get("digest") and scan.get("digest") and scan["digest"] != entry["digest"]:
        raise ScanNotPassed(
            f"image {name} of {version}: the registry digest changed since its scan "
            f"({str(scan['digest'])[:19]} scanned, {str(entry['digest'])[:19]} recorded)"
        )
    if scan.get("passed") is not True:
        reasons = "; ".join(scan.get("failures", [])) or "see reports/scan/summary.md"
        raise ScanNotPassed(
            f"image {name} of {version} did not pass its scan: {reasons}", failed=True
        )
    return dict(scan)


def release_scan(manifest: Mapping[str, Any], images: Mapping[str, str]) -> dict[str, Any]:
    """The scan verdict of a release as a deploy records it in the ledger.

    ``images`` maps each service to its image's name in the manifest. ``passed`` is True (each
    image passed, and ``images`` names the IDs scanned), False (one failed) or None (one has
    no scan of its current image ID: "no scan for these images").
    """
    scanned: dict[str, dict[str, str]] = {}
    failed: list[str] = []
    missing: list[str] = []
    for service, name in sorted(images.items()):
        try:
            scan = require_passed_scan(manifest, name)
        except ScanNotPassed as exc:
            (failed if exc.failed else missing).append(str(exc))
            continue
        scanned[service] = {"image_id": str(scan["image_id"])}
        if scan.get("digest"):
            scanned[service]["digest"] = str(scan["digest"])
    if failed:
        return {"passed": False, "why": "; ".join(failed), "images": scanned}
    if missing:
        return {"passed": None, "why": "no scan for these images: " + "; ".join(missing)}
    return {"passed": True, "why": "scan gate passed for these image IDs", "images": scanned}


def scan_covers(scan: Mapping[str, Any] | None, digests: Mapping[str, str]) -> str | None:
    """Why a recorded release verdict does not let ``digests`` (service → image ID) through;
    None when it passed for exactly those image IDs."""
    if not scan or scan.get("passed") is None:
        return str((scan or {}).get("why") or "no scan recorded")
    if scan.get("passed") is not True:
        return str(scan.get("why") or "the scan gate failed")
    named = scan.get("images")
    named = named if isinstance(named, Mapping) else {}
    wrong = [
        service
        for service, image_id in sorted(digests.items())
        if not isinstance(named.get(service), Mapping) or named[service].get("image_id") != image_id
    ]
    if wrong:
        return (
            f"no scan for these images: the recorded verdict does not name the image IDs of "
            f"{', '.join(wrong)}"
        )
    return None
