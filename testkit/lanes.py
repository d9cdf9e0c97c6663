"""The order the integration tests are collected in, for pytest-xdist's ``--dist worksteal``.

worksteal hands each worker an equal share of the tests in collection order, then lets a
worker that has run out take the not-yet-started end of another's queue. The heavy tests
(those on an engine of their own) open the first ``lanes`` shares, alternating, so at most
that many of them run at once; the other tests fill the shares in their own order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def shares(count: int, workers: int) -> list[int]:
    """How many of ``count`` tests worksteal hands each worker at first (xdist 3.8's split:
    if it changes, the order is only less good, never wrong)."""
    sizes = []
    for index in range(workers):
        sizes.append(count // (workers - index))
        count -= sizes[-1]
    return sizes


def lay_out(
    items: Sequence[T], heavy: Callable[[T], int | None], workers: int, lanes: int
) -> list[T]:
    """``items`` reordered: those ``heavy`` ranks (lower first, ``None`` for a light test)
    dealt over the first ``lanes`` workers' shares, the light ones after them in each share.
    Every item exactly once; the same order for the same input (each worker computes it)."""
    ranked = sorted((i for i in items if heavy(i) is not None), key=lambda i: heavy(i) or 0)
    light = [i for i in items if heavy(i) is None]
    count = max(1, min(lanes, workers))
    dealt = [ranked[lane::count] for lane in range(count)]
    ordered: list[T] = []
    for index, size in enumerate(shares(len(items), workers)):
        share = dealt[index] if index < count else []
        take = max(0, size - len(share))
        ordered += [*share, *light[:take]]
        light = light[take:]
    return ordered + light
