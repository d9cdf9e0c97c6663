"""Container images: build them from dist/<version>/ through the docker SDK, push, record digests.

An image that declares ``migrate`` also renders its migrations offline, in a container of the
image just built (no network): the revisions and their PostgreSQL SQL are written beside the
artifacts and recorded, with their sha256, in the manifest (:mod:`conveyor.migrationsql`).

Builds never need the network inside the image: a builder stage installs the locked
dependencies from a wheelhouse copied into the build context. The base image is a build
argument, resolved here: CONVEYOR_BASE_IMAGE, else the configured public image if present or
pullable, else the offline one that scripts/setup builds with debootstrap.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor import artifacts, ledger, migrationsql, tools
from conveyor.config import Config, ImageSpec
from conveyor.console import Console, console
from conveyor.errors import ConveyorError, ImageError, RegistryError

WHEELHOUSE = Path("build/wheelhouse")
MIGRATION_RENDER_TIMEOUT = 300.0


def image_present(client: Any, name: str) -> bool:
    import docker.errors  # noqa: PLC0415 - docker is heavy; import where used

    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def copy_image(source: Any, target: Any, tag: str) -> None:
    """Copy the image ``tag`` from the engine ``source`` to the engine ``target``, tag and all
    (one ``docker save`` streamed into one ``docker load``)."""
    target.images.load(b"".join(source.images.get(tag).save(named=tag)))


def split_reference(name: str) -> tuple[str, str]:
    """``repo:tag`` → (repo, tag); a colon in a registry's host:port is not a tag."""
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repo, _, tag = name.rpartition(":")
        return repo, tag
    return name, "latest"


def try_pull(client: Any, name: str) -> bool:
    import docker.errors  # noqa: PLC0415

    repo, tag = split_reference(name)
    try:
        client.images.pull(repo, tag=tag)
    except docker.errors.APIError:
        return False
    return True


def resolve_base_image(client: Any, config: Config) -> str:
    """The base image builds will use; one clear line when there is none."""
    forced = os.environ.get("CONVEYOR_BASE_IMAGE")
    candidates = [forced] if forced else [config.build.base_image, config.build.offline_base_image]
    for name in candidates:
        if image_present(client, name):
            return name
    if try_pull(client, candidates[0]):
        return candidates[0]
    raise ImageError(
        f"base image {candidates[0]} is not present and cannot be pulled"
        + ("" if forced else f", nor is the offline {config.build.offline_base_image}")
        + " — run scripts/setup (it builds the offline base image with debootstrap)"
    )


def local_name(config: Config, spec: ImageSpec) -> str:
    """``<prefix>/<image>``: deploy.toml's ``[registry] prefix`` names local images too."""
    return f"{config.registry.prefix}/{spec.name}"


def remote_name(config: Config, spec: ImageSpec) -> str | None:
    registry = config.registry_url()
    return f"{registry}/{config.registry.prefix}/{spec.name}" if registry else None


def target_platforms() -> list[str]:
    """manylinux tags of the base image's platform (glibc 2.17 … 2.36 covers bookworm)."""
    machine = platform.machine()
    return [f"manylinux_2_{minor}_{machine}" for minor in range(36, 16, -1)] + [
        f"manylinux2014_{machine}"
    ]


def wheelhouse(config: Config, requirements: Path) -> Path:
    """Download the locked wheels once per distinct requirements file (hash-checked)."""
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    folder = config.root / WHEELHOUSE / digest
    done = folder / ".complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    python = tools.find("python") or "python3"
    platform_args = [arg for plat in target_platforms() for arg in ("--platform", plat)]
    tools.run(
        [
            python,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--require-hashes",
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            *platform_args,
            "-r",
            str(requirements),
            "-d",
            str(folder),
        ],
        what="pip download (wheelhouse)",
    )
    shutil.copy2(requirements, folder / "requirements.txt")
    done.touch()
    return folder


@dataclass(frozen=True)
class BuildRequest:
    spec: ImageSpec
    context: Path
    tag: str
    buildargs: dict[str, str]


