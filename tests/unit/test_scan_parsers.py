"""Each tool's JSON into the one finding model (outputs recorded from the real tools)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conveyor.scanners import (
    _trivy,
    actionlint,
    bandit,
    npm_audit,
    pip_audit,
    workflow_schema,
    zizmor,
)
from conveyor.scanners.base import ScanContext

ROOT = Path("/project")
CTX = ScanContext(root=ROOT, cache=Path("/cache"), options={"severity": "high"})


def test_bandit() -> None:
    data = {
        "errors": [],
        "results": [
            {
                "filename": "app/jobs.py",
                "issue_confidence": "HIGH",
                "issue_severity": "HIGH",
                "issue_text": "subprocess call with shell=True identified, security issue.",
                "line_number": 10,
                "more_info": "https://bandit.readthedocs.io/en/1.9.4/plugins/b602.html",
                "test_id": "B602",
                "test_name": "subprocess_popen_with_shell_equals_true",
            },
            {
                "filename": "/project/app/jobs.py",
                "issue_confidence": "MEDIUM",
                "issue_severity": "LOW",
                "issue_text": "Possible hardcoded password: 'correct-horse-battery-staple'",
                "line_number": 5,
                "more_info": "https://bandit.readthedocs.io/en/1.9.4/plugins/b105.html",
                "test_id": "B105",
                "test_name": "hardcoded_password_string",
            },
        ],
    }
    shell, password = bandit.parse(data, CTX)
    assert (shell.rule, shell.severity, shell.location) == ("B602", "high", "app/jobs.py:10")
    assert (password.severity, password.path, password.line) == ("low", "app/jobs.py", 5)
    assert "correct-horse" not in password.message
    assert "(confidence medium)" in password.message


def test_pip_audit() -> None:
    data = {
        "dependencies": [
            {"name": "certifi", "version": "2026.10.19", "vulns": []},
            {
                "name": "requests",
                "version": "2.19.0",
                "vulns": [
                    {
                        "id": "PYSEC-2018-28",
                        "fix_versions": ["2.20.0"],
                        "aliases": ["CVE-2018-18074", "GHSA-x84v-xcm2-53pg"],
                        "description": "The Requests package before 2.20.0 sends an HTTP\n"
                        "Authorization header to an http URI",
                    },
                    {"id": "PYSEC-2099-1", "fix_versions": [], "aliases": [], "description": ""},
                ],
            },
        ],
        "fixes": [],
    }
    target = pip_audit.Target("requirements.txt", Path("/tmp/r.txt"), "requirements.txt")
    (found, other), skipped = pip_audit.parse(data, target, CTX)
    assert skipped == []
    assert (found.rule, found.severity, found.location) == (
        "PYSEC-2018-28",
        "high",
        "requests@2.19.0",
    )
    assert found.aliases == ("CVE-2018-18074", "GHSA-x84v-xcm2-53pg")
    assert found.fix == "upgrade to 2.20.0"
    assert "\n" not in found.message
    assert found.path == "requirements.txt"
    assert other.fix == "no fixed version published"
    assert other.message == "known vulnerability"


def test_pip_audit_skips_are_reported() -> None:
    data = {"dependencies": [{"name": "private-pkg", "skip_reason": "not on PyPI"}]}
    target = pip_audit.Target("x", Path("/x"), "x")
    assert pip_audit.parse(data, target, CTX) == ([], ["private-pkg: not on PyPI"])


def test_pip_audit_fix_picks_the_first_later_version() -> None:
    assert pip_audit._fix("2.5.0", ["2.3.1", "2.6.0", "3.0.0"]) == "upgrade to 2.6.0"


def test_requirement_pins_are_read_canonically() -> None:
    text = (
        "Flask_Caching==2.0 ; python_version >= '3'\n"
        "    --hash=sha256:x\n"
        "requests[socks]==2.19.0 \\\n"
    )
    assert pip_audit.pins_of(text) == frozenset({"flask-caching==2.0", "requests==2.19.0"})


def test_trivy_secrets_misconfigurations_and_vulnerabilities() -> None:
    data: dict[str, Any] = {
        "Results": [
            {
                "Target": "app/settings.py",
                "Class": "secret",
                "Secrets": [
                    {
                        "RuleID": "github-pat",
                        "Category": "GitHub",
                        "Severity": "CRITICAL",
                        "Title": "GitHub Personal Access Token",
                        "StartLine": 3,
                        "Match": 'GITHUB_TOKEN = "****************************************"',
                    }
                ],
            },
            {
                "Target": "Dockerfile",
                "Class": "config",
                "Misconfigurations": [
                    {
                        "ID": "DS-0002",
                        "Title": "Image user should not be 'root'",
                        "Message": "Specify at least 1 USER command in Dockerfile",
                        "Resolution": "Add 'USER <non root user name>' line to the Dockerfile",
                        "Severity": "HIGH",
                        "PrimaryURL": "https://avd.aquasec.com/misconfig/ds-0002",
                        "Status": "FAIL",
                        "CauseMetadata": {"Provider": "Dockerfile"},
                    },
                    {"ID": "DS-0026", "Severity": "LOW", "Status": "PASS"},
                ],
            },
            {
                "Target": "uv.lock",
                "Class": "lang-pkgs",
                "Vulnerabilities": [
                    {
                        "VulnerabilityID": "CVE-2024-35195",
                        "PkgName": "requests",
                        "InstalledVersion": "2.31.0",
                        "FixedVersion": "2.32.0",
                        "Severity": "MEDIUM",
                        "Title": "requests: subsequent requests ignore verify=False",
                    }
                ],
            },
        ]
    }
    vuln, misconfig, secret = sorted(
        _trivy.parse_report(data, scanner="trivy-fs", ctx=CTX), key=lambda f: f.rule
    )
    assert (secret.rule, secret.severity, secret.location) == (
        "github-pat", "critical", "app/settings.py:3",
    )  # fmt: skip
    assert (misconfig.rule, misconfig.severity, misconfig.location) == (
        "DS-0002", "high", "Dockerfile",
    )  # fmt: skip
    assert misconfig.fix.startswith("Add 'USER")
    assert (vuln.location, vuln.fix, vuln.path) == (
        "requests@2.31.0 (uv.lock)", "upgrade to 2.32.0", "uv.lock",
    )  # fmt: skip
    image = _trivy.parse_report(
        data, scanner="trivy-image", ctx=CTX, prefix="api:", component="api",
        artifact="dist/1.0/manifest.json",
    )  # fmt: skip
    assert {f.component for f in image} == {"api"}
    assert {f.path for f in image} == {"dist/1.0/manifest.json"}
    assert any(f.location == "api:app/settings.py:3" for f in image)


def test_trivy_error_log_lines_become_warnings_except_the_benign_one() -> None:
    stderr = (
        "2026-11-27T08:00:54Z\tINFO\t[misconfig] Misconfiguration scanning is enabled\n"
        "2026-11-27T08:00:54Z\tERROR\t[misconfig] Falling back to embedded checks\terr=x\n"
        '2026-11-27T08:00:57Z\tERROR\t[dockerfile scanner] Failed to parse file\tfile_path="D"\n'
    )
    assert _trivy.logged_problems(stderr) == [
        'trivy: [dockerfile scanner] Failed to parse file file_path="D"'
    ]


def test_zizmor() -> None:
    location = {
        "symbolic": {
            "key": {"Local": {"verbatim_path": ".github/workflows/greet.yml"}},
            "annotation": "may expand into attacker-controllable code",
            "kind": "Primary",
        },
        "concrete": {"location": {"start_point": {"row": 11, "column": 34}}},
    }
    hidden = {"symbolic": {"kind": "Hidden"}, "concrete": {"location": {"start_point": {"row": 1}}}}
    data = [
        {
            "ident": "template-injection",
            "desc": "code injection via template expansion",
            "url": "https://docs.zizmor.sh/audits/#template-injection",
            "determinations": {"confidence": "High", "severity": "High", "persona": "Regular"},
            "locations": [hidden, location],
            "ignored": False,
            "fixes": [{"title": "replace expression with environment variable"}],
        },
        {
            "ident": "dangerous-triggers",
            "desc": "use of fundamentally insecure workflow trigger",
            "determinations": {"confidence": "Medium", "severity": "Informational"},
            "locations": [location],
            "ignored": False,
            "fixes": [],
        },
    ]
    injection, trigger = zizmor.parse(data, CTX)
    assert (injection.rule, injection.severity) == ("template-injection", "high")
    assert injection.location == ".github/workflows/greet.yml:12"
    assert injection.fix == "replace expression with environment variable"
    assert "attacker-controllable" in injection.message
    assert trigger.severity == "info"


def test_workflow_schema() -> None:
    data = {
        "status": "fail",
        "errors": [
            {
                "filename": "/project/.github/workflows/bad.yml",
                "path": "$.jobs.x",
                "message": "... is not valid under any of the given schemas",
                "best_deep_match": {
                    "path": "$.jobs.x",
                    "message": "Additional properties are not allowed ('stepz' was unexpected)",
                },
            }
        ],
        "parse_errors": [{"filename": ".github/workflows/broken.yml", "message": "Failed"}],
    }
    schema, parse_error = workflow_schema.parse(data, CTX)
    assert (schema.severity, schema.location) == ("medium", ".github/workflows/bad.yml $.jobs.x")
    assert "stepz" in schema.message
    assert (parse_error.rule, parse_error.severity) == ("parse", "high")


def test_actionlint() -> None:
    data = [
        {
            "file": ".github/workflows/greet.yml",
            "line": 12,
            "column": 35,
            "message": '"github.event.pull_request.title" is potentially untrusted.',
            "kind": "expression",
        },
        {"file": "w.yml", "line": 6, "column": 5, "message": 'unexpected key "stepz"',
         "kind": "syntax-check"},
    ]  # fmt: skip
    untrusted, syntax = actionlint.parse(data, CTX)
    assert (untrusted.severity, untrusted.location) == ("high", ".github/workflows/greet.yml:12")
    assert (syntax.rule, syntax.severity) == ("syntax-check", "medium")


def test_npm_audit(tmp_path: Path) -> None:
    data = {
        "auditReportVersion": 2,
        "vulnerabilities": {
            "vite": {
                "name": "vite",
                "severity": "moderate",
                "via": [
                    {
                        "source": 1099999,
                        "name": "vite",
                        "title": "Vite's server.fs.deny bypassed",
                        "url": "https://github.com/advisories/GHSA-xxxx-yyyy-zzzz",
                        "severity": "moderate",
                        "range": ">=5.0.0 <5.4.12",
                    }
                ],
                "fixAvailable": {"name": "vite", "version": "5.4.12", "isSemVerMajor": False},
            },
            "esbuild": {
                "name": "esbuild",
                "severity": "low",
                "via": ["vite"],
                "fixAvailable": True,
            },
        },
    }
    lock = {"packages": {"node_modules/vite": {"version": "5.4.0"}}}
    ctx = ScanContext(root=tmp_path, cache=tmp_path)
    (found,) = npm_audit.parse(data, "frontend", lock, ctx)
    assert (found.rule, found.severity, found.location) == (
        "GHSA-xxxx-yyyy-zzzz", "medium", "vite@5.4.0",
    )  # fmt: skip
    assert found.fix == "upgrade vite to 5.4.12"
    assert found.path == "frontend/package-lock.json"
