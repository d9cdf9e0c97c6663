"""The integration suite's order for --dist worksteal (testkit.lanes): nothing lost, heavy
tests at the head of the first lanes' shares."""

from __future__ import annotations

import pytest

from testkit.lanes import lay_out, shares

# Light tests are strings; heavy ones carry their rank after a colon.
ITEMS = ["a", "b", "swarm:0", "c", "chaos:2", "d", "e", "canary:0", "f", "g", "h", "state:3"]


def rank(item: str) -> int | None:
    return int(item.split(":")[1]) if ":" in item else None


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 20])
def test_every_test_is_kept_once(workers: int) -> None:
    ordered = lay_out(ITEMS, rank, workers, lanes=2)
    assert sorted(ordered) == sorted(ITEMS)


def test_worksteals_split_is_even_and_whole() -> None:
    assert shares(12, 3) == [4, 4, 4]
    assert shares(139, 3) == [46, 46, 47]
    assert shares(2, 4) == [0, 0, 1, 1]


def test_heavy_tests_open_the_first_two_shares_by_rank() -> None:
    ordered = lay_out(ITEMS, rank, workers=3, lanes=2)
    first, second, third = ordered[:4], ordered[4:8], ordered[8:]
    assert first[:2] == ["swarm:0", "chaos:2"]
    assert second[:2] == ["canary:0", "state:3"]
    assert not [i for i in third if rank(i) is not None]
    assert [i for i in ordered if rank(i) is None] == list("abcdefgh"), "light ones keep order"


def test_one_worker_runs_the_heavy_tests_first() -> None:
    ordered = lay_out(ITEMS, rank, workers=1, lanes=2)
    assert ordered[:4] == ["swarm:0", "canary:0", "chaos:2", "state:3"]
