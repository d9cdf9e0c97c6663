"""Security scanners: one module per scanner, one shared signature, one registry table."""

from __future__ import annotations

import argparse

from conveyor.errors import NotImplementedYet


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``scan`` and ``advisories`` commands to conveyor's CLI."""

    def pending(args: argparse.Namespace) -> int:
        raise NotImplementedYet("scan: not implemented yet (tracked in the scanning issue)")

    for name in ("scan", "advisories"):
        parser = sub.add_parser(name, help=f"{name} (not implemented yet)")
        parser.set_defaults(handler=pending, accepts_anything=True)
