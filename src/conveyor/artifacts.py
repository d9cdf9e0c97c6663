"""Release artifacts: build them reproducibly, describe them in a manifest, verify them.

``dist/<version>/`` holds the backend wheel and sdist, the frontend bundle, an SBOM for each,
the backend's locked requirements and ``manifest.json`` (version, commit, dirty flag, build
time from ``SOURCE_DATE_EPOCH``, builder, tool versions, sha256 and size of every file). Image
digests and scan results are added to the manifest by later steps, never by hand; so is each
image's migration preview (``migrations-<image>-<version>.json``/``.sql``, written by ``nox -s
image``, see :mod:`conveyor.migrationsql`), a flat file like every other artifact because the
artifact store publishes files, not folders.

``manifest.sha256`` seals the manifest itself: conveyor rewrites it with every manifest it
writes (build, image, scan) and ``verify`` checks it, so an edited manifest — e.g. a
``"scan": {"passed": true}`` typed in — is caught. A plain sha256 catches accidents only:
whoever can write ``dist/`` (or reach the engine) can recompute it. With
``CONVEYOR_LEDGER_KEY`` set the seal is an HMAC-SHA256 under that key, which nobody without
the key can forge; gates trust a manifest's scan verdicts only when so signed (or recorded in
a ledger).
"""

from __future__ import annotations

import getpass
import gzip
import hashlib
import hmac
import importlib.metadata
import io
import json
import os
import platform
import shutil
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from conveyor import flags, tools, versioning
from conveyor.config import Config
from conveyor.errors import ArtifactError
from conveyor.versioning import ReleaseVersion

MANIFEST = "manifest.json"
SEAL = "manifest.sha256"
KEY_VARIABLE = "CONVEYOR_LEDGER_KEY"
SIGNED, CHECKSUM = "signed", "checksum"
MANIFEST_SCHEMA = 1
BACKEND_PACKAGE = "refapi"
FRONTEND_PACKAGE = "refweb"
CHUNK = 1 << 20
SBOM_CACHE = Path("build/sbom-cache")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def deterministic_tarball(source: Path, target: Path, *, prefix: str, mtime: int) -> None:
    """A .tar.gz whose bytes depend only on the files' content and names.

    Sorted entries, fixed owner and mode, every mtime set to the commit time, and a gzip
    header without a timestamp or file name.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source).as_posix()
            info = tarfile.TarInfo(f"{prefix}/{relative}")
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path.is_dir():
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                data = path.read_bytes()
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    with (
        target.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
    ):
        gz.write(buffer.getvalue())


@dataclass(frozen=True)
class BuildContext:
    root: Path
    out: Path
    version: ReleaseVersion

    @property
    def env(self) -> dict[str, str]:
        return {
            "SOURCE_DATE_EPOCH": str(self.version.commit_time),
            # hatch-vcs would compute its own string; pass ours so wheel and manifest agree.
            "SETUPTOOLS_SCM_PRETEND_VERSION": self.version.python,
            "PYTHONHASHSEED": "0",
        }


def backend_requirements(root: Path) -> str:
    """The backend's runtime dependencies, pinned and hashed, exactly as in uv.lock."""
    uv = tools.require("uv", "run scripts/setup")
    result = tools.run(
        [
            uv,
            "export",
            "--package",
            BACKEND_PACKAGE,
            "--frozen",
            "--no-dev",
            "--no-emit-workspace",
            # psycopg: refapi serves PostgreSQL as well as SQLite (production's database).
            "--extra",
            "postgres",
            "--no-header",
            "--format",
            "requirements-txt",
        ],
        cwd=root,
        what="uv export",
    )
    return result.stdout


