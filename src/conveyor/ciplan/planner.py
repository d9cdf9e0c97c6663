"""The planner: from the workflow files and an event to the jobs that would run, in order.

It walks each triggered workflow's job graph (``needs``, matrix expansion, ``if:``) and resolves
calls of local reusable workflows to the commands they run with the inputs given. Jobs pass
results along as GitHub does: ``needs.<job>.result`` and ``.outputs`` (a job's ``outputs:`` from
its steps' outputs, known for the actions ``actions`` models), and an ``if:`` without a status
function requires every job upstream, not only the direct needs, to have succeeded. It touches
nothing: the plan is a value, printed by ``invoke ci-plan`` and compared exactly in the tests.
The plan is of the run where every job succeeds; what cannot be known here is reported as
unknown, never assumed.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from conveyor.ciplan.actions import SkippedOutputs, step_outputs
from conveyor.ciplan.expressions import (
    Evaluator,
    Unknown,
    Value,
    as_text,
    condition_source,
    evaluate_value,
    github_context,
    interpolate,
    truthy,
    uses_status_function,
)
from conveyor.ciplan.model import (
    DEFAULT_REF,
    EVENTS,
    RUNS,
    SKIPPED,
    UNKNOWN,
    CIPlan,
    Command,
    JobStatus,
    PlannedJob,
    WorkflowPlan,
)
from conveyor.ciplan.workflows import (
    as_list,
    event_matches,
    load_workflow,
    triggers,
    workflow_files,
)
from conveyor.errors import ConfigError, UsageError
from conveyor.tomltable import did_you_mean

MAX_CALL_DEPTH = 4


def job_order(jobs: Mapping[str, Any]) -> list[str]:
    """Job ids in dependency order; ties keep the file's order. A cycle is a config error."""
    needs = {key: as_list((job or {}).get("needs")) for key, job in jobs.items()}
    for key, wanted in needs.items():
        for need in wanted:
            if need not in jobs:
                raise ConfigError(
                    f"job {key} needs unknown job {need!r}" + did_you_mean(need, list(jobs))
                )
    order: list[str] = []
    remaining = list(jobs)
    while remaining:
        ready = [key for key in remaining if all(n in order for n in needs[key])]
        if not ready:
            raise ConfigError(f"jobs {', '.join(remaining)} need each other in a cycle")
        order.append(ready[0])
        remaining.remove(ready[0])
    return order


def upstream(jobs: Mapping[str, Any], key: str) -> dict[str, str]:
    """Every job ``key`` waits for, directly or through others, each with the direct need it
    comes through (itself for a direct need). Call after ``job_order`` has ruled out cycles."""
    direct = as_list((jobs[key] or {}).get("needs"))
    found = {need: need for need in direct}
    for need in direct:
        for ancestor in upstream(jobs, need):
            found.setdefault(ancestor, need)
    return found


def expand_matrix(strategy: Any) -> list[dict[str, Any]] | Unknown:
    """The matrix's combinations, in GitHub's order (cross product, exclude, then include)."""
    if not isinstance(strategy, Mapping) or "matrix" not in strategy:
        return [{}]
    matrix = strategy["matrix"]
    if not isinstance(matrix, Mapping):
        return Unknown(f"matrix {matrix!r} is computed at run time")
    axes = {k: v for k, v in matrix.items() if k not in ("include", "exclude")}
    for key, values in axes.items():
        if not isinstance(values, list):
            return Unknown(f"matrix.{key} {values!r} is computed at run time")
    combos: list[dict[str, Any]] = [
        dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())
    ]
    for rule in matrix.get("exclude") or []:
        combos = [c for c in combos if not all(c.get(k) == v for k, v in rule.items())]
    for extra in matrix.get("include") or []:
        matched = False
        for combo in combos:
            if all(combo.get(k) == v for k, v in extra.items() if k in axes):
                combo.update({k: v for k, v in extra.items() if k not in axes})
                matched = True
        if not matched:
            combos.append(dict(extra))
    return combos or [{}]


def _title(key: str, combo: Mapping[str, Any]) -> str:
    if not combo:
        return key
    return f"{key} ({', '.join(as_text(v) for v in combo.values())})"


