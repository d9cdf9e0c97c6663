"""Feature-flag definitions in flagd's format: validated, ramped, merged — pure functions.

An image declares its flag file (``[images.api] flags = "backend/flags.json"``). The build
validates it and stores it in ``dist/<version>/flags-<image>.json``; a deploy carries it to
the environment (``conveyor.flagstate``), keeping the environment's current percentages for
flags that still exist. A flag is *rampable* when its targeting is one ``fractional`` split
between two variants whose weights sum to 100, the on-variant first: raising its percentage
only ever adds people (flagd hashes the flag key and the targeting key into a bucket, and the
first variant owns the lowest buckets), which is what ``flag-set --percent`` and ramps change.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conveyor.errors import ConveyorError

STATES = ("ENABLED", "DISABLED")
FULL = 100
# The keys flagd's schema allows on a flag (https://flagd.dev/schema/v0/flags.json).
FLAG_KEYS = ("state", "variants", "defaultVariant", "targeting", "metadata")
TOP_KEYS = ("$schema", "flags", "$evaluators", "metadata")

Definitions = dict[str, Any]


class FlagError(ConveyorError):
    """A flag file or a flag change that flagd would not accept, or that conveyor refuses."""


def dist_name(image: str) -> str:
    return f"flags-{image}.json"


def load(path: Path) -> Definitions:
    """Read and validate a flag file; every problem names the file and the key path."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FlagError(f"{path}: cannot read the flag file ({exc.strerror})") from None
    except ValueError as exc:
        raise FlagError(f"{path}: not JSON ({exc})") from None
    validate(data, str(path))
    return dict(data)


def parse(raw: bytes, source: str) -> Definitions:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise FlagError(f"{source}: not JSON ({exc})") from None
    validate(data, source)
    return dict(data)


def dumps(definitions: Definitions) -> bytes:
    return (json.dumps(definitions, indent=2, sort_keys=True) + "\n").encode()


# --- validation -----------------------------------------------------------------------------


def validate(data: Any, source: str) -> None:
    """flagd's schema for what conveyor relies on, plus the references it does not check:
    a default variant and every fractional variant must exist, every ``$ref`` must resolve."""
    if not isinstance(data, Mapping):
        raise FlagError(f"{source}: expected an object with a 'flags' object")
    for key in data:
        if key not in TOP_KEYS:
            raise FlagError(f"{source} [{key}]: unknown key (allowed: {', '.join(TOP_KEYS)})")
    flags = data.get("flags")
    if not isinstance(flags, Mapping):
        raise FlagError(f"{source} [flags]: expected an object of flags")
    evaluators = data.get("$evaluators", {})
    if not isinstance(evaluators, Mapping):
        raise FlagError(f"{source} [$evaluators]: expected an object")
    for name, flag in flags.items():
        _validate_flag(source, str(name), flag, evaluators)


def _validate_flag(source: str, name: str, flag: Any, evaluators: Mapping[str, Any]) -> None:
    where = f"{source} [flags.{name}"
    if not isinstance(flag, Mapping):
        raise FlagError(f"{where}]: expected an object")
    for key in flag:
        if key not in FLAG_KEYS:
            raise FlagError(f"{where}.{key}]: unknown key (allowed: {', '.join(FLAG_KEYS)})")
    if flag.get("state") not in STATES:
        raise FlagError(f"{where}.state]: expected one of {', '.join(STATES)}")
    variants = flag.get("variants")
    if not isinstance(variants, Mapping) or not variants:
        raise FlagError(f"{where}.variants]: expected an object of at least one variant")
    default = flag.get("defaultVariant")
    if not isinstance(default, str) or default not in variants:
        raise FlagError(
            f"{where}.defaultVariant]: {default!r} is not a variant "
            f"(variants: {', '.join(variants)})"
        )
    targeting = flag.get("targeting", {})
    if not isinstance(targeting, Mapping):
        raise FlagError(f"{where}.targeting]: expected an object (JsonLogic)")
    _check_logic(f"{where}.targeting", targeting, set(variants), evaluators, set())


