"""The words a CI plan is made of: the events and refs it accepts, the three statuses a job can
have, and the frozen records the planner returns and the renderer prints.

They live apart from the planner so the shape of a plan reads on one screen, and so the
renderer (and any other view of a plan, such as a test) depends on these records alone, not on
how they were computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

EVENTS = (
    "push",
    "pull_request",
    "schedule",
    "workflow_dispatch",
    "pull_request_target",
    "merge_group",
    "release",
    "workflow_run",
    "repository_dispatch",
)
DEFAULT_REF = "refs/heads/main"
# A pull request runs on a merge ref whose number is not known here.
PULL_REQUEST_REF = "refs/pull/<number>/merge"

JobStatus = Literal["runs", "skipped", "unknown"]
RUNS: Final = "runs"
SKIPPED: Final = "skipped"
# An `if:` (or a need's) that cannot be evaluated here: never assumed to be true.
UNKNOWN: Final = "unknown"


@dataclass(frozen=True)
class Command:
    """One ``run:`` step, with ``${{ }}`` and ``$ENV`` references resolved where known."""

    text: str
    condition: str | None = None  # an ``if:`` that cannot be evaluated here

    def __str__(self) -> str:
        return self.text if self.condition is None else f"{self.text}  # only if {self.condition}"


@dataclass(frozen=True)
class PlannedJob:
    key: str  # the job's id in its workflow
    title: str  # the id, plus matrix values: "test (3.11)"
    status: JobStatus
    reason: str = ""  # why it is skipped or unknown
    needs: tuple[str, ...] = ()
    environment: str | None = None
    concurrency: str | None = None
    calls: str | None = None  # the reusable workflow it runs, e.g. "_nox.yml"
    commands: tuple[Command, ...] = ()
    actions: tuple[str, ...] = ()  # ``uses:`` steps: "actions/checkout v5.0.0"
    unknowns: tuple[str, ...] = ()  # expressions that could not be evaluated
    outputs: tuple[tuple[str, str | None], ...] = ()  # ``outputs:``; None where unknown


@dataclass(frozen=True)
class WorkflowPlan:
    file: str
    name: str
    triggered: bool
    reason: str
    notes: tuple[str, ...] = ()
    jobs: tuple[PlannedJob, ...] = ()

    def running(self) -> list[PlannedJob]:
        return [job for job in self.jobs if job.status == RUNS]


@dataclass(frozen=True)
class CIPlan:
    event: str
    ref: str
    folder: str
    changed: tuple[str, ...] | None
    workflows: tuple[WorkflowPlan, ...]

    def workflow(self, file: str) -> WorkflowPlan:
        for wf in self.workflows:
            if wf.file == file:
                return wf
        raise KeyError(file)

    def jobs(self, status: JobStatus = RUNS) -> list[tuple[str, PlannedJob]]:
        return [(wf.file, job) for wf in self.workflows for job in wf.jobs if job.status == status]

    @property
    def unknowns(self) -> list[str]:
        seen: dict[str, None] = {}
        for wf in self.workflows:
            for job in wf.jobs:
                for expression in job.unknowns:
                    seen.setdefault(expression, None)
        return list(seen)
