"""What GitHub Actions would run for an event, computed from the workflow files themselves.

``invoke ci-plan --event push --ref refs/heads/main`` prints, per workflow, the jobs that would
run in dependency order with the commands each runs, so a developer sees locally what CI will do.

It evaluates what can be known without GitHub: the triggers (``branches``/``tags`` filters;
``paths`` filters only against a given list of changed files, else they are assumed to match and
the plan says so), ``needs``, matrix expansion, calls of local reusable workflows (resolved to the
commands they run with the inputs given) and ``if:`` expressions over ``github.event_name``,
``github.ref``, ``inputs``, ``matrix`` and literal ``env``. Anything else — ``vars``, ``secrets``,
an unsupported function — makes the job *unknown*, with the expression named: never true by
default. The plan assumes every job succeeds (``success()`` is true, ``failure()`` false).

One module per step, read in this order: ``model`` (the records and statuses), ``workflows``
(files, triggers, filters), ``expressions`` (``${{ }}``), ``actions`` (the outputs of actions
known locally: ``dorny/paths-filter``'s, from the changed files), ``planner`` (jobs, matrices,
calls, ``needs`` and outputs, ``plan()``) and ``rendering`` (the text). This package's names
are the public API; callers import ``conveyor.ciplan``, not its modules. ``workflows`` and
``rendering`` are not named ``triggers`` and ``render`` because the functions of those names
are exported here, and a submodule of the same name would be shadowed by them.
"""

from __future__ import annotations

from conveyor.ciplan.expressions import (
    STATUS_FUNCTIONS,
    Evaluator,
    Unknown,
    Value,
    evaluate_value,
    github_context,
    interpolate,
)
from conveyor.ciplan.model import (
    DEFAULT_REF,
    EVENTS,
    PULL_REQUEST_REF,
    RUNS,
    SKIPPED,
    UNKNOWN,
    CIPlan,
    Command,
    JobStatus,
    PlannedJob,
    WorkflowPlan,
)
from conveyor.ciplan.planner import MAX_CALL_DEPTH, Planner, expand_matrix, job_order, plan
from conveyor.ciplan.rendering import render
from conveyor.ciplan.workflows import (
    event_matches,
    load_workflow,
    load_yaml,
    matches_filters,
    triggers,
    workflow_files,
)

__all__ = [
    "DEFAULT_REF",
    "EVENTS",
    "MAX_CALL_DEPTH",
    "PULL_REQUEST_REF",
    "RUNS",
    "SKIPPED",
    "STATUS_FUNCTIONS",
    "UNKNOWN",
    "CIPlan",
    "Command",
    "Evaluator",
    "JobStatus",
    "PlannedJob",
    "Planner",
    "Unknown",
    "Value",
    "WorkflowPlan",
    "evaluate_value",
    "event_matches",
    "expand_matrix",
    "github_context",
    "interpolate",
    "job_order",
    "load_workflow",
    "load_yaml",
    "matches_filters",
    "plan",
    "render",
    "triggers",
    "workflow_files",
]