def build_backend(ctx: BuildContext) -> None:
    uv = tools.require("uv", "run scripts/setup")
    tools.run(
        [
            uv,
            "build",
            "--package",
            BACKEND_PACKAGE,
            "--sdist",
            "--wheel",
            "--out-dir",
            str(ctx.out),
        ],
        cwd=ctx.root,
        env=ctx.env,
        what="uv build (backend)",
    )
    # uv marks its output dir with a .gitignore; it is not an artifact.
    (ctx.out / ".gitignore").unlink(missing_ok=True)
    requirements = ctx.out / f"{BACKEND_PACKAGE}-{ctx.version.python}-requirements.txt"
    requirements.write_text(backend_requirements(ctx.root), encoding="utf-8")
    sbom = ctx.out / f"{BACKEND_PACKAGE}-{ctx.version.python}.cdx.json"
    shutil.copy2(backend_sbom(ctx, requirements), sbom)


def backend_sbom(ctx: BuildContext, requirements: Path) -> Path:
    """The CycloneDX SBOM of the locked requirements, cached by their content.

    With --output-reproducible the SBOM depends only on the requirements and the tool's
    version, so an app-only change reuses it instead of paying cyclonedx-py's ~3 s again.
    """
    try:
        tool_version = importlib.metadata.version("cyclonedx-bom")
    except importlib.metadata.PackageNotFoundError:
        tool_version = "unknown"
    key = hashlib.sha256(requirements.read_bytes() + tool_version.encode()).hexdigest()[:24]
    cached = ctx.root / SBOM_CACHE / f"{key}.cdx.json"
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    cyclonedx = tools.require("cyclonedx-py", "run inside `nox -s build` (group build)")
    partial = cached.with_suffix(".partial")
    tools.run(
        [
            cyclonedx,
            "requirements",
            str(requirements),
            "--output-reproducible",
            "--of",
            "JSON",
            "-o",
            str(partial),
        ],
        cwd=ctx.root,
        env=ctx.env,
        what="cyclonedx-py",
    )
    os.replace(partial, cached)
    return cached


def build_frontend(ctx: BuildContext) -> None:
    npm = tools.require("npm", "install Node.js 20 and npm")
    frontend = ctx.root / "frontend"
    if not (frontend / "node_modules").is_dir():
        tools.run([npm, "ci", "--no-audit", "--no-fund"], cwd=frontend, what="npm ci")
    tools.run(
        [npm, "run", "build"],
        cwd=frontend,
        env={**ctx.env, "VITE_APP_VERSION": ctx.version.python},
        what="npm run build",
    )
    bundle = ctx.out / f"{FRONTEND_PACKAGE}-{ctx.version.python}.tar.gz"
    deterministic_tarball(
        frontend / "dist", bundle, prefix=FRONTEND_PACKAGE, mtime=ctx.version.commit_time
    )
    sbom = ctx.out / f"{FRONTEND_PACKAGE}-{ctx.version.python}.cdx.json"
    result = tools.run(
        [npm, "sbom", "--sbom-format", "cyclonedx", "--package-lock-only"],
        cwd=frontend,
        what="npm sbom",
    )
    sbom.write_text(result.stdout, encoding="utf-8")


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def tool_versions(*, frontend: bool = True) -> dict[str, str]:
    """What built this release. Python tools are read from package metadata: asking
    cyclonedx-py for --version costs seconds on every build."""
    versions = {
        "python": platform.python_version(),
        "uv": tools.version_of([tools.find("uv") or "uv", "--version"]),
        "cyclonedx-bom": _package_version("cyclonedx-bom"),
    }
    if frontend:
        versions["node"] = tools.version_of(["node", "--version"])
        versions["npm"] = tools.version_of(["npm", "--version"])
    return versions


def builder() -> dict[str, str]:
    if os.environ.get("GITHUB_ACTIONS"):
        return {
            "kind": "github-actions",
            "actor": os.environ.get("GITHUB_ACTOR", "unknown"),
            "run": os.environ.get("GITHUB_RUN_ID", "unknown"),
        }
    return {"kind": "local", "user": getpass.getuser(), "host": platform.node()}