def _copy_tree(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name.startswith("."):
            continue
        shutil.copy2(item, target / item.name)


def prepare_context(
    config: Config, spec: ImageSpec, folder: Path, manifest: dict[str, Any], context: Path
) -> None:
    """Lay out exactly what the Dockerfile copies, nothing else (small, cache-friendly)."""
    dockerfile = config.root / spec.dockerfile
    if not dockerfile.is_file():
        raise ImageError(f"deploy.toml [images.{spec.name}]: {spec.dockerfile} does not exist")
    shutil.copy2(dockerfile, context / "Dockerfile")
    version = manifest["version"]
    if spec.kind == "python-service":
        requirements = folder / f"{artifacts.BACKEND_PACKAGE}-{version}-requirements.txt"
        _copy_tree(wheelhouse(config, requirements), context / "deps")
        (context / "app").mkdir()
        wheels = sorted(folder.glob(f"{artifacts.BACKEND_PACKAGE}-*.whl"))
        if len(wheels) != 1:
            raise ImageError(f"{folder}: expected one {artifacts.BACKEND_PACKAGE} wheel")
        shutil.copy2(wheels[0], context / "app" / wheels[0].name)
    elif spec.kind == "static-site":
        bundle = folder / f"{artifacts.FRONTEND_PACKAGE}-{version}.tar.gz"
        artifacts.unpack_bundle(bundle, context)
        (context / artifacts.FRONTEND_PACKAGE).rename(context / "site")
        shutil.copy2(config.root / "docker" / "webserver.py", context / "webserver.py")
    elif spec.kind == "router":
        pass  # the router's config is put into its container at deploy time


def stream_build(client: Any, request: BuildRequest, out: Console) -> str:
    """Run one build, narrating its steps; returns the image ID."""
    image_id = ""
    log: list[str] = []
    for chunk in client.api.build(
        path=str(request.context),
        dockerfile="Dockerfile",
        tag=request.tag,
        buildargs=request.buildargs,
        network_mode="host",  # only the router's apt-get needs it; the app builds are offline
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
    ):
        if "error" in chunk:
            message = str(chunk["error"]).strip()
            if "pull access denied" in message or "no such host" in message:
                message += " — run scripts/setup to build the offline base image"
            context = " | ".join(line.strip() for line in log[-3:])
            raise ImageError(f"building {request.tag} failed: {message} [{context}]")
        text = str(chunk.get("stream", "")).rstrip()
        if text:
            log.append(text)
            if text.startswith("Step "):
                out.progress(f"  {request.spec.name}: {text[:110]}")
        aux = chunk.get("aux")
        if isinstance(aux, dict) and "ID" in aux:
            image_id = str(aux["ID"])
    if not image_id:
        raise ImageError(f"building {request.tag} produced no image: {' | '.join(log[-3:])}")
    return image_id


def push(client: Any, repository: str, tag: str) -> str:
    """Push one tag; returns the registry's manifest digest."""
    digest = ""
    try:
        for chunk in client.api.push(repository, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                raise RegistryError(
                    f"push of {repository}:{tag} failed: {str(chunk['error']).strip()[:200]} — "
                    f"is the registry running? The local artifacts are intact"
                )
            aux = chunk.get("aux")
            if isinstance(aux, dict) and "Digest" in aux:
                digest = str(aux["Digest"])
    except RegistryError:
        raise
    except Exception as exc:  # the SDK raises several types for a dead registry
        raise RegistryError(
            f"push of {repository}:{tag} failed: {exc} — is the registry running? "
            f"The local artifacts are intact"
        ) from None
    if not digest:
        raise RegistryError(f"push of {repository}:{tag} returned no digest")
    return digest


def build_args(
    config: Config, manifest: dict[str, Any], spec: ImageSpec, base: str
) -> dict[str, str]:
    return {
        "BASE_IMAGE": base,
        "VERSION": manifest["version"],
        "COMMIT": manifest["commit"],
        "CREATED": manifest["build_time"],
        "SOURCE": config.source_url,
        "TITLE": spec.title,
    }


def release_images(config: Config) -> list[ImageSpec]:
    return [spec for spec in config.images.values() if spec.kind != "router"]


def build_images(
    config: Config,
    client: Any,
    folder: Path,
    *,
    push_to_registry: bool = True,
    only: list[str] | None = None,
    force: bool = False,
    out: Console = console,
) -> dict[str, Any]:
    """Build (and push) every release image of ``folder``'s version; update its manifest.

    A version's images are never silently replaced: the classic builder stamps times, so a
    rebuild gets new image IDs unless every step is cached, and approvals and scans of the
    version would stop matching. A rebuild that reproduces the recorded image ID is fine; one
    that does not, or a push over a registry tag that points to an image this manifest does
    not record, is refused unless ``force`` (printed and recorded in the manifest).
    """
    manifest = artifacts.verify(folder)
    recorded: dict[str, Any] = manifest.get("images") or {}
    base = resolve_base_image(client, config)
    out.say(f"Building images for {manifest['version']} on {base}")
    results: dict[str, Any] = {}
    previews: dict[str, tuple[str, list[migrationsql.Revision]]] = {}
    for spec in release_images(config):
        if only and spec.name not in only:
            continue
        tag = f"{local_name(config, spec)}:{manifest['image_tag']}"
        found = recorded.get(spec.name)
        before: dict[str, Any] = found if isinstance(found, dict) else {}
        # A refused rebuild removes the image it made, never one the build cache handed back.
        known = set(client.api.images(all=True, quiet=True)) if before.get("id") else set()
        image_id = _build(config, client, spec, folder, manifest, base=base, tag=tag, out=out)
        forced = _check_rebuild(
            client,
            manifest,
            spec.name,
            tag=tag,
            before=before,
            image_id=image_id,
            new=image_id not in known,
            force=force,
            out=out,
        )
        image = client.images.get(image_id)
        if migrationsql.image_command(spec):
            previews[spec.name] = (image_id, _preview_migrations(client, image_id, spec, out))
        for extra in manifest["image_tags"][1:]:
            image.tag(local_name(config, spec), tag=extra)
        entry: dict[str, Any] = {
            "image": tag,
            "id": image_id,
            "tags": manifest["image_tags"],
            "size": image.attrs.get("Size", 0),
            "base": base,
        }
        if forced:
            entry["forced"] = forced
        repository = remote_name(config, spec)
        if repository and push_to_registry:
            entry.update(
                _push_tags(client, image, repository, manifest, before=before, force=force, out=out)
            )
        same_digest = before.get("digest", "") == entry.get("digest", "")
        if before.get("id") == image_id and same_digest and "scan" in before:
            entry["scan"] = before["scan"]  # the same image: its scan still holds
        results[spec.name] = entry

    def record(data: dict[str, Any]) -> None:
        data.setdefault("images", {}).update(results)
        for name in results:
            if name in previews:
                migrationsql.write_preview(folder, data, name, *previews[name])
            else:  # the image no longer declares `migrate`: its release has no migrations
                migrationsql.drop_preview(folder, data, name)

    artifacts.update_manifest(folder, record)
    return results


def _build(
    config: Config,
    client: Any,
    spec: ImageSpec,
    folder: Path,
    manifest: dict[str, Any],
    *,
    base: str,
    tag: str,
    out: Console,
) -> str:
    """Build ``spec``'s image of the version in ``folder`` as ``tag``; returns its image ID."""
    with tempfile.TemporaryDirectory(prefix=f"conveyor-ctx-{spec.name}-") as tmp:
        context = Path(tmp)
        prepare_context(config, spec, folder, manifest, context)
        request = BuildRequest(spec, context, tag, build_args(config, manifest, spec, base))
        with out.step(f"Building {tag}"):
            return stream_build(client, request, out)


def _preview_migrations(
    client: Any, image_id: str, spec: ImageSpec, out: Console
) -> list[migrationsql.Revision]:
    """The image's migration SQL, rendered offline in a container of exactly that image."""
    with out.step(f"Rendering {spec.name}'s migration SQL"):
        revisions = render_migrations(client, image_id, spec)
    kinds = ", ".join(f"{r.revision} {r.kind}" for r in revisions) or "none"
    out.say(f"  {spec.name}: {len(revisions)} revisions ({kinds})")
    return revisions


def _push_tags(
    client: Any,
    image: Any,
    repository: str,
    manifest: dict[str, Any],
    *,
    before: dict[str, Any],
    force: bool,
    out: Console,
) -> dict[str, str]:
    """Push every tag of the release (each checked against what the registry holds)."""
    digest = ""
    for image_tag in manifest["image_tags"]:
        _check_registry_tag(
            client, f"{repository}:{image_tag}", before=before, force=force, out=out
        )
        image.tag(repository, tag=image_tag)
        with out.step(f"Pushing {repository}:{image_tag}"):
            digest = push(client, repository, image_tag)
    return {"repository": repository, "digest": digest, "reference": f"{repository}@{digest}"}


def render_migrations(
    client: Any, image_id: str, spec: ImageSpec, *, timeout: float = MIGRATION_RENDER_TIMEOUT
) -> list[migrationsql.Revision]:
    """``docker run --rm --network none <image> <migrate> sql --json``: the revisions exactly
    as this image would run them, rendered offline."""
    command = migrationsql.image_command(spec)
    argv = migrationsql.migrate_argv(command)
    what = f"{spec.name}'s `{command} sql --json` in {image_id[:19]}"
    container = client.containers.create(image_id, command=argv, network_mode="none")
    try:
        container.start()
        try:
            status = container.wait(timeout=timeout)
        except Exception:  # requests' ReadTimeout (or a connection error) from the SDK
            raise ImageError(f"{what} did not finish within {timeout:.0f} s") from None
        stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
        stderr = container.logs(stdout=False, stderr=True).decode(errors="replace")
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True, v=True)
    code = int(status.get("StatusCode", -1))
    if code != 0:
        tail = " | ".join(line.strip() for line in (stderr or stdout).strip().splitlines()[-3:])
        raise ImageError(
            f"{what} failed (exit {code}): {tail} — the image's migration command must render "
            f"its revisions offline (conveyor's migration protocol)"
        )
    try:
        return migrationsql.parse(stdout, where=what)
    except migrationsql.MigrationSqlError as exc:
        raise ImageError(str(exc)) from None


def _check_rebuild(
    client: Any,
    manifest: dict[str, Any],
    name: str,
    *,
    tag: str,
    before: dict[str, Any],
    image_id: str,
    new: bool,
    force: bool,
    out: Console,
) -> dict[str, str] | None:
    """Refuse (or, forced, record) a rebuild that replaced a version's recorded image.

    ``new`` says the build made ``image_id``; an image that was already on the engine (the
    build cache handed it back) is someone else's and is never removed here.
    """
    old = str(before.get("id") or "")
    if not old or old == image_id:
        return None
    version = manifest["version"]
    if not force:
        # Put the tag back on the recorded image; the one this build made is removed.
        with contextlib.suppress(Exception):
            client.images.get(old).tag(*split_reference(tag))
            if new:
                client.images.remove(image_id)
        raise ImageError(
            f"{version} already has a {name} image ({old[:19]}) and this rebuild made another "
            f"({image_id[:19]}): image IDs cannot be reproduced, so approvals and scans of "
            f"{version} would stop matching — commit and build a new version, or pass --force "
            f"to replace it (recorded)"
        )
    out.warn(f"--force: {name} of {version} is now {image_id[:19]}, replacing {old[:19]}")
    return {"at": artifacts.iso(time.time()), "by": ledger.who(), "replaced": old}


def _check_registry_tag(
    client: Any, reference: str, *, before: dict[str, Any], force: bool, out: Console
) -> None:
    """Refuse to move a registry tag that points to an image this manifest does not record."""
    import docker.errors  # noqa: PLC0415

    try:
        found = client.api.inspect_distribution(reference)
    except docker.errors.APIError:
        return  # not there yet (or unreadable, which the push itself then reports)
    digest = str((found.get("Descriptor") or {}).get("digest", ""))
    if not digest or digest == before.get("digest"):
        return
    if not force:
        raise ImageError(
            f"the registry's {reference} already points to {digest[:19]}, an image "
            f"this version's manifest does not record — it was "
            f"built elsewhere: deploy those images, or pass --force to replace them (recorded)"
        )
    out.warn(f"--force: moving the registry's {reference} off {digest[:19]}")


def image_reference(entry: dict[str, Any]) -> str:
    """How a deploy names an image: by registry digest when pushed, else by local image ID."""
    return str(entry.get("reference") or entry["id"])


def _router_spec(config: Config) -> ImageSpec:
    spec = next((s for s in config.images.values() if s.kind == "router"), None)
    if spec is None:
        raise ConveyorError("deploy.toml has no image of kind 'router'")
    return spec


def router_image_tag(config: Config, client: Any) -> str:
    """The router image's tag: a hash of its Dockerfile and base, so edits rebuild it."""
    spec = _router_spec(config)
    base = resolve_base_image(client, config)
    path = config.root / spec.dockerfile
    if not path.is_file():
        raise ImageError(f"deploy.toml [images.{spec.name}]: {spec.dockerfile} does not exist")
    dockerfile = path.read_bytes()
    digest = hashlib.sha256(dockerfile + base.encode()).hexdigest()[:12]
    return f"{local_name(config, spec)}:{digest}"


def router_repository(config: Config) -> str | None:
    """Where the router image is pushed: its repository in the registry (deploy.toml's
    ``[registry] url`` or CONVEYOR_REGISTRY); None without a registry."""
    return remote_name(config, _router_spec(config))


def push_router_image(config: Config, client: Any, tag: str, out: Console = console) -> None:
    """Push the router image ``tag`` from ``client``'s engine to the registry, where a swarm
    node that joins pulls it; nothing without a registry. Pushing what the registry holds
    sends no layer. A failed push is one line, not a failed command: the listed nodes hold
    the image anyway, and a flag kill switch must not wait for a registry."""
    repository = router_repository(config)
    if repository is None:
        return
    _, version = split_reference(tag)
    client.images.get(tag).tag(repository, version)
    try:
        push(client, repository, version)
    except RegistryError as exc:
        out.warn(f"the router image was not pushed ({exc}); a swarm node that joins needs it")


def router_reference(image: Any, repository: str | None) -> str:
    """How a swarm's services name the router ``image`` (an SDK image): by its digest in
    ``repository`` once pushed there (a node that joins pulls it), else by image ID (only the
    nodes that conveyor copied it to hold it)."""
    for digest in image.attrs.get("RepoDigests") or []:
        if repository and str(digest).startswith(f"{repository}@"):
            return str(digest)
    return str(image.id)


def build_router_image(
    config: Config, client: Any, out: Console = console, *, tag: str | None = None
) -> str:
    """The router image (HAProxy from Debian on the base image); built once per engine.

    ``tag``: :func:`router_image_tag` for this engine when the caller already knows it (a
    session reads it when it opens), which saves asking the engine for the base image again.
    """
    spec = _router_spec(config)
    tag = tag or router_image_tag(config, client)
    if image_present(client, tag):
        return tag
    base = resolve_base_image(client, config)
    with tempfile.TemporaryDirectory(prefix="conveyor-ctx-router-") as tmp:
        context = Path(tmp)
        shutil.copy2(config.root / spec.dockerfile, context / "Dockerfile")
        buildargs = {"BASE_IMAGE": base, "TITLE": spec.title, "SOURCE": config.source_url}
        with out.step(f"Building router image {tag}"):
            stream_build(client, BuildRequest(spec, context, tag, buildargs), out)
    return tag
