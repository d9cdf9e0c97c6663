"""One gate for every way into a gated environment, and verdicts bound to what they judge.

Real engines, real routers: a staging and a production-like environment in one deploy.toml,
production with ``promote_from``, a required approval and ``require_scan``. Every refusal is
checked for its one line, its exit code, and that nothing changed.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from typing import Any

import docker.errors
import pytest

from conveyor import approvals, artifacts, images
from conveyor.errors import ImageError
from conveyor.operations import Session
from testkit import sandbox
from testkit.steps import ok

GATE = (
    'promote_from = "{source}"\n'
    "require_scan = true\n"
    "approval = {{ required = true, allow_self_approval = false, expires_hours = 24 }}\n"
)


def pair(make_environment: Any, *, approval: bool = True) -> tuple[Any, Any]:
    """A staging and a gated production taking releases from it, in one deploy.toml."""
    staging = make_environment(health_interval=2)  # a promote waits for its first check
    prod = make_environment()
    marker = f"[environments.{prod.name}]\n"
    gate = GATE.format(source=staging.name)
    if not approval:
        gate = "\n".join(line for line in gate.splitlines() if "approval" not in line) + "\n"
    text = prod.config_path.read_text().replace(marker, marker + gate)
    section = text.split("[environments.", 1)[1]
    staging.config_path.write_text(staging.config_path.read_text() + "\n[environments." + section)
    prod.config_path = staging.config_path
    return staging, prod


def scanned(env: Any, version: str, *, dirty: bool = False) -> str:
    """Each image's passed verdict bound to its image ID, written as the scanner writes it."""
    sandbox.record_scan(env.dist / version, dirty=dirty)
    return version


def run(env: Any, user: str, *args: str, **extra: str) -> Any:
    return env.cli(*args, env={"GITHUB_ACTOR": user, "GITHUB_ACTIONS": "", **extra})


def refused(result: Any, code: int = 1) -> str:
    assert result.returncode == code, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    last: str = result.stderr.strip().splitlines()[-1]
    assert last.startswith("conveyor: "), result.stderr
    return last


def history(env: Any) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(
        ok(env.cli("history", "--env", env.name, "--json")).stdout
    )
    return records


def service_containers(client: Any, env: Any) -> list[Any]:
    found = client.containers.list(all=True, filters={"label": f"conveyor.env={env.name}"})
    return [c for c in found if c.labels.get("conveyor.service")]


def dist_key(env: Any, version: str) -> str:
    images = artifacts.read_manifest(env.dist / version)["images"]
    return approvals.release_key({name: entry["id"] for name, entry in images.items()})[:16]


def approval_events(staging: Any, prod: Any) -> list[dict[str, Any]]:
    events = Session(staging.config, prod.name).ledger.audit_events()
    return [e for e in events if e["kind"] == "approval"]