def describe_files(folder: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    return {
        name: {"sha256": sha256_file(folder / name), "size": (folder / name).stat().st_size}
        for name in sorted(names)
    }


def signing_key() -> bytes | None:
    """``CONVEYOR_LEDGER_KEY``, the secret that signs manifests (and ledger records)."""
    key = os.environ.get(KEY_VARIABLE, "")
    return key.encode() if key else None


def _seal_line(body: bytes, key: bytes | None) -> str:
    if key is None:
        return f"{hashlib.sha256(body).hexdigest()}  {MANIFEST}\n"  # `sha256sum -c` reads it
    return f"hmac-sha256:{hmac.new(key, body, hashlib.sha256).hexdigest()}  {MANIFEST}\n"


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write atomically (a reader never sees a half-written manifest), then its seal."""
    body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_bytes(body)
    seal_tmp = folder / f".{SEAL}.tmp"
    seal_tmp.write_text(_seal_line(body, signing_key()), encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)
    os.replace(seal_tmp, folder / SEAL)


def check_seal(folder: Path) -> str:
    """``signed`` (HMAC under CONVEYOR_LEDGER_KEY) or ``checksum`` (plain sha256); raise when
    the manifest does not match its seal or has none."""
    path, seal = folder / MANIFEST, folder / SEAL
    try:
        body = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing — run `nox -s build` first") from None
    try:
        recorded = seal.read_text(encoding="utf-8").split()[0]
    except (FileNotFoundError, IndexError):
        raise ArtifactError(
            f"{seal} is missing: {path} is covered by no checksum — rebuild with "
            f"`nox -s build image` (and rescan)"
        ) from None
    key = signing_key()
    if recorded.startswith("hmac-sha256:"):
        if key is None:
            raise ArtifactError(
                f"{path} is signed with {KEY_VARIABLE}, which is not set here — set it to "
                f"verify the manifest"
            )
        expected = _seal_line(body, key).split()[0]
        if not hmac.compare_digest(recorded, expected):
            raise ArtifactError(
                f"{path} does not match its signature in {SEAL}: it was changed outside "
                f"conveyor (or signed with another {KEY_VARIABLE}) — rebuild and rescan"
            )
        return SIGNED
    if not hmac.compare_digest(recorded, hashlib.sha256(body).hexdigest()):
        raise ArtifactError(
            f"{path} does not match {SEAL}: it was edited outside conveyor — rebuild "
            f"(`nox -s build image`) and rescan; conveyor writes it, never a person"
        )
    return CHECKSUM


def describe_seal(kind: str) -> str:
    """What a seal protects against, in words (`artifacts verify` prints it)."""
    if kind == SIGNED:
        return f"signed with {KEY_VARIABLE} (HMAC-SHA256): an edit without the key is caught"
    return (
        "sha256 checksum: catches accidental edits only — whoever can write dist/ can "
        f"recompute it; set {KEY_VARIABLE} to sign manifests"
    )


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing — run `nox -s build` first") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or data.get("schema") != MANIFEST_SCHEMA:
        raise ArtifactError(f"{path} is not a conveyor manifest (schema {MANIFEST_SCHEMA})")
    return data


def update_manifest(folder: Path, update: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Change a manifest conveyor wrote; one edited by hand is refused, never re-sealed."""
    check_seal(folder)
    manifest = read_manifest(folder)
    update(manifest)
    write_manifest(folder, manifest)
    return manifest


PARTS = {"backend": BACKEND_PACKAGE, "frontend": FRONTEND_PACKAGE}


def build(config: Config, *, only: str | None = None, say: Callable[[str], None] = print) -> Path:
    """Build the working tree's version into ``dist/<version>/`` (one part, or everything).

    Building one part keeps the other part's files, so the two build scripts can run in
    either order and the manifest always describes the whole folder.
    """
    root = config.root
    version = versioning.current(root)
    out = root / config.build.dist_dir / version.python
    if only is None and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    for part, prefix in PARTS.items():
        if only in (None, part):
            for stale in out.glob(f"{prefix}-*"):
                stale.unlink()
    ctx = BuildContext(root=root, out=out, version=version)
    if version.dirty:
        say(f"warning: the working tree is dirty: {version.python} cannot be reproduced")
    say(f"Building {config.project} {version.python} (commit {version.short_commit})…")
    if only in (None, "backend"):
        say("  backend: wheel, sdist, requirements, SBOM")
        build_backend(ctx)
    if only in (None, "frontend"):
        say("  frontend: bundle, SBOM")
        build_frontend(ctx)
    store_flags(config, out, say)
    names = [
        p.name
        for p in out.iterdir()
        if p.is_file() and not p.name.startswith((".", MANIFEST, SEAL))
    ]
    files_meta = describe_files(out, names)
    manifest: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "name": config.project,
        "version": version.python,
        "image_tag": version.image_tag,
        "image_tags": list(version.image_tags),
        "commit": version.commit,
        "dirty": version.dirty,
        "build_time": iso(version.commit_time),
        "source_date_epoch": version.commit_time,
        "builder": builder(),
        "tools": tool_versions(frontend=only in (None, "frontend")),
        "files": files_meta,
        "images": {},
    }
    write_manifest(out, manifest)
    for name, meta in files_meta.items():
        say(f"  {meta['sha256'][:12]}  {meta['size']:>9}  {name}")
    say(f"Artifacts in {out.relative_to(root) if out.is_relative_to(root) else out}")
    return out