_ENV_REF = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def _expand_env(command: str, env: Mapping[str, Any]) -> str:
    """Show ``$NAME`` with its value when the step's env gives a known one (for reading only)."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        value = env.get(name)
        if value is None or isinstance(value, Unknown):
            return match.group(0)
        return as_text(value)

    return _ENV_REF.sub(substitute, command)


def _action_label(uses: str, comment: str | None) -> str:
    name = uses.split("@", 1)[0]
    return f"{name} {comment}" if comment else name


class Planner:
    def __init__(self, folder: Path, event: str, ref: str, changed: Sequence[str] | None):
        self.folder = folder
        self.root = folder.parent.parent
        self.event = event
        self.ref = ref
        self.changed = changed
        self.github = github_context(event, ref)
        self._cache: dict[Path, dict[str, Any]] = {}

    def workflow(self, path: Path) -> dict[str, Any]:
        resolved = path.resolve()
        if resolved not in self._cache:
            self._cache[resolved] = load_workflow(path)
        return self._cache[resolved]

    def plan(self, path: Path) -> WorkflowPlan:
        data = self.workflow(path)
        name = str(data.get("name") or path.name)
        on = triggers(data)
        if set(on) <= {"workflow_call"}:
            return WorkflowPlan(path.name, name, False, "reusable: runs only when a job calls it")
        triggered, reason, notes = event_matches(data, self.event, self.ref, self.changed)
        if not triggered:
            return WorkflowPlan(path.name, name, False, reason)
        env = self._env(data.get("env"), {"github": self.github}, [])
        jobs = self.plan_jobs(path, data, {"github": self.github, "env": env}, depth=0)
        return WorkflowPlan(path.name, name, True, reason, tuple(notes), tuple(jobs))

    def plan_jobs(
        self, path: Path, data: Mapping[str, Any], contexts: Mapping[str, Any], *, depth: int
    ) -> list[PlannedJob]:
        jobs: Mapping[str, Any] = data["jobs"]
        try:
            order = job_order(jobs)
        except ConfigError as exc:
            raise ConfigError(f"{path.name}: {exc}") from None
        state: dict[str, JobStatus] = {}
        results: dict[str, dict[str, Any]] = {}  # each planned job's entry in `needs`
        planned: list[PlannedJob] = []
        for key in order:
            job = jobs[key] or {}
            needs = tuple(as_list(job.get("needs")))
            entries = self.plan_job(
                path,
                key,
                job,
                needs=needs,
                upstream=upstream(jobs, key),
                state=state,
                results=results,
                contexts=contexts,
                depth=depth,
            )
            statuses = {entry.status for entry in entries}
            state[key] = (
                RUNS if statuses == {RUNS} else (SKIPPED if SKIPPED in statuses else UNKNOWN)
            )
            results[key] = _needs_entry(key, state[key], entries[-1].outputs)
            planned.extend(entries)
        return planned

    def plan_job(
        self,
        path: Path,
        key: str,
        job: Mapping[str, Any],
        *,
        needs: tuple[str, ...],
        upstream: Mapping[str, str],
        state: Mapping[str, JobStatus],
        results: Mapping[str, Any],
        contexts: Mapping[str, Any],
        depth: int,
    ) -> list[PlannedJob]:
        """One job's entries: one per matrix combination (GitHub keeps one's outputs)."""
        skipped = [n for n in upstream if state.get(n) == SKIPPED]
        unknown = [n for n in upstream if state.get(n) == UNKNOWN]
        # success() is true when every job upstream succeeded, and a skipped job has not.
        needs_ok: bool | None = False if skipped else (None if unknown else True)
        combos = expand_matrix(job.get("strategy"))
        if isinstance(combos, Unknown):
            return [PlannedJob(key, key, UNKNOWN, combos.reason, needs, unknowns=(combos.reason,))]
        entries = []
        for combo in combos:
            unknowns: list[str] = []
            scope = {**contexts, "matrix": combo, "needs": {n: results[n] for n in needs}}
            evaluator = Evaluator(scope, needs_succeeded=needs_ok)
            title = _title(key, combo)
            status, reason = self._job_status(
                job,
                evaluator,
                _why(skipped, upstream, "which does not run"),
                _why(unknown, upstream, "whose condition is unknown"),
                unknowns,
            )
            base = PlannedJob(
                key,
                title,
                status,
                reason,
                needs=needs,
                environment=self._environment(job.get("environment"), evaluator, unknowns),
                concurrency=self._concurrency(job.get("concurrency"), evaluator, unknowns),
            )
            if status != RUNS:
                entries.append(replace(base, unknowns=tuple(unknowns)))
                continue
            if "uses" in job:
                calls, commands, actions = self._call(path, job, scope, unknowns, depth=depth)
                steps: dict[str, Any] = {}
            else:
                calls = None
                commands, actions, steps = self._steps(path, job, scope, unknowns)
            outputs = self._outputs(job, scope, steps, unknowns)
            entries.append(
                replace(
                    base,
                    calls=calls,
                    commands=tuple(commands),
                    actions=tuple(actions),
                    unknowns=tuple(unknowns),
                    outputs=tuple(outputs.items()),
                )
            )
        return entries

    @staticmethod
    def _job_status(
        job: Mapping[str, Any],
        evaluator: Evaluator,
        skipped_upstream: str,
        unknown_upstream: str,
        unknowns: list[str],
    ) -> tuple[JobStatus, str]:
        condition = job.get("if")
        source = condition_source(condition) if condition is not None else None
        # Without a status function, GitHub's `if:` is implicitly `success() && (...)`, and
        # success() requires every job upstream (not only the direct needs) to have succeeded.
        if source is None or not uses_status_function(source):
            if skipped_upstream:
                return SKIPPED, skipped_upstream
            if unknown_upstream:
                return UNKNOWN, unknown_upstream
        if source is None:
            return RUNS, ""
        value = evaluator.evaluate(source)
        if isinstance(value, Unknown):
            unknowns.append(f"if: {source} — {value.reason}")
            return UNKNOWN, f"if: {source} — {value.reason}"
        if not truthy(value):
            return SKIPPED, f"if: {source} is false"
        return RUNS, ""

    @staticmethod
    def _environment(value: Any, evaluator: Evaluator, unknowns: list[str]) -> str | None:
        if value is None:
            return None
        name = value.get("name") if isinstance(value, Mapping) else value
        return interpolate(str(name), evaluator, unknowns)

    @staticmethod
    def _concurrency(value: Any, evaluator: Evaluator, unknowns: list[str]) -> str | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            return interpolate(str(value), evaluator, unknowns)
        group = interpolate(str(value.get("group", "")), evaluator, unknowns)
        cancel = value.get("cancel-in-progress", False)
        if isinstance(cancel, str):
            cancel = evaluate_value(cancel, evaluator, unknowns)
        if isinstance(cancel, Unknown):
            return f"{group} (cancel-in-progress unknown)"
        # GitHub keeps one running and one pending job per group: a newer one takes the
        # pending one's place, so "queued" would promise more than GitHub does.
        policy = (
            "cancels the running one"
            if truthy(cancel)
            else "never cancels the running one; a newer one replaces one still waiting"
        )
        return f"{group} ({policy})"

    def _env(
        self, env: Any, contexts: Mapping[str, Any], unknowns: list[str], base: Any = None
    ) -> dict[str, Any]:
        merged = dict(base or {})
        evaluator = Evaluator(contexts)
        for name, value in (env or {}).items():
            merged[str(name)] = evaluate_value(value, evaluator, [])
        return merged

    def _steps(
        self, path: Path, job: Mapping[str, Any], scope: Mapping[str, Any], unknowns: list[str]
    ) -> tuple[list[Command], list[str], dict[str, Any]]:
        """The job's commands and actions, and its ``steps`` context (for ``outputs:``)."""
        job_env = self._env(job.get("env"), scope, unknowns, base=scope.get("env"))
        comments = self._version_comments(path)
        commands: list[Command] = []
        actions: list[str] = []
        steps: dict[str, Any] = {}
        for step in job.get("steps") or []:
            step_env = self._env(step.get("env"), {**scope, "env": job_env}, unknowns, job_env)
            evaluator = Evaluator({**scope, "env": step_env, "steps": steps})
            step_id = str(step["id"]) if "id" in step else None
            condition: str | None = None
            if "if" in step:
                source = condition_source(step["if"])
                value = evaluator.evaluate(source)
                if isinstance(value, Unknown):
                    condition = source
                elif not truthy(value):
                    if step_id is not None:
                        steps[step_id] = _step_entry("skipped", SkippedOutputs())
                    continue
            if "uses" in step:
                uses = str(step["uses"])
                actions.append(_action_label(uses, comments.get(uses)))
                if step_id is not None:
                    found = step_outputs(uses, step.get("with") or {}, self.changed, self.root)
                    if condition is not None:
                        found = Unknown(f"step {step_id} runs only if {condition}")
                    steps[step_id] = _step_entry("success", found)
                continue
            if "run" not in step:
                continue
            if step_id is not None:
                written = Unknown(f"step {step_id} writes its outputs on GitHub")
                steps[step_id] = _step_entry("success", written)
            text = interpolate(str(step["run"]).strip(), evaluator, unknowns)
            commands.append(Command(_expand_env(text, step_env), condition))
        return commands, actions, steps

    @staticmethod
    def _outputs(
        job: Mapping[str, Any],
        scope: Mapping[str, Any],
        steps: Mapping[str, Any],
        unknowns: list[str],
    ) -> dict[str, str | None]:
        """The job's ``outputs:``, as the strings GitHub makes of them (None where unknown)."""
        evaluator = Evaluator({**scope, "steps": steps})
        found: dict[str, str | None] = {}
        for name, value in (job.get("outputs") or {}).items():
            before = len(unknowns)
            text = interpolate(str(value), evaluator, unknowns)
            found[str(name)] = None if len(unknowns) > before else text
        return found

    def _call(
        self,
        path: Path,
        job: Mapping[str, Any],
        scope: Mapping[str, Any],
        unknowns: list[str],
        *,
        depth: int,
    ) -> tuple[str, list[Command], list[str]]:
        uses = str(job["uses"])
        if not uses.startswith("./"):
            unknowns.append(f"uses: {uses} — a workflow outside this repository")
            return uses, [], []
        target = (self.root / uses.removeprefix("./")).resolve()
        if not target.is_file():
            raise ConfigError(f"{path.name}: job calls {uses}, which does not exist")
        if depth >= MAX_CALL_DEPTH:
            raise ConfigError(f"{path.name}: reusable workflows nest deeper than {MAX_CALL_DEPTH}")
        called = self.workflow(target)
        declared = (triggers(called).get("workflow_call") or {}).get("inputs") or {}
        evaluator = Evaluator(scope)
        inputs: dict[str, Any] = {}
        for name, spec in declared.items():
            default = (spec or {}).get("default")
            inputs[str(name)] = (
                float(default)
                if isinstance(default, int) and not isinstance(default, bool)
                else default
            )
        for name, value in (job.get("with") or {}).items():
            if name not in declared:
                raise ConfigError(
                    f"{path.name}: job passes input {name!r}, which {target.name} does not declare"
                    + did_you_mean(str(name), [str(k) for k in declared])
                )
            inputs[str(name)] = evaluate_value(value, evaluator, unknowns)
        inner = {"github": self.github, "inputs": inputs}
        inner["env"] = self._env(called.get("env"), inner, unknowns)
        commands: list[Command] = []
        actions: list[str] = []
        for entry in self.plan_jobs(target, called, inner, depth=depth + 1):
            unknowns.extend(entry.unknowns)
            if entry.status == RUNS:
                commands.extend(entry.commands)
                actions.extend(entry.actions)
        return target.name, commands, actions

    def _version_comments(self, path: Path) -> dict[str, str]:
        """``uses: owner/repo@sha # v1.2.3`` -> {"owner/repo@sha": "v1.2.3"}, from the text."""
        found: dict[str, str] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            match = re.search(r"uses:\s*(\S+)\s+#\s*(\S+)", line)
            if match:
                found[match.group(1)] = match.group(2)
        return found