def test_deploy_and_approve_run_the_checks_promote_runs(
    make_environment: Any, docker_client: Any
) -> None:
    staging, prod = pair(make_environment)
    for version in ("1.0.0", "2.0.0"):
        scanned(staging, version)
    deploy_prod = ("deploy", "--env", prod.name, "--version")

    # Never in staging: neither deploy nor approve lets it in, and nothing is created.
    line = refused(run(prod, "bob", *deploy_prod, "1.0.0"))
    assert "1.0.0 (api " in line and f"never succeeded in {staging.name}" in line, line
    assert f"{prod.name} takes releases from {staging.name} only" in line
    line = refused(
        run(prod, "alice", "approve", "--env", prod.name, "--release", dist_key(prod, "1.0.0"))
    )
    assert f"not approved: {prod.name} would refuse 1.0.0 — " in line, line
    assert "never succeeded in" in line
    assert service_containers(docker_client, prod) == []
    assert approval_events(staging, prod) == []

    # 2.0.0 went live in staging and was rolled back there: refused both ways.
    ok(run(staging, "bob", "deploy", "--env", staging.name, "--version", "1.0.0"))
    ok(run(staging, "bob", "deploy", "--env", staging.name, "--version", "2.0.0"))
    ok(run(staging, "bob", "rollback", "--env", staging.name))
    line = refused(run(prod, "bob", *deploy_prod, "2.0.0"))
    assert f"2.0.0 was rolled back in {staging.name} (r0002 undone by r0003)" in line, line
    line = refused(
        run(prod, "alice", "approve", "--env", prod.name, "--release", dist_key(prod, "2.0.0"))
    )
    assert "was rolled back in" in line
    assert approval_events(staging, prod) == []

    # 1.0.0 is live in staging: approve says what it approves, then the deploy goes through.
    shown = ok(
        run(prod, "alice", "approve", "--env", prod.name, "--release", dist_key(prod, "1.0.0"))
    )
    assert "commit 000000000000 (clean tree)" in shown.stdout, shown.stdout
    assert "scan: scan gate passed for these image IDs" in shown.stdout
    assert f"ran in: {staging.name} r0003 (live there now)" in shown.stdout
    assert "✓ alice approved 1.0.0" in shown.stdout
    done = ok(run(prod, "bob", *deploy_prod, "1.0.0"))
    assert f"✓ succeeded in {staging.name} as r0003 and no rollback undid it" in done.stdout
    assert "Approved by alice" in done.stdout
    record = history(prod)[-1]
    assert record["outcome"] == "succeeded" and record["version"] == "1.0.0"
    assert record["scan"]["images"] == {
        s: {"image_id": v["image_id"]} for s, v in record["services"].items()
    }, "the ledger records which image IDs the verdict covered"


def test_a_dirty_build_never_enters_even_after_staging(make_environment: Any) -> None:
    staging, prod = pair(make_environment, approval=False)
    scanned(staging, "3.0.0", dirty=True)
    staged = ok(run(staging, "bob", "deploy", "--env", staging.name, "--version", "3.0.0"))
    assert "was built from a dirty tree" in staged.stderr + staged.stdout, "staging only warns"
    line = refused(run(prod, "bob", "deploy", "--env", prod.name, "--version", "3.0.0"))
    assert f"3.0.0 was built from a dirty tree, and {prod.name} takes clean builds only" in line
    line = refused(
        run(prod, "bob", "deploy", "--env", prod.name, "--version", "3.0.0", "--dry-run")
    )
    assert "built from a dirty tree" in line, "a dry run says the same, changing nothing"
    assert history(prod) == []


def hostile_rewrite(folder: Any, change: Any) -> None:
    """Edit manifest.json and recompute the plain checksum: what anyone with write access to
    dist/ can do when no CONVEYOR_LEDGER_KEY is set."""
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (folder / "manifest.json").write_bytes(body)
    (folder / "manifest.sha256").write_text(f"{hashlib.sha256(body).hexdigest()}  manifest.json\n")