def store_flags(config: Config, out: Path, say: Callable[[str], None]) -> None:
    """Each image's flag definitions, validated (a bad file stops the build with its key
    path), stored beside the other artifacts so the manifest seals them with the release."""
    for image in config.images.values():
        if not image.flags:
            continue
        definitions = flags.load(config.root / image.flags)
        (out / flags.dist_name(image.name)).write_bytes(flags.dumps(definitions))
        say(f"  flags: {image.flags} ({len(definitions.get('flags', {}))} flags, valid)")


def verify(folder: Path) -> dict[str, Any]:
    """Check the manifest's seal, then every file's sha256 and size; fail naming the first
    file that differs."""
    manifest = read_manifest(folder)
    check_seal(folder)
    listed = manifest.get("files", {})
    if not listed:
        raise ArtifactError(f"{folder / MANIFEST} lists no files")
    for name, meta in sorted(listed.items()):
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in the manifest but missing")
        size = path.stat().st_size
        if size != meta["size"]:
            raise ArtifactError(f"{path}: size {size} differs from the manifest's {meta['size']}")
        actual = sha256_file(path)
        if actual != meta["sha256"]:
            raise ArtifactError(
                f"{path}: sha256 {actual[:16]}… differs from the manifest's {meta['sha256'][:16]}…"
            )
    extra = sorted(
        p.name for p in folder.iterdir() if p.name not in listed and p.name not in (MANIFEST, SEAL)
    )
    if extra:
        raise ArtifactError(f"{folder}: files not in the manifest: {', '.join(extra)}")
    return manifest


def dist_folder(config: Config, version: str | None) -> Path:
    """``dist/<version>``; the working tree's version when none is given."""
    dist = config.root / config.build.dist_dir
    chosen = version or versioning.current(config.root).python
    folder = dist / chosen
    if not folder.is_dir():
        known = (
            sorted(p.name for p in dist.iterdir() if (p / MANIFEST).is_file())
            if dist.is_dir()
            else []
        )
        hint = f" (built: {', '.join(known)})" if known else ""
        raise ArtifactError(f"no artifacts for {chosen} in {dist}{hint} — run `nox -s build`")
    return folder


def unpack_bundle(bundle: Path, target: Path) -> None:
    with tarfile.open(bundle) as tar:
        tar.extractall(target, filter="data")
