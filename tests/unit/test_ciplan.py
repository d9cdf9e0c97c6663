"""ci-plan: which GitHub jobs an event runs, from workflow files, without GitHub."""

from __future__ import annotations

import importlib
import textwrap
import typing
from pathlib import Path

import pytest

from conveyor import ciplan
from conveyor.errors import ConfigError, UsageError

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"


def running(plan: ciplan.CIPlan, file: str) -> list[str]:
    return [job.title for job in plan.workflow(file).running()]


def commands(plan: ciplan.CIPlan, file: str, title: str) -> list[str]:
    for job in plan.workflow(file).jobs:
        if job.title == title:
            return [str(c) for c in job.commands]
    raise AssertionError(f"no job {title} in {file}")


def status(plan: ciplan.CIPlan, file: str, key: str) -> set[str]:
    return {job.status for job in plan.workflow(file).jobs if job.key == key}


# --- the repository's own workflows -------------------------------------------------------


BACKEND_CHECKS = ["static (lint)", "static (typecheck)", "test (3.11)", "integration"]


def test_push_to_main_runs_checks_release_then_staging_then_production() -> None:
    plan = ciplan.plan(WORKFLOWS, event="push", ref="refs/heads/main")
    assert running(plan, "ci-cd.yml") == [
        "changes",
        *BACKEND_CHECKS,
        "frontend",
        "release",
        "deploy-staging",
        "deploy-production",
    ]
    assert commands(plan, "ci-cd.yml", "static (lint)") == [
        "scripts/setup",
        ".venv/bin/nox -s lint",
    ]
    assert commands(plan, "ci-cd.yml", "integration") == [
        "sudo apt-get update -q",
        "sudo apt-get install -y -q --no-install-recommends docker-registry",
        "scripts/setup",
        ".venv/bin/nox -s integration",
    ]
    assert commands(plan, "ci-cd.yml", "frontend") == ["scripts/setup", ".venv/bin/nox -s frontend"]
    assert commands(plan, "ci-cd.yml", "release")[-1] == ".venv/bin/nox -s build image scan"
    assert commands(plan, "ci-cd.yml", "deploy-staging") == [
        "scripts/setup",
        ".venv/bin/invoke deploy --env staging",
    ]
    assert commands(plan, "ci-cd.yml", "deploy-production") == [
        "scripts/setup",
        ".venv/bin/invoke promote --from staging --to production",
    ]
    production = job(plan, "ci-cd.yml", "deploy-production")
    assert production.environment == "production"
    assert production.needs == ("deploy-staging",)
    assert production.concurrency == (
        "deploy-production (never cancels the running one; a newer one replaces one still waiting)"
    )
    assert running(plan, "security-scan.yml") == ["scan", "upload-sarif"]
    assert not plan.workflow("_nox.yml").triggered
    assert plan.unknowns == []


def job(plan: ciplan.CIPlan, file: str, title: str) -> ciplan.PlannedJob:
    return next(j for j in plan.workflow(file).jobs if j.title == title)


def releases(plan: ciplan.CIPlan) -> list[str]:
    """Every running job, in any workflow, that builds a release or deploys one."""
    return [
        f"{file}:{j.title}"
        for file, j in plan.jobs()
        if j.environment or any("nox -s build" in c.text for c in j.commands)
    ]


ONE_RELEASE = ["ci-cd.yml:release", "ci-cd.yml:deploy-staging", "ci-cd.yml:deploy-production"]


@pytest.mark.parametrize(
    ("changed", "checks"),
    [
        (["backend/src/refapi/app.py", "frontend/src/main.ts"], [*BACKEND_CHECKS, "frontend"]),
        (["frontend/src/main.ts", "frontend/package.json"], ["frontend"]),
        (["backend/src/refapi/app.py"], BACKEND_CHECKS),
        (["src/conveyor/cli.py"], BACKEND_CHECKS),
        (["docker/Dockerfile.web"], [*BACKEND_CHECKS, "frontend"]),
        ([".github/workflows/_nox.yml"], [*BACKEND_CHECKS, "frontend"]),
    ],
)
def test_one_commit_gives_one_release_one_staging_deploy_and_one_approval(
    changed: list[str], checks: list[str]
) -> None:
    plan = ciplan.plan(WORKFLOWS, event="push", changed=changed)
    # Only the changed areas' checks run; the others are skipped, not failed.
    assert running(plan, "ci-cd.yml") == [
        "changes",
        *checks,
        *[r.split(":")[1] for r in ONE_RELEASE],
    ]
    skipped = [j.title for j in plan.workflow("ci-cd.yml").jobs if j.status == ciplan.SKIPPED]
    assert skipped == [t for t in [*BACKEND_CHECKS, "frontend"] if t not in checks]
    # Whatever changed: one release of every image, one staging deploy, one promotion, which
    # is the one job in the `production` environment, so its reviewers approve once.
    assert releases(plan) == ONE_RELEASE
    text = ciplan.render(plan)
    assert "  staging: ci-cd.yml deploy-staging\n" in text
    assert "  production: ci-cd.yml deploy-production\n" in text
    assert plan.unknowns == []