def test_a_scan_verdict_counts_only_for_the_image_ids_it_names(
    make_environment: Any, docker_client: Any
) -> None:
    staging, prod = pair(make_environment, approval=False)
    folder = staging.dist / "2.0.0"
    ok(run(staging, "bob", "deploy", "--env", staging.name, "--version", "2.0.0"))
    deploy_prod = ("deploy", "--env", prod.name, "--version", "2.0.0")

    # A text editor: the manifest no longer matches its seal, for verify and for deploy.
    text = (folder / "manifest.json").read_text()
    (folder / "manifest.json").write_text(
        text.replace('"images"', '"scan": {"passed": true},\n  "images"', 1)
    )
    line = refused(staging.cli("artifacts", "verify", str(folder)))
    assert "manifest.json does not match manifest.sha256: it was edited outside conveyor" in line
    line = refused(run(prod, "bob", *deploy_prod))
    assert "edited outside conveyor" in line

    # Someone who also recomputes the checksum gets past verify (that is the boundary without
    # a key, and verify says so) but a bare "passed" names no image: no scan for these images.
    hostile_rewrite(folder, lambda m: m.__setitem__("scan", {"passed": True}))
    verified = ok(staging.cli("artifacts", "verify", str(folder)))
    assert "catches accidental edits only" in verified.stdout
    line = refused(run(prod, "bob", *deploy_prod))
    assert "the scan gate did not pass for these image IDs (no scan for these images: " in line
    assert "image api of 2.0.0 was never scanned" in line

    # A passed verdict of other image IDs (1.0.0's) is no scan of 2.0.0's images either.
    other = artifacts.read_manifest(staging.dist / "1.0.0")["images"]

    def borrowed(manifest: dict[str, Any]) -> None:
        for name, entry in manifest["images"].items():
            entry["scan"] = {"passed": True, "image_id": other[name]["id"], "failures": []}

    artifacts.update_manifest(folder, borrowed)
    line = refused(run(prod, "bob", *deploy_prod))
    assert "image api of 2.0.0 changed since its scan, so there is no scan of it" in line
    assert history(prod) == [] and service_containers(docker_client, prod) == []

    # With CONVEYOR_LEDGER_KEY set, a verdict in a manifest not signed with it is not trusted.
    scanned(staging, "2.0.0")
    keyed = {"CONVEYOR_LEDGER_KEY": "k-" + "9" * 30}
    line = refused(run(prod, "bob", *deploy_prod, **keyed))
    assert "scan verdict is not signed with CONVEYOR_LEDGER_KEY" in line, line
    done = ok(run(prod, "bob", *deploy_prod))  # no key: the checksummed verdict counts
    assert "✓ scan passed for these image IDs" in done.stdout


def test_a_signed_manifest_keeps_its_verdict_and_rejects_a_forgery(
    make_environment: Any, monkeypatch: Any
) -> None:
    staging, prod = pair(make_environment, approval=False)
    key = "k-" + "7" * 30
    monkeypatch.setenv("CONVEYOR_LEDGER_KEY", key)
    folder = scanned(staging, "1.0.0")
    assert (staging.dist / folder / "manifest.sha256").read_text().startswith("hmac-sha256:")
    keyed = {"CONVEYOR_LEDGER_KEY": key}
    verified = ok(staging.cli("artifacts", "verify", str(staging.dist / folder), env=keyed))
    assert "signed with CONVEYOR_LEDGER_KEY" in verified.stdout
    ok(run(staging, "bob", "deploy", "--env", staging.name, "--version", "1.0.0", **keyed))
    ok(run(prod, "bob", "deploy", "--env", prod.name, "--version", "1.0.0", **keyed))

    # A forger without the key: an HMAC-looking seal that is not the key's.
    hostile_rewrite(staging.dist / folder, lambda m: m.__setitem__("dirty", False))
    seal = staging.dist / folder / "manifest.sha256"
    seal.write_text("hmac-sha256:" + seal.read_text())
    line = refused(staging.cli("artifacts", "verify", str(staging.dist / folder), env=keyed))
    assert "does not match its signature in manifest.sha256" in line


def test_dry_run_names_the_secret_that_does_not_resolve_without_its_value(
    make_environment: Any, tmp_path: Any, docker_client: Any
) -> None:
    env = make_environment()
    present = tmp_path / "token"
    present.write_text("tok-" + "5" * 20)
    text = env.config_path.read_text()
    marker = f"[environments.{env.name}.services.api]\n"
    refs = (
        f'secrets = {{ API_TOKEN = "file:{present}", DB_PASSWORD = "env:CONVEYOR_TEST_UNSET_PW", '
        f'SIGNING = "file:{tmp_path / "absent"}" }}\n'
    )
    env.config_path.write_text(text.replace(marker, marker + refs))
    dry = ("deploy", "--env", env.name, "--version", "1.0.0", "--dry-run")

    result = env.cli(*dry)
    line = refused(result, code=2)
    assert "api DB_PASSWORD (env:CONVEYOR_TEST_UNSET_PW: environment variable" in line, line
    assert f"api SIGNING (file:{tmp_path / 'absent'}: cannot read" in line, line
    assert "API_TOKEN" not in line, "the one that resolves is not listed"
    assert "nothing was changed" in line
    assert "tok-5555" not in result.stdout + result.stderr
    # The real deploy refuses the same way before it starts anything (no Created container).
    refused(env.cli("deploy", "--env", env.name, "--version", "1.0.0"), code=2)
    assert service_containers(docker_client, env) == []

    (tmp_path / "absent").write_text("sig-" + "6" * 20)
    plan = ok(env.cli(*dry, env={"CONVEYOR_TEST_UNSET_PW": "pw-" + "4" * 20}))
    assert "Dry run — nothing will be changed" in plan.stdout
    assert not re.search(r"tok-5|sig-6|pw-4", plan.stdout + plan.stderr)


