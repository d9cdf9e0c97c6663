"""A CI plan as the text ``invoke ci-plan`` prints.

Kept apart from the planner so that the plan stays a value the tests compare exactly, and the
wording of the printout can change without touching how the plan is computed. The module is
``rendering``, not ``render``, so that ``conveyor.ciplan.render`` stays the function.
"""

from __future__ import annotations

from collections.abc import Iterator

from conveyor.ciplan.model import (
    PULL_REQUEST_REF,
    SKIPPED,
    UNKNOWN,
    CIPlan,
    PlannedJob,
    WorkflowPlan,
)


def _describe_event(ci: CIPlan) -> str:
    if ci.event in ("pull_request", "pull_request_target"):
        return f"{ci.event} into {ci.ref} (github.ref = {PULL_REQUEST_REF})"
    if ci.event == "push":
        return f"push to {ci.ref}"
    return f"{ci.event} on {ci.ref}"


def render(ci: CIPlan) -> str:
    return "\n".join(_render_lines(ci))


def _render_lines(ci: CIPlan) -> Iterator[str]:
    yield f"CI plan for {_describe_event(ci)}, from the workflow files in {ci.folder}"
    if ci.changed is None:
        yield "Path filters are assumed to match: no list of changed files was given."
    yield "The plan assumes every job succeeds; `if:` it cannot evaluate is reported, not assumed."
    for wf in ci.workflows:
        if wf.triggered:
            yield from _workflow_lines(wf)
    yield from _environment_lines(ci)
    quiet = [wf for wf in ci.workflows if not wf.triggered]
    if quiet:
        yield ""
        yield "Not triggered:"
        for wf in quiet:
            yield f"  {wf.file}: {wf.reason}"
    if ci.unknowns:
        yield ""
        yield "Not evaluated locally (left as written; a job whose `if:` needs one is UNKNOWN):"
        for expression in ci.unknowns:
            yield f"  {expression}"


def _workflow_lines(wf: WorkflowPlan) -> Iterator[str]:
    """A triggered workflow: its running jobs numbered in order, then skipped, then unknown."""
    yield ""
    yield f"{wf.file} ({wf.name}): runs — {wf.reason}"
    for number, job in enumerate(wf.running(), start=1):
        yield from _job_lines(number, job)
    for job in wf.jobs:
        if job.status == SKIPPED:
            yield f"  skipped: {job.title} — {job.reason}"
    for job in wf.jobs:
        if job.status == UNKNOWN:
            yield f"  UNKNOWN: {job.title} — {job.reason}"


def _job_lines(number: int, job: PlannedJob) -> Iterator[str]:
    details = []
    if job.needs:
        details.append(f"after {', '.join(job.needs)}")
    if job.environment:
        details.append(f"environment {job.environment}")
    if job.concurrency:
        details.append(f"concurrency {job.concurrency}")
    if job.calls:
        details.append(f"via {job.calls}")
    suffix = f"  [{'; '.join(details)}]" if details else ""
    yield f"  {number}. {job.title}{suffix}"
    for command in job.commands:
        yield f"       $ {command}"
    if not job.commands:
        yield f"       (actions only: {', '.join(job.actions) or 'none'})"
    if job.outputs:
        shown = ", ".join(f"{name}={'unknown' if v is None else v}" for name, v in job.outputs)
        yield f"       → outputs: {shown}"


def _environment_lines(ci: CIPlan) -> Iterator[str]:
    """Per GitHub environment, the jobs that deploy into it: each is a deploy of its own, and a
    protected environment asks its reviewers once per job, so two means two approvals."""
    deploys: dict[str, list[str]] = {}
    for file, job in ci.jobs():
        if job.environment:
            deploys.setdefault(job.environment, []).append(f"{file} {job.title}")
    if not deploys:
        return
    yield ""
    yield "Deploys (one job per environment; a protected environment asks once per job):"
    for environment, jobs in deploys.items():
        count = f"{len(jobs)} jobs — " if len(jobs) > 1 else ""
        yield f"  {environment}: {count}{', '.join(jobs)}"