def test_the_changes_job_says_which_areas_changed() -> None:
    only_frontend = ciplan.plan(WORKFLOWS, event="push", changed=["frontend/src/main.ts"])
    assert job(only_frontend, "ci-cd.yml", "changes").outputs == (
        ("backend", "false"),
        ("frontend", "true"),
    )
    assert "→ outputs: backend=false, frontend=true" in ciplan.render(only_frontend)
    assert job(only_frontend, "ci-cd.yml", "static (lint)").reason == (
        "if: needs.changes.outputs.backend == 'true' is false"
    )
    # A manual run checks every area, whatever the last commit touched.
    manual = ciplan.plan(WORKFLOWS, event="workflow_dispatch")
    assert job(manual, "ci-cd.yml", "changes").outputs == (
        ("backend", "true"),
        ("frontend", "true"),
    )
    assert job(manual, "ci-cd.yml", "changes").actions == ("actions/checkout v5.0.0",)


def test_pull_request_runs_checks_and_never_deploys() -> None:
    plan = ciplan.plan(WORKFLOWS, event="pull_request", ref="refs/heads/main")
    assert running(plan, "ci-cd.yml") == ["changes", *BACKEND_CHECKS, "frontend", "release"]
    jobs = {job.key: job for job in plan.workflow("ci-cd.yml").jobs}
    assert jobs["deploy-staging"].status == ciplan.SKIPPED
    assert "github.event_name == 'push'" in jobs["deploy-staging"].reason
    assert jobs["deploy-production"].status == ciplan.SKIPPED
    assert running(plan, "security-scan.yml") == ["scan", "upload-sarif"]
    text = ciplan.render(plan)
    assert "Path filters are assumed to match" in text
    assert "skipped: deploy-staging" in text
    assert "Deploys" not in text
    only_frontend = ciplan.plan(WORKFLOWS, event="pull_request", changed=["frontend/index.html"])
    assert running(only_frontend, "ci-cd.yml") == ["changes", "frontend", "release"]


def test_schedule_runs_only_the_security_scan() -> None:
    plan = ciplan.plan(WORKFLOWS, event="schedule")
    assert [wf.file for wf in plan.workflows if wf.triggered] == ["security-scan.yml"]
    assert running(plan, "security-scan.yml") == ["scan", "upload-sarif"]
    assert commands(plan, "security-scan.yml", "scan")[-1] == ".venv/bin/nox -s scan"
    assert "no schedule trigger" in plan.workflow("ci-cd.yml").reason


@pytest.mark.parametrize("ref", ["refs/heads/feature", "refs/tags/v1.0.0"])
def test_push_elsewhere_than_main_runs_no_pipeline(ref: str) -> None:
    plan = ciplan.plan(WORKFLOWS, event="push", ref=ref)
    assert not plan.workflow("ci-cd.yml").triggered
    assert not plan.workflow("security-scan.yml").triggered


def test_manual_run_on_main_checks_but_does_not_deploy() -> None:
    plan = ciplan.plan(WORKFLOWS, event="workflow_dispatch")
    assert status(plan, "ci-cd.yml", "deploy-staging") == {ciplan.SKIPPED}
    assert status(plan, "ci-cd.yml", "release") == {ciplan.RUNS}


def test_changed_files_decide_path_filters() -> None:
    docs = ciplan.plan(WORKFLOWS, event="push", changed=["README.md", "docs/x.md"])
    assert [wf.file for wf in docs.workflows if wf.triggered] == ["security-scan.yml"]
    assert "no changed file matches" in docs.workflow("ci-cd.yml").reason
    assert releases(docs) == []
    pull = ciplan.plan(WORKFLOWS, event="pull_request", changed=["README.md"])
    assert [wf.file for wf in pull.workflows if wf.triggered] == ["security-scan.yml"]


