"""Placement: which nodes of a swarm an environment runs on.

``placement`` in an environment of ``engine = "swarm"`` is a list of Swarm constraints, e.g.
``["node.labels.tier == web"]``. Every service the environment makes carries them — each
color's, the router's, the flags' — so Swarm starts the environment's tasks, its router among
them, only on the nodes that meet all of them, and on a node that joins only if it does.

The constraints hold for the whole environment, not per service: each node's router serves
every service from that node's own tasks (host networking), so a node serves only where all of
them run. A node listed in ``hosts`` that does not meet them gets nothing from Swarm; a deploy
refuses it before anything changes, as it refuses a drained node.

Matching is Swarm's: ``==`` or ``!=``; values compared without regard to case; a node label or
engine label the node lacks is unequal to every value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# The attributes Swarm's constraints name, each read from the manager's view of a node.
Reader = Callable[[Mapping[str, Any]], Any]
FIELDS: dict[str, Reader] = {
    "node.id": lambda node: node.get("ID", ""),
    "node.hostname": lambda node: node.get("Description", {}).get("Hostname", ""),
    "node.role": lambda node: node.get("Spec", {}).get("Role", ""),
    "node.platform.os": lambda node: node.get("Description", {}).get("Platform", {}).get("OS", ""),
    "node.platform.arch": lambda node: (
        node.get("Description", {}).get("Platform", {}).get("Architecture", "")
    ),
}
LABEL_PREFIXES: dict[str, Reader] = {
    "node.labels.": lambda node: node.get("Spec", {}).get("Labels") or {},
    "engine.labels.": lambda node: (
        node.get("Description", {}).get("Engine", {}).get("Labels") or {}
    ),
}
_CONSTRAINT = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(==|!=)\s*(\S(?:.*\S)?)\s*$")


@dataclass(frozen=True)
class Constraint:
    key: str
    operator: str
    value: str

    def met_by(self, node: Mapping[str, Any]) -> bool:
        """Whether ``node`` (the manager's inspect of it) meets this constraint."""
        found = _attribute(self.key, node)
        equal = found is not None and found.lower() == self.value.lower()
        return equal if self.operator == "==" else not equal


def parse(text: str) -> Constraint:
    """One constraint, or ValueError saying what a constraint looks like."""
    matched = _CONSTRAINT.match(text)
    if matched is None:
        raise ValueError(
            f"'{text}' is not a constraint: write KEY == VALUE or KEY != VALUE, e.g. "
            "'node.labels.tier == web'"
        )
    key, operator, value = matched.groups()
    lowered = key.lower()
    if lowered in FIELDS:
        key = lowered
    elif not any(
        lowered.startswith(prefix) and len(key) > len(prefix) for prefix in LABEL_PREFIXES
    ):
        known = ", ".join([*FIELDS, *(f"{prefix}NAME" for prefix in LABEL_PREFIXES)])
        raise ValueError(f"'{key}' is not an attribute Swarm places by (known: {known})")
    return Constraint(key, operator, value)


def unmet(constraints: Iterable[str], node: Mapping[str, Any]) -> str | None:
    """The first of ``constraints`` that ``node`` does not meet, as written; None if it meets
    them all."""
    for text in constraints:
        if not parse(text).met_by(node):
            return text
    return None


def _attribute(key: str, node: Mapping[str, Any]) -> str | None:
    if key in FIELDS:
        return str(FIELDS[key](node))
    for prefix, labels in LABEL_PREFIXES.items():
        if key.lower().startswith(prefix):
            value = labels(node).get(key[len(prefix) :])
            return None if value is None else str(value)
    return None