def _why(names: Sequence[str], upstream: Mapping[str, str], what: str) -> str:
    """Why a job without a status function follows the jobs upstream of it ('' for no reason)."""
    if not names:
        return ""
    direct = [n for n in names if upstream[n] == n]
    if direct:
        return f"needs {', '.join(direct)}, {what}"
    first = names[0]
    return (
        f"needs {upstream[first]}, which needs {first}, {what} "
        "(without a status function, `if:` requires every job upstream to succeed)"
    )


def _needs_entry(
    key: str, status: JobStatus, outputs: Sequence[tuple[str, str | None]]
) -> dict[str, Any]:
    """What ``needs.<key>`` holds for the jobs after it, in the run where every job succeeds."""
    if status == RUNS:
        known: dict[str, Value] = {
            name: Unknown(f"output {name} of job {key} is unknown") if value is None else value
            for name, value in outputs
        }
        return {"result": "success", "outputs": known}
    if status == SKIPPED:
        return {"result": "skipped", "outputs": SkippedOutputs()}
    unknown = Unknown(f"job {key} has an unknown condition")
    return {"result": unknown, "outputs": unknown}


def _step_entry(outcome: str, outputs: Mapping[str, str] | Unknown) -> dict[str, Any]:
    return {"outcome": outcome, "conclusion": outcome, "outputs": outputs}


def plan(
    folder: Path,
    *,
    event: str,
    ref: str = DEFAULT_REF,
    changed: Sequence[str] | None = None,
) -> CIPlan:
    """The jobs every workflow in ``folder`` would run for ``event`` on ``ref``.

    For ``pull_request``, ``ref`` is the base branch the pull request targets. ``changed`` is the
    list of changed files for ``paths`` filters; without it they are assumed to match.
    """
    if event not in EVENTS:
        raise UsageError(
            f"unknown event {event!r} (known: {', '.join(EVENTS)})" + did_you_mean(event, EVENTS)
        )
    if not ref.startswith(("refs/heads/", "refs/tags/")):
        raise UsageError(f"ref {ref!r} is not a full ref — give refs/heads/BRANCH or refs/tags/TAG")
    planner = Planner(folder, event, ref, changed)
    workflows = tuple(planner.plan(path) for path in workflow_files(folder))
    shown = (Path(folder.parent.name) / folder.name).as_posix()  # ".github/workflows"
    return CIPlan(event, ref, shown, tuple(changed) if changed is not None else None, workflows)
