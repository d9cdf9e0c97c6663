"""The words conveyor's records and plans are made of, each declared once as a ``Literal``.

A set of allowed strings written twice drifts; here each set is written once, with the tuple
that lists it for code that iterates (``typing.get_args`` of the ``Literal``), so mypy checks
every use and a new phase or role is added in exactly one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

Color = Literal["blue", "green"]
COLORS: tuple[str, ...] = get_args(Color)

# What a ledger record is: a deploy from dist/, a rollback, or a promotion from another env.
RecordKind = Literal["deploy", "rollback", "promote"]
DEPLOY: RecordKind = "deploy"
ROLLBACK: RecordKind = "rollback"
PROMOTE: RecordKind = "promote"
DEPLOY_KINDS: frozenset[RecordKind] = frozenset({DEPLOY, PROMOTE})  # rollbacks are not deployments

# How a ledger record ended (``running`` until it does).
RecordOutcome = Literal["running", "succeeded", "failed", "interrupted"]
RUNNING: RecordOutcome = "running"
SUCCEEDED: RecordOutcome = "succeeded"
FAILED: RecordOutcome = "failed"
INTERRUPTED: RecordOutcome = "interrupted"

# What a service container is to its environment (``status`` shows it).
Role = Literal["live", "warm", "canary", "kept", "leftover"]
ROLES: tuple[Role, ...] = get_args(Role)

# The phases of a deploy, in order: ``lock`` is the transaction's; ``backup``, ``migrate`` (the
# expand revisions) and ``compat`` (the live release still serves on the new schema) are the
# schema's, run only when a release has revisions to run; the rest are blue-green's.
Phase = Literal[
    "lock",
    "backup",
    "migrate",
    "compat",
    "prepare",
    "start",
    "ready",
    "smoke",
    "canary",
    "switch",
    "verify",
    "drain",
]
PHASES: tuple[Phase, ...] = get_args(Phase)
# The phases before any user request reaches the release (a canary step already sends some).
BEFORE_SWITCH: tuple[Phase, ...] = PHASES[: PHASES.index("canary")]

# How a deploy moves traffic: all at once after smoke, or in weighted, analysed steps.
Strategy = Literal["blue-green", "canary"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)

# What runs an environment's services: containers conveyor creates on each host, or Swarm
# services that a manager keeps on every node (the hosts are then the swarm's nodes).
Engine = Literal["docker", "swarm"]
ENGINES: tuple[Engine, ...] = get_args(Engine)


def takes_tasks(node: Mapping[str, str]) -> bool:
    """Whether Swarm schedules the environment's tasks on a node, from its manager's view of
    it (state ready or down; availability active, pause or drain; the environment's placement
    met or not)."""
    return (
        node.get("state") == "ready"
        and node.get("availability") == "active"
        and not node.get("unmet_placement")
    )


def node_condition(node: Mapping[str, str]) -> str:
    """How a node stands for the environment, in words: "ready, drain", or the placement
    constraint it does not meet."""
    unmet = node.get("unmet_placement")
    if unmet:
        return f"outside the environment's placement ({unmet} is not met)"
    return f"{node.get('state')}, {node.get('availability')}"


def other(color: str) -> Color:
    """The color that is not ``color``."""
    return "green" if color == "blue" else "blue"


# The kind of a schema revision (the app's migration protocol): additive, or destructive; a
# revision in the database that no kinds-table row describes is "unknown" (treated as
# destructive: nothing says an older release accepts it).
RevisionKind = Literal["expand", "contract", "unknown"]
REVISION_KINDS: tuple[RevisionKind, ...] = get_args(RevisionKind)
