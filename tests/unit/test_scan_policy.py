"""[tool.conveyor.scan]: defaults, validation with key paths and hints, the default context."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from conveyor.errors import ConfigError, UsageError
from conveyor.scanners import policy
from conveyor.scanners.model import Finding
from conveyor.scanners.policy import AllowEntry, default_context, parse
from conveyor.scanners.registry import REGISTRY

ROOT = Path(__file__).resolve().parents[2]


def load(data: dict[str, Any]) -> policy.Policy:
    return parse(data, Path("/project"), "pyproject.toml", REGISTRY)


def test_defaults_without_a_table() -> None:
    rules = load({})
    assert rules.fail_on == "medium"
    assert rules.reports == Path("reports/scan")
    assert rules.unavailable == {"pr": "warn", "main": "fail", "production": "fail"}
    assert rules.scanner("bandit").required
    assert rules.scanner("bandit").options == {"paths": ["src", "backend"]}
    assert not rules.scanner("trivy-vuln").required
    assert not rules.scanner("actionlint").required
    assert rules.scanner("pip-audit").options["source"] == "auto"
    assert rules.scanner("trivy-image").timeout == 900.0
    assert rules.allow == ()


def test_the_repository_policy_loads() -> None:
    rules = policy.load(ROOT, REGISTRY)
    assert rules.fail_on == "medium"
    assert "tests/fixtures/planted" in rules.exclude
    assert rules.scanner("pip-audit").options["uv_packages"] == ["conveyor", "refapi"]


def test_scanner_options_and_allow_entries_parse() -> None:
    rules = load(
        {
            "fail_on": "high",
            "exclude": ["fixtures/", "/vendor"],
            "unavailable": {"pr": "fail"},
            "scanners": {
                "npm-audit": {"required": False, "paths": ["web"], "timeout": 30},
                "zizmor": {"enabled": False, "persona": "pedantic"},
            },
            "allow": [
                {
                    "id": "PYSEC-2018-28",
                    "reason": "not reachable",
                    "expires": date(2030, 1, 1),
                    "scanner": "pip-audit",
                    "location": "requests@*",
                },
                {"id": "B602", "reason": "fixture", "expires": "2030-02-01"},
            ],
        }
    )
    assert rules.fail_on == "high"
    assert rules.exclude == ("fixtures", "vendor")
    assert rules.unavailable["pr"] == "fail"
    assert rules.unavailable["main"] == "fail"
    npm = rules.scanner("npm-audit")
    assert (npm.required, npm.timeout, npm.options) == (False, 30.0, {"paths": ["web"]})
    assert not rules.scanner("zizmor").enabled
    assert rules.allow[0].location == "requests@*"
    assert rules.allow[1].expires == date(2030, 2, 1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"fail_onn": "low"}, r"\[tool.conveyor.scan.fail_onn\]: unknown key .*'fail_on'"),
        ({"fail_on": "severe"}, r"'severe' is not allowed \(allowed: critical, high, medium, low"),
        ({"unavailable": {"prod": "fail"}}, r"unavailable.prod\]: unknown key .*'production'"),
        ({"unavailable": {"main": "ignore"}}, r"'ignore' is not allowed \(allowed: fail, warn\)"),
        ({"scanners": {"bandt": {}}}, r"scanners.bandt\]: unknown key .*did you mean 'bandit'"),
        ({"scanners": {"bandit": {"path": ["x"]}}}, r"bandit.path\]: unknown key .*'paths'"),
        ({"scanners": {"bandit": {"paths": "src"}}}, r"bandit.paths\]: expected a list of strings"),
        ({"scanners": {"bandit": {"required": "yes"}}}, r"expected true or false"),
        ({"scanners": {"bandit": {"timeout": 0}}}, r"expected a positive number"),
        ({"scanners": {"pip-audit": {"source": "osvv"}}}, r"'osvv' is not allowed.*'osv'"),
        ({"allow": {"id": "x"}}, r"expected an array of tables"),
        ({"allow": [{"id": "B1", "reason": "r"}]}, r"allow\[0\].expires\]: required key"),
        ({"allow": [{"id": "B1", "reason": " ", "expires": "2030-01-01"}]}, r"must not be empty"),
        ({"allow": [{"id": "B1", "reason": "r", "expires": "soon"}]}, r"'soon' is not a date"),
        (
            {"allow": [{"id": "B1", "reason": "r", "expires": "2030-01-01", "scanner": "bandid"}]},
            r"unknown scanner 'bandid'.*did you mean 'bandit'",
        ),
        (
            {"allow": [{"id": "B1", "reason": "r", "expires": "2030-01-01", "why": "x"}]},
            r"allow\[0\].why\]",
        ),
    ],
)  # fmt: skip
def test_invalid_policies_name_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(data)


def test_invalid_toml_and_missing_project(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.conveyor.scan\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid TOML"):
        policy.load(tmp_path, REGISTRY)
    with pytest.raises(UsageError, match="does not exist"):
        policy.load(tmp_path / "missing", REGISTRY)


def test_find_project_walks_up(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("", encoding="utf-8")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert policy.find_project(nested) == tmp_path.resolve()


def finding(rule: str = "PYSEC-2018-28", **extra: Any) -> Finding:
    values: dict[str, Any] = {
        "scanner": "pip-audit",
        "rule": rule,
        "severity": "high",
        "location": "requests@2.19.0",
        "message": "m",
        "aliases": ("CVE-2018-18074",),
    }
    values.update(extra)
    return Finding(**values)


def test_allow_entries_match_by_id_alias_scanner_and_location() -> None:
    until = date(2030, 1, 1)
    assert AllowEntry("PYSEC-2018-28", "r", until).matches(finding())
    assert AllowEntry("cve-2018-18074", "r", until).matches(finding())
    assert not AllowEntry("PYSEC-2018-28", "r", until, scanner="trivy-vuln").matches(finding())
    assert AllowEntry("PYSEC-2018-28", "r", until, location="requests@*").matches(finding())
    assert not AllowEntry("PYSEC-2018-28", "r", until, location="urllib3@*").matches(finding())
    assert not AllowEntry("B602", "r", until).matches(finding())


def test_an_entry_expires_after_its_date() -> None:
    entry = AllowEntry("X", "r", date(2030, 1, 1))
    assert not entry.expired(date(2030, 1, 1))
    assert entry.expired(date(2030, 1, 2))


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "pr"),
        ({"CI": "false"}, "pr"),
        ({"CI": "true"}, "main"),
        ({"CI": "1", "GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request"}, "pr"),
        ({"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request"}, "pr"),
        ({"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request_target"}, "pr"),
        ({"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "merge_group"}, "pr"),
        ({"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push", "GITHUB_REF": "refs/heads/main"},
         "main"),
        ({"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "schedule"}, "main"),
        ({"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push", "GITHUB_REF": "refs/tags/v1.0.0"},
         "production"),
        ({"CONVEYOR_SCAN_CONTEXT": "production"}, "production"),
        ({"CONVEYOR_SCAN_CONTEXT": "main", "GITHUB_ACTIONS": "true",
          "GITHUB_EVENT_NAME": "pull_request"}, "main"),
    ],
)  # fmt: skip
def test_default_context(env: dict[str, str], expected: str) -> None:
    assert default_context(env) == expected


def test_a_wrong_forced_context_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"unknown context.*did you mean 'main'"):
        default_context({"CONVEYOR_SCAN_CONTEXT": "mian"})