def test_unknown_event_and_short_ref_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="did you mean 'push'"):
        ciplan.plan(WORKFLOWS, event="psuh")
    with pytest.raises(UsageError, match="refs/heads/BRANCH"):
        ciplan.plan(WORKFLOWS, event="push", ref="main")


# --- the evaluator and the planner on small workflows --------------------------------------


def write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture
def workflows(tmp_path: Path) -> Path:
    return tmp_path / ".github" / "workflows"


def test_unknown_expression_is_reported_not_assumed_true(workflows: Path) -> None:
    write(
        workflows,
        "ci.yml",
        """\
        on: push
        jobs:
          build:
            runs-on: ubuntu-latest
            steps:
              - run: nox -s build
          publish:
            needs: build
            if: vars.PUBLISH == 'yes'
            runs-on: ubuntu-latest
            steps:
              - run: invoke deploy --env staging
          after:
            needs: publish
            runs-on: ubuntu-latest
            steps:
              - run: invoke status --env staging
        """,
    )
    plan = ciplan.plan(workflows, event="push")
    jobs = {job.key: job for job in plan.workflow("ci.yml").jobs}
    assert jobs["build"].status == ciplan.RUNS
    assert jobs["publish"].status == ciplan.UNKNOWN
    assert "vars.PUBLISH" in jobs["publish"].reason
    assert jobs["after"].status == ciplan.UNKNOWN
    assert "needs publish" in jobs["after"].reason
    assert any("vars.PUBLISH" in u for u in plan.unknowns)
    assert "UNKNOWN: publish" in ciplan.render(plan)


def test_matrix_include_exclude_and_reusable_inputs(workflows: Path) -> None:
    write(
        workflows,
        "_run.yml",
        """\
        on:
          workflow_call:
            inputs:
              session: {type: string, required: true}
              extra: {type: string, default: ""}
        jobs:
          run:
            runs-on: ubuntu-latest
            env:
              SESSION: ${{ inputs.session }}
            steps:
              - uses: actions/checkout@0123456789abcdef0123456789abcdef01234567 # v9.9.9
              - if: inputs.extra != ''
                run: echo ${{ inputs.extra }}
              - run: nox -s $SESSION
        """,
    )
    write(
        workflows,
        "ci.yml",
        """\
        on: [push, pull_request]
        jobs:
          test:
            strategy:
              matrix:
                python: ["3.11", "3.12"]
                os: [linux, mac]
                exclude:
                  - {python: "3.12", os: mac}
                include:
                  - {python: "3.13", os: linux}
            uses: ./.github/workflows/_run.yml
            with:
              session: test-${{ matrix.python }}
              extra: ${{ github.event_name == 'push' && 'pushed' || '' }}
        """,
    )
    push = ciplan.plan(workflows, event="push")
    titles = running(push, "ci.yml")
    assert titles == [
        "test (3.11, linux)",
        "test (3.11, mac)",
        "test (3.12, linux)",
        "test (3.13, linux)",
    ]
    assert commands(push, "ci.yml", "test (3.12, linux)") == ["echo pushed", "nox -s test-3.12"]
    job = push.workflow("ci.yml").jobs[0]
    assert job.calls == "_run.yml"
    assert job.actions == ("actions/checkout v9.9.9",)
    pull = ciplan.plan(workflows, event="pull_request")
    assert commands(pull, "ci.yml", "test (3.11, linux)") == ["nox -s test-3.11"]


def test_status_functions_and_failure_path(workflows: Path) -> None:
    write(
        workflows,
        "ci.yml",
        """\
        on: push
        jobs:
          gate:
            if: github.ref == 'refs/heads/release'
            runs-on: ubuntu-latest
            steps: [{run: nox -s scan}]
          report:
            needs: gate
            if: ${{ always() }}
            runs-on: ubuntu-latest
            steps: [{run: invoke report --env staging}]
          notify:
            needs: gate
            if: failure()
            runs-on: ubuntu-latest
            steps: [{run: invoke status --env staging}]
          next:
            needs: gate
            runs-on: ubuntu-latest
            steps: [{run: invoke deploy --env staging}]
        """,
    )
    plan = ciplan.plan(workflows, event="push")
    jobs = {job.key: job for job in plan.workflow("ci.yml").jobs}
    assert jobs["gate"].status == ciplan.SKIPPED
    assert jobs["report"].status == ciplan.RUNS  # always() runs after a skipped need
    assert jobs["notify"].status == ciplan.SKIPPED  # the plan is of the all-green run
    assert jobs["next"].status == ciplan.SKIPPED
    assert jobs["next"].reason == "needs gate, which does not run"


