"""The swarm's state copies: reads are their union, sync fills what each lacks."""

from __future__ import annotations

from conveyor.replicas import merged, missing

PRIMARY = {"ledger/r0001/1-a-running.json": b"p1", "ledger/r0001/2-b-succeeded.json": b"p2"}
LAGGING = {"ledger/r0001/1-a-running.json": b"p1"}
AHEAD = {"ledger/r0002/3-c-running.json": b"c3"}


def test_a_read_is_the_union_of_every_copy() -> None:
    assert merged([LAGGING, PRIMARY, AHEAD]) == {**PRIMARY, **AHEAD}


def test_where_copies_disagree_on_a_file_the_first_one_stands() -> None:
    other = {"ledger/r0001/1-a-running.json": b"changed"}
    assert merged([PRIMARY, other])["ledger/r0001/1-a-running.json"] == b"p1"
    assert merged([other, PRIMARY])["ledger/r0001/1-a-running.json"] == b"changed"


def test_each_copy_lacks_what_only_the_others_hold() -> None:
    assert missing([PRIMARY, LAGGING, AHEAD]) == [
        AHEAD,
        {"ledger/r0001/2-b-succeeded.json": b"p2", **AHEAD},
        PRIMARY,
    ]


def test_copies_in_step_lack_nothing() -> None:
    assert missing([PRIMARY, dict(PRIMARY)]) == [{}, {}]
    assert missing([]) == []
