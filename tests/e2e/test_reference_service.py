"""End to end: build the reference service, deploy it with invoke, use it in a real browser."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import artifacts, health
from testkit import sandbox

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def rendered_page(url: str, attempts: int = 3) -> str:
    """The page's DOM after its scripts ran, as headless Chromium sees it.

    Chromium sometimes exits 0 having printed nothing at all (seen once in CI, 2026-12-01):
    not even the empty ``<html>`` it prints for a page that failed. Only that is tried again;
    any DOM, an error page's too, is returned as it is."""
    browser = shutil.which("chromium")
    if browser is None:
        pytest.fail("chromium is not installed — run scripts/setup as root")
    said = ""
    for _ in range(attempts):
        with tempfile.TemporaryDirectory(prefix="conveyor-chromium-") as profile:
            result = subprocess.run(
                [
                    browser,
                    *CHROMIUM_FLAGS,
                    f"--user-data-dir={profile}",
                    "--virtual-time-budget=10000",
                    "--dump-dom",
                    url,
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
        if result.stdout.strip():
            return result.stdout
        said = result.stderr[-1500:]
    pytest.fail(f"chromium printed no DOM in {attempts} runs; its last stderr: {said}")


@pytest.fixture
def environment(
    tmp_path: Path, docker_client: Any, release_folder: Path, release_images: dict[str, Any]
) -> Iterator[tuple[str, list[int], Path]]:
    name = sandbox.new_name()
    ports = sandbox.allocate_ports(sandbox.PORTS_NEEDED)
    path = tmp_path / "deploy.toml"
    hosts = [{"name": "local", "docker": "local"}]
    path.write_text(
        sandbox.environment_toml(
            name,
            ports,
            release_folder.parent,
            ROOT / "docker",
            hosts,
            # As the quickstart's staging: the release's migrations run as a deploy phase.
            migrations='{ backup = "sqlite:/data/refapi.db", timeout = 120 }',
            flags=True,
        )
    )
    yield name, ports, path
    sandbox.teardown(docker_client, name)


def invoke(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["invoke", "--search-root", str(ROOT), *args],
        cwd=config.parent,  # nothing relative to the working directory lands in the checkout
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "CONVEYOR_CONFIG": str(config)},
    )


def test_deploy_with_invoke_then_use_the_web_ui(
    environment: tuple[str, list[int], Path], release_folder: Path
) -> None:
    name, ports, config = environment
    version = artifacts.read_manifest(release_folder)["version"]

    plan = invoke(config, "deploy", "--env", name, "--version", version, "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "switch traffic: api (none) → blue" in plan.stdout
    assert "api: schema empty (sqlite); 2 revision(s) to run before the switch" in plan.stdout

    deployed = invoke(config, "deploy", "--env", name, "--version", version)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    url = f"http://127.0.0.1:{ports[0]}/"
    assert url in deployed.stdout
    assert "api: migrated empty → " in deployed.stdout, deployed.stdout

    page = rendered_page(url)
    assert 'data-state="ready"' in page, page[-2000:]
    assert f'data-testid="api-version">{version}<' in page
    assert f'data-testid="web-version">{version}<' in page

    note = "<b>shipped</b> by conveyor"
    assert health.probe("127.0.0.1", ports[0], "/api/notes").status == 200
    connection = http.client.HTTPConnection("127.0.0.1", ports[0], timeout=10)
    connection.request(
        "POST",
        "/api/notes",
        body=json.dumps({"text": note}),
        headers={"Content-Type": "application/json"},
    )
    assert connection.getresponse().status == 201
    connection.close()
    page = rendered_page(url)
    assert "&lt;b&gt;shipped&lt;/b&gt; by conveyor" in page, "the note is shown, escaped"
    assert 'data-view="classic"' in page, "the new notes view is dark at 0%"

    # A flag turned on without a deploy: a new visitor sees the new notes view.
    flipped = invoke(config, "flag-set", "--env", name, "new-notes-view", "--on")
    assert flipped.returncode == 0, flipped.stdout + flipped.stderr
    time.sleep(2.0)  # the services poll the flag file every 500 ms
    page = rendered_page(url)
    assert 'data-view="new"' in page, page[-2000:]
    assert "&lt;b&gt;shipped&lt;/b&gt; by conveyor" in page

    status = invoke(config, "status", "--env", name, "--json")
    assert json.loads(status.stdout)["live_version"] == version