def test_a_skipped_job_upstream_skips_a_job_without_a_status_function(workflows: Path) -> None:
    # GitHub's implicit success() covers every job upstream, not only the direct needs: with
    # `check` skipped, `deploy` is skipped although its one need, `gate`, ran (runner#2205).
    write(
        workflows,
        "ci.yml",
        """\
        on: push
        jobs:
          check:
            if: github.ref == 'refs/heads/release'
            runs-on: ubuntu-latest
            steps: [{run: nox -s lint}]
          gate:
            needs: check
            if: ${{ !failure() && !cancelled() }}
            runs-on: ubuntu-latest
            steps: [{run: nox -s build}]
          deploy:
            needs: gate
            runs-on: ubuntu-latest
            steps: [{run: invoke deploy --env staging}]
          guarded:
            needs: gate
            if: ${{ !failure() && !cancelled() && needs.gate.result == 'success' }}
            runs-on: ubuntu-latest
            steps: [{run: invoke deploy --env staging}]
          after-skip:
            needs: check
            if: ${{ !cancelled() && needs.check.result == 'skipped' }}
            runs-on: ubuntu-latest
            steps: [{run: invoke status --env staging}]
          needs-success:
            needs: gate
            if: success()
            runs-on: ubuntu-latest
            steps: [{run: invoke status --env staging}]
        """,
    )
    plan = ciplan.plan(workflows, event="push")
    jobs = {job.key: job for job in plan.workflow("ci.yml").jobs}
    assert jobs["check"].status == ciplan.SKIPPED
    assert jobs["gate"].status == ciplan.RUNS
    assert jobs["deploy"].status == ciplan.SKIPPED
    assert jobs["deploy"].reason.startswith("needs gate, which needs check, which does not run")
    assert jobs["guarded"].status == ciplan.RUNS
    assert jobs["after-skip"].status == ciplan.RUNS
    assert jobs["needs-success"].status == ciplan.SKIPPED  # success(): check has not succeeded
    assert plan.unknowns == []


PATHS_FILTER = "dorny/paths-filter@7b450fff21473bca461d4b92ce414b9d0420d706 # v4.0.2"


def test_paths_filter_outputs_follow_the_changed_files(workflows: Path) -> None:
    write(
        workflows,
        "ci.yml",
        f"""\
        on: push
        jobs:
          changes:
            runs-on: ubuntu-latest
            outputs:
              api: ${{{{ steps.filter.outputs.api }}}}
              web: ${{{{ steps.filter.outputs.web }}}}
              docs: ${{{{ steps.filter.outputs.docs }}}}
              which: ${{{{ steps.filter.outputs.changes }}}}
              skipped: ${{{{ steps.never.outputs.anything }}}}
            steps:
              - id: filter
                uses: {PATHS_FILTER}
                with:
                  filters: |
                    api: ["api/**", "!api/**/*.md"]
                    web:
                      - added|modified: "web/**"
                    docs: [["docs/**"], "*.md"]
              - id: never
                if: github.event_name == 'schedule'
                uses: {PATHS_FILTER}
                with:
                  filters: "x: x/**"
          api:
            needs: changes
            if: needs.changes.outputs.api == 'true'
            runs-on: ubuntu-latest
            steps: [{{run: nox -s test}}]
          web:
            needs: changes
            if: needs.changes.outputs.web == 'true'
            runs-on: ubuntu-latest
            steps: [{{run: nox -s frontend}}]
        """,
    )
    plan = ciplan.plan(workflows, event="push", changed=["web/app.ts", "README.md"])
    changes = job(plan, "ci.yml", "changes")
    assert dict(changes.outputs) == {
        "api": "true",  # "!api/**/*.md" on its own selects every file outside it
        "web": "true",
        "docs": "true",
        "which": '["api", "web", "docs"]',
        "skipped": "",  # a skipped step's outputs read as ''
    }
    only_api_docs = ciplan.plan(workflows, event="push", changed=["api/README.md"])
    assert dict(job(only_api_docs, "ci.yml", "changes").outputs)["web"] == "false"
    assert running(only_api_docs, "ci.yml") == ["changes", "api"]
    # Without a changed-file list every filter is assumed to match, as `paths` filters are.
    assumed = ciplan.plan(workflows, event="push")
    assert running(assumed, "ci.yml") == ["changes", "api", "web"]


