"""Selecting scanners, running them side by side, and the CLI around them (no scanner tools)."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor import cli
from conveyor.console import console
from conveyor.errors import UsageError
from conveyor.scanners import actionlint, bandit, npm_audit, pip_audit, runner, trivy_image
from conveyor.scanners import zizmor as zizmor_scanner
from conveyor.scanners.base import ScanContext, ScannerSpec
from conveyor.scanners.model import ScannerRun, Status
from conveyor.scanners.policy import parse
from conveyor.scanners.registry import REGISTRY


def test_default_selection_skips_disabled_and_image_scanners() -> None:
    policy = parse({"scanners": {"npm-audit": {"enabled": False}}}, Path("/p"), "x", REGISTRY)
    selection = runner.select(policy, [], artifacts=None)
    names = [s.name for s in selection.specs]
    assert "npm-audit" not in names
    assert "trivy-image" not in names
    assert names[0] == "bandit"
    assert selection.left_out == []
    with_images = runner.select(policy, [], artifacts=Path("dist/1.0"))
    assert "trivy-image" in [s.name for s in with_images.specs]


def test_a_narrowed_selection_names_the_required_scanners_left_out() -> None:
    policy = parse({}, Path("/p"), "x", REGISTRY)
    selection = runner.select(policy, ["bandit", "actionlint"], artifacts=None)
    assert [s.name for s in selection.specs] == ["bandit", "actionlint"]
    assert selection.left_out == ["pip-audit", "trivy-fs", "zizmor", "workflow-schema", "npm-audit"]
    with pytest.raises(UsageError, match=r"unknown scanner 'bandt'.*did you mean 'bandit'"):
        runner.select(policy, ["bandt"], artifacts=None)


def test_run_all_runs_scanners_concurrently_and_keeps_registry_order(tmp_path: Path) -> None:
    barrier = threading.Barrier(2, timeout=10)

    def waits(name: str) -> ScannerSpec:
        def run(ctx: ScanContext) -> ScannerRun:
            barrier.wait()  # both must be running at once, or this times out
            return ScannerRun.completed(name, [])

        return ScannerSpec(name=name, description="", run=run)

    policy = parse({}, tmp_path, "x", REGISTRY)
    selection = runner.Selection([waits("bandit"), waits("zizmor")])
    said: list[str] = []
    runs = runner.run_all(selection, policy, cache=tmp_path, artifacts=None, say=said.append)
    assert [r.scanner for r in runs] == ["bandit", "zizmor"]
    assert all(r.status is Status.OK for r in runs)
    assert len(said) == 2


def test_a_bug_in_a_scanner_is_its_error_status_not_a_crash(tmp_path: Path) -> None:
    def broken(ctx: ScanContext) -> ScannerRun:
        raise KeyError("Results")

    spec = ScannerSpec(name="bandit", description="", run=broken)
    result = runner.run_one(spec, ScanContext(root=tmp_path, cache=tmp_path))
    assert result.status is Status.ERROR
    assert result.reason.startswith("internal error KeyError: 'Results'")


def test_a_missing_tool_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "src").mkdir()
    monkeypatch.setattr(bandit, "find_tool", lambda name: None)
    ctx = ScanContext(root=tmp_path, cache=tmp_path, options={"paths": ["src"]})
    result = bandit.run(ctx)
    assert result.status is Status.UNAVAILABLE
    assert result.reason == "bandit is not installed — run `nox -s scan` (group scan)"


def test_bandit_with_none_of_its_paths_is_an_error(tmp_path: Path) -> None:
    ctx = ScanContext(root=tmp_path, cache=tmp_path, options={"paths": ["src", "lib"]})
    result = bandit.run(ctx)
    if result.status is Status.UNAVAILABLE:  # bandit is not in the unit-test venv
        return
    assert result.status is Status.ERROR
    assert "none of the configured paths exist: src, lib" in result.reason


@pytest.mark.parametrize("module", [zizmor_scanner, actionlint])
def test_no_workflows_is_ok_with_a_note(tmp_path: Path, module: object) -> None:
    ctx = ScanContext(root=tmp_path, cache=tmp_path, options={"persona": "regular"})
    result = module.run(ctx)  # type: ignore[attr-defined]
    assert result.status is Status.OK
    assert result.notes == ["no workflows in .github/workflows/ — nothing to check"]


def test_pip_audit_without_an_advisory_db_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pip_audit, "find_tool", lambda name: "/bin/true")
    monkeypatch.setenv("CONVEYOR_ADVISORY_DB", str(tmp_path / "no-db"))
    (tmp_path / "requirements.txt").write_text("requests==2.19.0\n", encoding="utf-8")
    options = dict(
        pip_audit.SPEC.options, requirements=["requirements.txt"], uv_lock=False, source="mirror"
    )
    result = pip_audit.run(ScanContext(root=tmp_path, cache=tmp_path, options=options))
    assert result.status is Status.UNAVAILABLE
    assert result.reason.startswith(f"no advisory database at {tmp_path / 'no-db'}")


def test_pip_audit_auto_falls_back_to_the_osv_api_without_a_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free_port: Callable[[], int]
) -> None:
    monkeypatch.setattr(pip_audit, "find_tool", lambda name: "/bin/true")
    monkeypatch.setenv("CONVEYOR_ADVISORY_DB", str(tmp_path / "no-db"))
    (tmp_path / "requirements.txt").write_text("requests==2.19.0\n", encoding="utf-8")
    port = free_port()  # stands in for api.osv.dev, which tests must not contact
    options = dict(
        pip_audit.SPEC.options,
        requirements=["requirements.txt"],
        uv_lock=False,
        osv_url=f"http://127.0.0.1:{port}/v1/query",
    )
    assert options["source"] == "auto"
    result = pip_audit.run(ScanContext(root=tmp_path, cache=tmp_path, options=options))
    assert result.status is Status.UNAVAILABLE
    assert f"cannot reach the advisory source 127.0.0.1:{port}" in result.reason


def test_pip_audit_with_an_unreachable_osv_url_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free_port: Callable[[], int]
) -> None:
    monkeypatch.setattr(pip_audit, "find_tool", lambda name: "/bin/true")
    (tmp_path / "requirements.txt").write_text("requests==2.19.0\n", encoding="utf-8")
    port = free_port()
    options = dict(
        pip_audit.SPEC.options,
        requirements=["requirements.txt"],
        uv_lock=False,
        source="osv",
        osv_url=f"http://127.0.0.1:{port}/v1/query",
    )
    result = pip_audit.run(ScanContext(root=tmp_path, cache=tmp_path, options=options))
    assert result.status is Status.UNAVAILABLE
    assert f"cannot reach the advisory source 127.0.0.1:{port}" in result.reason


def test_npm_audit_without_a_lock_file_is_an_error(tmp_path: Path) -> None:
    ctx = ScanContext(root=tmp_path, cache=tmp_path, options={"paths": ["frontend"]})
    result = npm_audit.run(ctx)
    assert result.status is Status.ERROR
    assert "no package-lock.json in frontend" in result.reason


def test_image_scan_needs_artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trivy_image, "find_tool", lambda name: "/bin/true")
    result = trivy_image.run(ScanContext(root=tmp_path, cache=tmp_path))
    assert result.status is Status.ERROR
    assert "pass --artifacts dist/<version>" in result.reason
    result = trivy_image.run(ScanContext(root=tmp_path, cache=tmp_path, artifacts=tmp_path))
    assert "manifest.json is missing" in result.reason


def test_every_registered_scanner_has_a_unique_name_and_a_description() -> None:
    names = [spec.name for spec in REGISTRY]
    assert len(set(names)) == len(names) == 9
    assert all(spec.description for spec in REGISTRY)


def test_cli_registers_scan_and_advisories() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["scan", "bandit", "--context", "main", "--artifacts", "dist/1.0"])
    assert (args.scanners, args.context, args.artifacts) == (["bandit"], "main", "dist/1.0")
    args = parser.parse_args(["advisories", "serve", "/db", "--port", "0"])
    assert (args.dir, args.host) == ("/db", "127.0.0.1")
    args = parser.parse_args(["advisories", "query", "requests", "2.19.0"])
    assert (args.package, args.version) == ("requests", "2.19.0")
    with pytest.raises(SystemExit):
        parser.parse_args(["scan", "--context", "staging"])
    assert isinstance(args, argparse.Namespace)


def test_scan_list_prints_the_policy(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The console keeps the stdout it was created with; point it at the captured one.
    monkeypatch.setattr(console, "stream", sys.stdout)
    root = Path(__file__).resolve().parents[2]
    assert cli.main(["scan", "--list", "--project", str(root)]) == 0
    out = capsys.readouterr().out
    assert "npm-audit        optional" in out
    assert "trivy-image      required, needs --artifacts" in out


def test_scan_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVEYOR_CACHE_DIR", raising=False)
    assert runner.cache_dir(tmp_path) == tmp_path / ".conveyor" / "cache"
    monkeypatch.setenv("CONVEYOR_CACHE_DIR", "/elsewhere")
    assert runner.cache_dir(tmp_path) == Path("/elsewhere")
