"""Placement: a swarm node meets the environment's constraints as Swarm would judge it."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import placement, terms

WORKER: dict[str, Any] = {
    "ID": "4tq9xk2m1n0p",
    "Spec": {"Role": "worker", "Availability": "active", "Labels": {"tier": "Web"}},
    "Description": {
        "Hostname": "n2",
        "Platform": {"OS": "linux", "Architecture": "x86_64"},
        "Engine": {"Labels": {"zone": "a"}},
    },
    "Status": {"State": "ready", "Addr": "198.18.0.2"},
}


@pytest.mark.parametrize(
    ("constraint", "met"),
    [
        ("node.labels.tier == web", True),  # values without regard to case, as Swarm
        ("node.labels.tier != web", False),
        ("node.labels.tier==batch", False),
        ("node.labels.rack != a", True),  # a label the node lacks equals no value
        ("node.labels.rack == a", False),
        ("node.role == worker", True),
        ("Node.Role == manager", False),
        ("node.hostname != n2", False),
        ("node.id == 4tq9xk2m1n0p", True),
        ("node.platform.os == linux", True),
        ("node.platform.arch == aarch64", False),
        ("engine.labels.zone == a", True),
        ("engine.labels.zone == b", False),
    ],
)
def test_a_node_meets_a_constraint_as_swarm_judges_it(constraint: str, met: bool) -> None:
    assert placement.parse(constraint).met_by(WORKER) is met


def test_the_first_unmet_constraint_is_named_and_none_when_all_are_met() -> None:
    assert placement.unmet([], WORKER) is None
    assert placement.unmet(["node.role == worker", "node.labels.tier == web"], WORKER) is None
    assert placement.unmet(["node.role == worker", "node.role == manager"], WORKER) == (
        "node.role == manager"
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("node.labels.tier", "is not a constraint"),
        ("node.labels.tier = web", "is not a constraint"),
        ("node.labels. == web", "is not an attribute"),
        ("node.rack == a", "is not an attribute"),
        ("== web", "is not a constraint"),
    ],
)
def test_what_swarm_would_not_read_is_refused_with_what_it_should_look_like(
    text: str, says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        placement.parse(text)


def test_a_node_outside_the_placement_takes_no_tasks_and_says_which_constraint() -> None:
    node = {"state": "ready", "availability": "active", "unmet_placement": ""}
    assert terms.takes_tasks(node)
    assert terms.node_condition(node) == "ready, active"
    outside = {**node, "unmet_placement": "node.labels.tier == web"}
    assert not terms.takes_tasks(outside)
    assert terms.node_condition(outside) == (
        "outside the environment's placement (node.labels.tier == web is not met)"
    )
    assert terms.node_condition({**node, "availability": "drain"}) == "ready, drain"