def test_paths_filter_reads_filters_from_a_file_and_names_a_bad_one(workflows: Path) -> None:
    root = workflows.parent.parent
    write(root / ".github", "filters.yml", "api: ['api/**']\n")
    text = f"""\
        on: push
        jobs:
          changes:
            runs-on: ubuntu-latest
            outputs:
              api: ${{{{ steps.filter.outputs.api }}}}
            steps:
              - id: filter
                uses: {PATHS_FILTER}
                with:
                  filters: FILTERS
        """
    write(workflows, "ci.yml", text.replace("FILTERS", ".github/filters.yml"))
    plan = ciplan.plan(workflows, event="push", changed=["api/x.py"])
    assert job(plan, "ci.yml", "changes").outputs == (("api", "true"),)
    write(workflows, "ci.yml", text.replace("FILTERS", ".github/nowhere.yml"))
    with pytest.raises(ConfigError, match=r"cannot read filters .*nowhere\.yml"):
        ciplan.plan(workflows, event="push", changed=["api/x.py"])
    write(root / ".github", "filters.yml", "api: {nested: 3}\n")
    write(workflows, "ci.yml", text.replace("FILTERS", ".github/filters.yml"))
    with pytest.raises(ConfigError, match="filter 'api' has 3"):
        ciplan.plan(workflows, event="push", changed=["api/x.py"])


def test_outputs_only_github_knows_make_the_job_after_them_unknown(workflows: Path) -> None:
    write(
        workflows,
        "ci.yml",
        """\
        on: push
        jobs:
          probe:
            runs-on: ubuntu-latest
            outputs:
              ok: ${{ steps.look.outputs.ok }}
              version: ${{ steps.read.outputs.version }}
            steps:
              - id: look
                uses: actions/github-script@0123456789abcdef0123456789abcdef01234567 # v8.0.0
              - id: read
                run: invoke status --env staging
          act:
            needs: probe
            if: needs.probe.outputs.ok == 'true'
            runs-on: ubuntu-latest
            steps: [{run: invoke deploy --env staging}]
        """,
    )
    plan = ciplan.plan(workflows, event="push")
    assert job(plan, "ci.yml", "probe").outputs == (("ok", None), ("version", None))
    assert "→ outputs: ok=unknown, version=unknown" in ciplan.render(plan)
    assert job(plan, "ci.yml", "act").status == ciplan.UNKNOWN
    assert any("actions/github-script are known only on GitHub" in u for u in plan.unknowns)
    assert any("step read writes its outputs on GitHub" in u for u in plan.unknowns)


def test_two_deploy_jobs_into_one_environment_are_called_out(workflows: Path) -> None:
    # The shape this repository had: one pipeline per area, each promoting to production.
    for area in ("backend", "frontend"):
        write(
            workflows,
            f"{area}.yml",
            """\
            on: push
            jobs:
              deploy-production:
                runs-on: ubuntu-latest
                environment: production
                steps: [{run: invoke promote --from staging --to production}]
            """,
        )
    text = ciplan.render(ciplan.plan(workflows, event="push"))
    assert (
        "  production: 2 jobs — backend.yml deploy-production, frontend.yml deploy-production"
        in text
    )


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("github.event_name == 'push'", True),
        ("github.event_name == 'PUSH'", True),  # GitHub compares strings ignoring case
        ("github.event_name != 'push' || github.ref == 'refs/heads/main'", True),
        ("!(github.ref == 'refs/heads/main')", False),
        ("startsWith(github.ref, 'refs/heads/')", True),
        ("contains(github.ref, 'main') && endsWith(github.ref, 'n')", True),
        ("github.ref_name", "main"),
        ("false || 'fallback'", "fallback"),
        ("1 < 2 && 3 >= 3", True),
        ("null == 0", True),
        ("inputs.flag && 'yes' || 'no'", "yes"),
    ],
)
def test_expressions(expression: str, expected: object) -> None:
    contexts = {
        "github": ciplan.github_context("push", "refs/heads/main"),
        "inputs": {"flag": True},
    }
    assert ciplan.Evaluator(contexts).evaluate(expression) == expected


