"""A release: the set of image IDs a deploy runs, where it came from, and how it is found.

A release is found in ``dist/<version>/`` (a build's sealed manifest and its scan verdict) or
in a ledger record (what a rollback returns to and a promotion ships). Either way it is named
by its **release key**, the sha256 of the sorted ``service=image-id`` lines: approvals and the
gate are bound to exactly those images, never to a version string. No engine is needed here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from conveyor import artifacts, flags, images
from conveyor.config import Config, Environment
from conveyor.errors import ArtifactError
from conveyor.ledger import ReleaseRecord
from conveyor.scanners import gate

SHOWN = 16  # hex digits of a release key shown to people


@dataclass(frozen=True)
class ServiceImage:
    """What one service of a release runs."""

    service: str
    image_id: str
    reference: str
    version: str


@dataclass(frozen=True)
class Release:
    """A deployable set of images and where it came from."""

    version: str
    commit: str
    dirty: bool
    images: dict[str, ServiceImage]
    source: str
    scan: dict[str, Any] | None = None
    commit_time: int | None = None
    # Per service, the migration chain its image carries, base first: (revision, kind) pairs,
    # from the build's preview or the record that deployed it; absent when unknown.
    chains: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    # Per image with feature flags, the definitions built with this release (flagd's format).
    flags: dict[str, flags.Definitions] = field(default_factory=dict)

    def digests(self) -> dict[str, str]:
        return {name: img.image_id for name, img in self.images.items()}

    def expand_head(self, service: str) -> str | None:
        """The revision the release's ``expand`` step reaches (its trailing contracts left)."""
        chain = list(self.chains.get(service, ()))
        while chain and chain[-1][1] != "expand":
            chain.pop()
        return chain[-1][0] if chain else None


def release_key(digests: Mapping[str, str]) -> str:
    """The sha256 of the sorted ``service=image-id`` lines: what an approval is bound to."""
    lines = "".join(f"{service}={image_id}\n" for service, image_id in sorted(digests.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def short(key: str) -> str:
    """A release key as people see it."""
    return key[:SHOWN]


def describe_digests(digests: Mapping[str, str]) -> str:
    return ", ".join(f"{s} {i.removeprefix('sha256:')[:12]}" for s, i in sorted(digests.items()))


def for_services(release: Release, services: Iterable[str]) -> Release:
    """The part of ``release`` an environment runs: its services' images only."""
    wanted = set(services)
    return replace(release, images={n: i for n, i in release.images.items() if n in wanted})


# --- finding a release ---------------------------------------------------------------------


def scan_verdict(manifest: dict[str, Any], env: Environment, *, signed: bool) -> dict[str, Any]:
    """The scan verdict of ``env``'s images in a manifest, bound to their image IDs
    (:func:`conveyor.scanners.gate.release_scan`). With CONVEYOR_LEDGER_KEY set, a verdict
    in a manifest that is not signed with it is not trusted: no scan at all."""
    verdict = gate.release_scan(
        manifest, {name: service.image for name, service in env.services.items()}
    )
    if verdict["passed"] is not None and artifacts.signing_key() is not None and not signed:
        return {
            "passed": None,
            "why": f"the manifest's scan verdict is not signed with {artifacts.KEY_VARIABLE} "
            f"(its seal is a plain checksum) — rescan with the key set",
        }
    return verdict


def release_from_dist(config: Config, env: Environment, version: str | None) -> Release:
    """A release from dist/<version>/: checksums and seal verified, images known, and the
    scan verdict of exactly these image IDs (a failed one is refused here, for every env)."""
    folder = artifacts.dist_folder(config, version)
    manifest = artifacts.verify(folder)
    signed = artifacts.check_seal(folder) == artifacts.SIGNED
    scan = scan_verdict(manifest, env, signed=signed)
    if scan["passed"] is False:
        raise ArtifactError(f"{manifest['version']}: {scan['why']} — fix the findings and rescan")
    found: dict[str, ServiceImage] = {}
    chains: dict[str, tuple[tuple[str, str], ...]] = {}
    for name, service in env.services.items():
        entry = manifest.get("images", {}).get(service.image)
        if not entry:
            raise ArtifactError(
                f"{folder.name} has no '{service.image}' image — run `nox -s image`"
            )
        found[name] = ServiceImage(
            service=name,
            image_id=entry["id"],
            reference=images.image_reference(entry),
            version=manifest["version"],
        )
        preview = (manifest.get("migrations") or {}).get(service.image) or {}
        if preview.get("image_id") == entry["id"] and preview.get("revisions"):
            chains[name] = tuple((str(r["revision"]), str(r["kind"])) for r in preview["revisions"])
    return Release(
        version=manifest["version"],
        commit=manifest["commit"],
        dirty=bool(manifest.get("dirty")),
        images=found,
        source=f"{config.build.dist_dir}/{folder.name}",
        scan=scan,
        commit_time=manifest.get("source_date_epoch"),
        chains=chains,
        flags=_flag_definitions(folder, env),
    )


def _flag_definitions(folder: Path, env: Environment) -> dict[str, flags.Definitions]:
    """The flag files the build stored (checked against the manifest already), per image."""
    found = {}
    for image in sorted({s.image for s in env.services.values() if s.flags}):
        path = folder / flags.dist_name(image)
        if not path.is_file():
            raise ArtifactError(
                f"{folder.name} has no {path.name}, though image '{image}' declares flags — "
                "run `nox -s build`"
            )
        found[image] = flags.load(path)
    return found


def release_from_record(record: ReleaseRecord, *, source: str | None = None) -> Release:
    """The release a ledger record ran (what rollback returns to and promotion ships)."""
    return Release(
        version=record.version,
        commit=record.commit,
        dirty=record.dirty,
        images={
            name: ServiceImage(
                service=name,
                image_id=str(svc["image_id"]),
                reference=str(svc.get("reference") or svc["image_id"]),
                version=str(svc.get("version", record.version)),
            )
            for name, svc in record.services.items()
        },
        source=source or f"ledger {record.id}",
        scan=record.scan,
        commit_time=record.commit_time,
        chains={
            name: tuple((str(r["revision"]), str(r["kind"])) for r in entry["chain"])
            for name, entry in record.schema.items()
            if entry.get("chain")
        },
        flags=dict(record.flags.get("definitions") or {}),
    )
