"""The artifact store: every built version kept with its manifest, listed, and pruned safely.

A local directory always (``[artifacts] path``); with ``store = "registry"`` each version is
also pushed to the configured registry as an OCI artifact (with oras), next to its images.
Retention keeps the newest ``keep`` versions and never deletes one that an environment's
ledger says is live or is the rollback target; if a ledger cannot be read, nothing is pruned.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor import artifacts, ledger
from conveyor.config import Config
from conveyor.errors import ArtifactError, ConveyorError, RegistryError

ARTIFACT_REPOSITORY = "artifacts"
ANNOTATION_VERSION = "org.opencontainers.image.version"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_IMAGES = "dev.conveyor.images"
TITLE = "org.opencontainers.image.title"


@dataclass(frozen=True)
class StoredVersion:
    version: str
    build_time: str
    stored_at: float
    manifest_sha256: str
    images: dict[str, str]
    where: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "build_time": self.build_time,
            "stored_at": self.stored_at,
            "manifest_sha256": self.manifest_sha256,
            "images": self.images,
            "where": self.where,
        }


def _image_digests(manifest: dict[str, Any]) -> dict[str, str]:
    return {
        name: str(entry.get("digest") or entry.get("id", ""))
        for name, entry in sorted(manifest.get("images", {}).items())
    }


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def publish(self, folder: Path) -> StoredVersion:
        manifest = artifacts.verify(folder)
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / manifest["version"]
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
        for path in folder.iterdir():
            if path.is_file():
                shutil.copy2(path, staging / path.name)
        (staging / ".stored_at").write_text(f"{time.time():.3f}")
        # Swap in whole: a reader sees the old copy or the new one, never a mix.
        if target.exists():
            old = self.root / f".old-{target.name}-{os.getpid()}"
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old)
        else:
            staging.rename(target)
        return self._describe(target)

    def _describe(self, folder: Path) -> StoredVersion:
        manifest = artifacts.read_manifest(folder)
        stamp = folder / ".stored_at"
        return StoredVersion(
            version=manifest["version"],
            build_time=manifest.get("build_time", ""),
            stored_at=float(stamp.read_text()) if stamp.exists() else folder.stat().st_mtime,
            manifest_sha256=artifacts.sha256_file(folder / artifacts.MANIFEST),
            images=_image_digests(manifest),
            where=str(folder),
        )

    def list(self) -> list[StoredVersion]:
        if not self.root.is_dir():
            return []
        found = []
        for folder in self.root.iterdir():
            if (
                folder.is_dir()
                and not folder.name.startswith(".")
                and (folder / artifacts.MANIFEST).exists()
            ):
                found.append(self._describe(folder))
        return found

    def delete(self, version: str) -> None:
        shutil.rmtree(self.root / version)

    def fetch(self, version: str, into: Path) -> Path:
        source = self.root / version
        if not source.is_dir():
            raise ArtifactError(f"version {version} is not in the local store {self.root}")
        target = into / version
        shutil.copytree(source, target, ignore=shutil.ignore_patterns(".stored_at"))
        return target


class RegistryStore:
    """Versions as OCI artifacts in ``<registry>/<prefix>/artifacts:<image tag>``."""

    def __init__(self, registry: str, prefix: str) -> None:
        import oras.client  # noqa: PLC0415 - optional heavy import, only with a registry

        self.registry = registry
        self.repository = f"{registry}/{prefix}/{ARTIFACT_REPOSITORY}"
        insecure = registry.startswith(("127.0.0.1", "localhost"))
        self.client = oras.client.OrasClient(hostname=registry, insecure=insecure)

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # oras raises requests, ValueError and its own errors
            raise RegistryError(
                f"artifact store {self.repository}: {what} failed ({str(exc)[:160]}) — is the "
                f"registry running? The local store is intact"
            ) from None

    def publish(self, folder: Path) -> StoredVersion:
        manifest = artifacts.verify(folder)
        files = [str(p) for p in sorted(folder.iterdir()) if p.is_file()]
        target = f"{self.repository}:{manifest['image_tag']}"
        annotations = {
            ANNOTATION_VERSION: manifest["version"],
            ANNOTATION_CREATED: manifest.get("build_time", ""),
            ANNOTATION_IMAGES: json.dumps(_image_digests(manifest), sort_keys=True),
        }
        self._call(
            "push",
            lambda: self.client.push(
                target=target,
                files=files,  # layers are titled with each file's base name
                manifest_annotations=annotations,
                disable_path_validation=True,
                quiet=True,
            ),
        )
        return self._describe(manifest["image_tag"])

    def _describe(self, tag: str) -> StoredVersion:
        target = f"{self.repository}:{tag}"
        manifest = self._call("reading a manifest", lambda: self.client.get_manifest(target))
        notes = manifest.get("annotations", {})
        # The layer holding manifest.json has the same sha256 as the local copy's manifest.
        layers: list[dict[str, Any]] = manifest.get("layers", [])
        layer = next(
            (x for x in layers if x.get("annotations", {}).get(TITLE) == artifacts.MANIFEST), {}
        )
        return StoredVersion(
            version=notes.get(ANNOTATION_VERSION, tag),
            build_time=notes.get(ANNOTATION_CREATED, ""),
            stored_at=0.0,
            manifest_sha256=str(layer.get("digest", "")).removeprefix("sha256:"),
            images=json.loads(notes.get(ANNOTATION_IMAGES, "{}")),
            where=target,
        )

    def list(self) -> list[StoredVersion]:
        tags = self._call("listing tags", lambda: self.client.get_tags(self.repository))
        return [self._describe(tag) for tag in tags or []]

    def delete(self, version: str) -> None:
        tag = version.replace("+", "-")
        self._call("deleting", lambda: self.client.delete_tag(self.repository, tag))

    def fetch(self, version: str, into: Path) -> Path:
        target = into / version
        target.mkdir(parents=True)
        tag = version.replace("+", "-")
        self._call(
            "pull", lambda: self.client.pull(target=f"{self.repository}:{tag}", outdir=str(target))
        )
        return target


def stores(config: Config) -> list[LocalStore | RegistryStore]:
    local = LocalStore(config.root / config.artifacts.path)
    if config.artifacts.store != "registry":
        return [local]
    registry = config.registry_url()
    if not registry:
        raise ConveyorError(
            "deploy.toml [artifacts] store = 'registry' but no registry is configured — set "
            "[registry] url or CONVEYOR_REGISTRY"
        )
    return [local, RegistryStore(registry, config.registry.prefix)]


def publish(config: Config, folder: Path) -> list[StoredVersion]:
    return [store.publish(folder) for store in stores(config)]


def select_for_deletion(
    versions: Iterable[StoredVersion], keep: int, protected: set[str]
) -> list[StoredVersion]:
    """Everything but the newest ``keep`` versions, minus the protected ones."""
    ordered = sorted(versions, key=lambda v: (v.build_time, v.stored_at, v.version), reverse=True)
    return [v for v in ordered[keep:] if v.version not in protected]


def protected_versions(
    config: Config, read_records: Callable[[str], list[Any]]
) -> tuple[set[str], dict[str, str]]:
    """Versions live or kept for rollback in any environment, and environments not readable."""
    protected: set[str] = set()
    unreadable: dict[str, str] = {}
    for name in config.environments:
        try:
            records = read_records(name)
        except ConveyorError as exc:
            unreadable[name] = str(exc)
            continue
        for record in (ledger.current_live(records), ledger.previous_live(records)):
            if record is not None:
                protected.add(record.version)
    return protected, unreadable


def prune(
    config: Config,
    read_records: Callable[[str], list[Any]],
    *,
    keep: int | None = None,
    dry_run: bool = False,
    say: Callable[[str], None] = print,
) -> list[str]:
    """Delete old versions from every store; returns what was (or would be) deleted."""
    protected, unreadable = protected_versions(config, read_records)
    if unreadable:
        names = ", ".join(f"{n} ({why})" for n, why in unreadable.items())
        raise ConveyorError(
            f"cannot read the ledger of {names}: nothing pruned, since a live or rollback "
            f"version could be deleted"
        )
    limit = config.artifacts.keep if keep is None else keep
    deleted: list[str] = []
    for store in stores(config):
        for version in select_for_deletion(store.list(), limit, protected):
            verb = "would delete" if dry_run else "deleting"
            say(f"{verb} {version.version} from {version.where}")
            if not dry_run:
                store.delete(version.version)
            deleted.append(version.version)
    if protected:
        say(f"kept as live or rollback targets: {', '.join(sorted(protected))}")
    return deleted