@pytest.mark.parametrize(
    "expression",
    [
        "secrets.TOKEN != ''",
        "github.event.pull_request.head.repo.fork",
        "fromJSON(inputs.list)",
        "github.ref == 'refs/heads/main' && vars.ENABLED",
        "matrix['python']",
    ],
)
def test_expressions_that_cannot_be_known(expression: str) -> None:
    contexts = {"github": ciplan.github_context("push", "refs/heads/main"), "inputs": {}}
    assert isinstance(ciplan.Evaluator(contexts).evaluate(expression), ciplan.Unknown)


def test_an_unknown_operand_does_not_hide_a_known_answer() -> None:
    contexts = {"github": ciplan.github_context("pull_request", "refs/heads/main")}
    evaluator = ciplan.Evaluator(contexts)
    # false && anything is false; true || anything is true — knowable without the unknown.
    assert evaluator.evaluate("github.event_name == 'push' && vars.X") is False
    assert evaluator.evaluate("github.event_name == 'pull_request' || vars.X") is True


@pytest.mark.parametrize(
    ("value", "patterns", "expected"),
    [
        ("main", ["main"], True),
        ("release/1.2", ["release/*"], True),
        ("release/1.2/hotfix", ["release/*"], False),
        ("release/1.2/hotfix", ["release/**"], True),
        ("release/beta", ["release/**", "!release/beta"], False),
        ("v1.2.3", ["v[0-9]+.*"], True),
        ("docs/readme.md", ["**.md"], True),
        ("src/conveyor/ciplan.py", ["src/**", "!src/**/*.py"], False),
    ],
)
def test_filter_patterns(value: str, patterns: list[str], expected: bool) -> None:
    assert ciplan.matches_filters(value, patterns) is expected


def test_tag_only_filters_do_not_run_for_branches(workflows: Path) -> None:
    write(
        workflows,
        "release.yml",
        """\
        on:
          push:
            tags: ["v*"]
        jobs:
          publish:
            runs-on: ubuntu-latest
            steps: [{run: nox -s build}]
        """,
    )
    assert not ciplan.plan(workflows, event="push").workflow("release.yml").triggered
    assert (
        ciplan.plan(workflows, event="push", ref="refs/tags/v1.0").workflow("release.yml").triggered
    )


def test_broken_workflows_are_config_errors(workflows: Path) -> None:
    write(workflows, "bad.yml", "on: push\njobs: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yml line \d+: not valid YAML"):
        ciplan.plan(workflows, event="push")
    (workflows / "bad.yml").unlink()
    write(
        workflows,
        "cycle.yml",
        """\
        on: push
        jobs:
          a: {needs: b, runs-on: x, steps: [{run: nox -s lint}]}
          b: {needs: a, runs-on: x, steps: [{run: nox -s lint}]}
        """,
    )
    with pytest.raises(ConfigError, match="cycle"):
        ciplan.plan(workflows, event="push")
    write(
        workflows,
        "cycle.yml",
        """\
        on: push
        jobs:
          a: {needs: biuld, runs-on: x, steps: [{run: nox -s lint}]}
          build: {runs-on: x, steps: [{run: nox -s build}]}
        """,
    )
    with pytest.raises(ConfigError, match="did you mean 'build'"):
        ciplan.plan(workflows, event="push")


def test_missing_folder_says_where(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no workflow folder"):
        ciplan.plan(tmp_path / ".github" / "workflows", event="push")


def test_the_package_exports_its_api_and_no_submodule_shadows_it() -> None:
    for name in ciplan.__all__:
        assert hasattr(ciplan, name), name
    # `render` and `triggers` are functions; a submodule of either name would replace them.
    assert callable(ciplan.render)
    assert callable(ciplan.triggers)
    assert importlib.import_module("conveyor.ciplan.rendering").render is ciplan.render
    statuses = {ciplan.RUNS, ciplan.SKIPPED, ciplan.UNKNOWN}
    assert set(typing.get_args(ciplan.JobStatus)) == statuses