def test_a_rebuild_keeps_a_versions_image_ids_or_is_refused(
    isolated_config: Any,
    release_folder: Any,
    release_images: dict[str, Any],
    docker_client: Any,
    tmp_path: Any,
) -> None:
    folder = tmp_path / release_folder.name
    shutil.copytree(release_folder, folder)
    recorded = artifacts.read_manifest(folder)["images"]["api"]
    tags = [f"{recorded['image'].rpartition(':')[0]}:{t}" for t in recorded["tags"]]

    def build(**options: Any) -> dict[str, Any]:
        built: dict[str, Any] = images.build_images(
            isolated_config, docker_client, folder, push_to_registry=False, only=["api"], **options
        )
        return built

    scanned_api = {"passed": True, "image_id": recorded["id"], "failures": []}
    artifacts.update_manifest(folder, lambda m: m["images"]["api"].__setitem__("scan", scanned_api))
    # Every step cached: the same image ID, so the version, its scan and approvals still hold.
    assert build()["api"]["id"] == recorded["id"]
    assert artifacts.read_manifest(folder)["images"]["api"]["scan"] == scanned_api

    # A build that differs (another build time in its labels) makes another image ID: refused,
    # the version's tag stays on the recorded image, and the image the build made is removed.
    # The build time is this run's own, so no earlier run's image can come from the cache.
    build_time = time.strftime("2031-%m-%dT%H:%M:%SZ", time.gmtime())
    artifacts.update_manifest(folder, lambda m: m.__setitem__("build_time", build_time))
    with pytest.raises(
        ImageError, match=r"already has a api image .* pass --force to replace"
    ) as refused:
        build()
    assert docker_client.images.get(recorded["image"]).id == recorded["id"]
    assert artifacts.read_manifest(folder)["images"]["api"]["id"] == recorded["id"]
    made = re.search(r"this rebuild made another \(sha256:([0-9a-f]{12})\)", str(refused.value))
    assert made, refused.value
    with pytest.raises(docker.errors.ImageNotFound):  # the image the refused build made
        docker_client.images.get(made[1])
    forced: dict[str, Any] = {}
    try:
        forced = build(force=True)["api"]
        assert forced["id"] != recorded["id"]
        entry = artifacts.read_manifest(folder)["images"]["api"]
        assert entry["forced"]["replaced"] == recorded["id"], "a forced rebuild is recorded"
        assert "scan" not in entry, "the old verdict does not carry over to new image IDs"
        artifacts.verify(folder)
        # Back to the recorded manifest, the forced image now unnamed: a rebuild that the cache
        # answers with it is refused, and that image, which this build did not make, stays.
        artifacts.update_manifest(folder, lambda m: m["images"].__setitem__("api", recorded))
        for tag in tags:
            docker_client.images.get(recorded["id"]).tag(*images.split_reference(tag))
        with pytest.raises(ImageError, match=r"already has a api image"):
            build()
        assert docker_client.images.get(forced["id"]).tags == []
    finally:
        for tag in tags:  # leave the suite's tags on the images the other tests use
            docker_client.images.get(recorded["id"]).tag(*images.split_reference(tag))
        if forced:  # the test's own image, unnamed now
            docker_client.images.remove(forced["id"])