def _check_logic(
    where: str, node: Any, variants: set[str], evaluators: Mapping[str, Any], seen: set[str]
) -> None:
    """Walk a JsonLogic tree: fractional splits name known variants with whole weights, and
    ``$ref`` names a shared evaluator (followed once, so a cycle is refused, not looped)."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            _check_logic(f"{where}[{index}]", item, variants, evaluators, seen)
        return
    if not isinstance(node, Mapping):
        return
    for operator, argument in node.items():
        if operator == "$ref":
            if not isinstance(argument, str) or argument not in evaluators:
                raise FlagError(f"{where}.$ref]: no evaluator named {argument!r} in $evaluators")
            if argument in seen:
                raise FlagError(f"{where}.$ref]: evaluator {argument!r} refers to itself")
            _check_logic(
                f"{where}.$ref", evaluators[argument], variants, evaluators, seen | {argument}
            )
        elif operator == "fractional":
            _check_fractional(f"{where}.fractional", argument, variants)
        else:
            _check_logic(f"{where}.{operator}", argument, variants, evaluators, seen)


def _check_fractional(where: str, argument: Any, variants: set[str]) -> None:
    if not isinstance(argument, list) or not argument:
        raise FlagError(f"{where}]: expected a list of [variant, weight] pairs")
    buckets = [a for a in argument if not isinstance(a, Mapping)]  # the first may be a key
    for index, bucket in enumerate(argument):  # the index in the file, key expression counted
        if isinstance(bucket, Mapping):
            continue
        if (
            not isinstance(bucket, list)
            or len(bucket) != 2
            or not isinstance(bucket[0], str)
            or isinstance(bucket[1], bool)
            or not isinstance(bucket[1], int)
            or bucket[1] < 0
        ):
            raise FlagError(f"{where}[{index}]]: expected [variant, whole weight >= 0]")
        if bucket[0] not in variants:
            raise FlagError(
                f"{where}[{index}]]: {bucket[0]!r} is not a variant "
                f"(variants: {', '.join(sorted(variants))})"
            )
    if sum(b[1] for b in buckets) <= 0:
        raise FlagError(f"{where}]: the weights add up to 0")


# --- ramping --------------------------------------------------------------------------------


def split_of(flag: Mapping[str, Any]) -> list[list[Any]] | None:
    """The two [variant, weight] buckets of a rampable flag (weights summing to 100), or None."""
    targeting = flag.get("targeting")
    if not isinstance(targeting, Mapping) or list(targeting) != ["fractional"]:
        return None
    buckets = [b for b in targeting["fractional"] if isinstance(b, list)]
    if len(buckets) != 2 or sum(int(b[1]) for b in buckets) != FULL:
        return None
    return buckets


def percent(flag: Mapping[str, Any]) -> int | None:
    """The share of people who get the first (on) variant; None when the flag is not rampable.
    A disabled flag serves its default variant to everyone."""
    buckets = split_of(flag)
    if buckets is None:
        return None
    if flag.get("state") == "ENABLED":
        return int(buckets[0][1])
    return FULL if flag.get("defaultVariant") == buckets[0][0] else 0


def with_percent(definitions: Definitions, name: str, value: int, source: str) -> Definitions:
    """A copy of ``definitions`` with flag ``name`` given to ``value`` percent of people."""
    flags = definitions.get("flags", {})
    if name not in flags:
        known = ", ".join(sorted(flags)) or "none"
        raise FlagError(f"{source}: no flag named {name!r} (flags: {known})")
    if not 0 <= value <= FULL:
        raise FlagError(f"{source}: a percentage is 0 to 100, got {value}")
    buckets = split_of(flags[name])
    if buckets is None:
        raise FlagError(
            f"{source} [flags.{name}.targeting]: not rampable — it needs exactly "
            '{"fractional": [["on", P], ["off", 100 - P]]} (the on-variant first)'
        )
    changed = copy.deepcopy(definitions)
    flag = changed["flags"][name]
    flag["state"] = "ENABLED"
    kept = [a for a in flag["targeting"]["fractional"] if not isinstance(a, list)]
    first, second = buckets
    flag["targeting"]["fractional"] = [*kept, [first[0], value], [second[0], FULL - value]]
    validate(changed, source)
    return changed


def merge(release: Definitions, current: Definitions | None) -> Definitions:
    """The release's definitions, with the environment's current percentage (and state) for
    every rampable flag that both still have: a deploy never resets a ramp."""
    merged = copy.deepcopy(release)
    if not current:
        return merged
    now = current.get("flags", {})
    for name, flag in merged.get("flags", {}).items():
        live = now.get(name)
        if not isinstance(live, Mapping) or split_of(flag) is None:
            continue
        value = percent(live)
        if value is not None:
            merged = with_percent(merged, name, value, "merge")
            if live.get("state") == "DISABLED":
                merged["flags"][name]["state"] = "DISABLED"
    return merged


def describe(definitions: Definitions | None) -> list[str]:
    """One line per flag: state, variants, default, and who gets the on-variant."""
    if not definitions:
        return ["no flags"]
    lines = []
    for name, flag in sorted(definitions.get("flags", {}).items()):
        buckets, share = split_of(flag), percent(flag)
        who = (
            f"{share}% get '{buckets[0][0]}'"
            if buckets is not None and share is not None
            else "targeting rules"
        )
        lines.append(
            f"{name}: {flag.get('state')}, variants {', '.join(flag.get('variants', {}))}, "
            f"default {flag.get('defaultVariant')}; {who}"
        )
    return lines
