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
import functools
import json
from collections.abc import Iterable, Mapping
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConveyorError

if TYPE_CHECKING:
    from jsonschema import ValidationError  # type: ignore[import-untyped]

STATES = ("ENABLED", "DISABLED")
FULL = 100
# flagd's JSON schema, vendored unchanged (Apache-2.0; commit and update steps in its README).
SCHEMA_FILES = ("flags.json", "targeting.json")
# The keys conveyor allows on a flag: the properties of flagd's schema, which allows any others.
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
    """flagd's JSON schema, plus what a schema cannot say: a default variant and every
    fractional variant must exist, every ``$ref`` must name an evaluator, no evaluator cycles.

    conveyor's own checks run first: where both would object (a state typo, a weight that is
    not a whole number) theirs name the allowed values and the variants. The schema then
    catches the rest of what flagd would refuse (mixed variant types, unknown JsonLogic
    operators, malformed rules, metadata values)."""
    _check_shape_and_references(data, source)
    _check_schema(data, source)


def _check_shape_and_references(data: Any, source: str) -> None:
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


# A flag flagd's schema accepts: it stands in for every flag while the file's top level (and
# the flags' names) are checked, because each flag is checked, and remembered, on its own.
_ACCEPTED_FLAG = {"state": "DISABLED", "variants": {"off": False}}
KeyPath = tuple[str | int, ...]


@functools.cache
def _validators() -> tuple[Any, Any]:
    """Validators for a whole flag file and for one flag, against flagd's vendored schema.

    Its ``$ref``s resolve among the vendored files only: the registry has no retrieval, so
    nothing is ever fetched. jsonschema is imported here, on first use: with its format
    checkers it costs seconds, and most commands never validate a flag file."""
    from jsonschema import Draft7Validator  # noqa: PLC0415
    from referencing import Registry  # noqa: PLC0415
    from referencing.jsonschema import DRAFT7  # noqa: PLC0415

    folder = files("conveyor") / "schemas" / "flagd"
    documents = [json.loads((folder / name).read_text(encoding="utf-8")) for name in SCHEMA_FILES]
    registry: Registry[Any] = Registry().with_resources(
        (document["$id"], DRAFT7.create_resource(document)) for document in documents
    )
    # Draft 7 ignores "$id" beside "$ref" (flags.json's root has both), so enter flags.json
    # through its URI: its relative "./targeting.json" then resolves against that URI.
    uri = documents[0]["$id"]
    return (
        Draft7Validator({"$ref": uri}, registry=registry),
        Draft7Validator({"$ref": f"{uri}#/definitions/anyFlag"}, registry=registry),
    )


def _check_schema(data: Mapping[str, Any], source: str) -> None:
    """The first problem flagd's schema finds, as one line with its key path. The hand checks
    have passed, so ``data["flags"]`` is an object of objects."""
    whole, _ = _validators()
    flags = data["flags"]
    problem = _problem(whole, {**data, "flags": dict.fromkeys(flags, _ACCEPTED_FLAG)})
    for name, flag in flags.items() if problem is None else ():
        found = _flag_problem(flag)
        if found is not None:
            problem = (("flags", name, *found[0]), found[1])
            break
    if problem is not None:
        path, message = _key_path(problem[0]), problem[1]
        raise FlagError(f"{source} [{path}]: {message}" if path else f"{source}: {message}")


def _flag_problem(flag: Any) -> tuple[KeyPath, str] | None:
    """One flag's problem, by its content: a ramp step or a merge revalidates the whole file to
    change one flag, and flagd's schema costs some milliseconds per flag."""
    try:
        canonical = json.dumps(flag)
    except (TypeError, ValueError):  # not JSON at all (a caller's own objects): check as is
        return _problem(_validators()[1], flag)
    return _canonical_flag_problem(canonical)


@functools.lru_cache(maxsize=4096)
def _canonical_flag_problem(canonical: str) -> tuple[KeyPath, str] | None:
    return _problem(_validators()[1], json.loads(canonical))


def _problem(validator: Any, instance: Any) -> tuple[KeyPath, str] | None:
    from jsonschema.exceptions import best_match  # type: ignore[import-untyped]  # noqa: PLC0415

    error = best_match(validator.iter_errors(instance))
    return None if error is None else _most_specific(error)


def _most_specific(error: ValidationError) -> tuple[KeyPath, str]:
    """The key path and message of the problem a person should fix.

    flagd's four flag types (boolean, string, number, object variants) and its JsonLogic rules
    are alternatives (``anyOf``/``oneOf``). Where they all fail, ``best_match`` often stops at
    "<the whole flag> is not valid under any of the given schemas"; follow it down instead,
    each time into the alternative with the fewest problems (the one the author meant), on a
    tie the one that matched deepest, then the earliest."""
    while True:
        if _is_flag_types(error):
            kinds = ", ".join(
                f"{name}: {_json_type(value)}" for name, value in error.instance["variants"].items()
            )
            return (*error.absolute_path, "variants"), (
                f"variants must all be booleans, all strings, all numbers or all objects ({kinds})"
            )
        if not error.context:
            break
        branches: dict[Any, list[Any]] = {}
        for each in error.context:
            branches.setdefault(each.relative_schema_path[0], []).append(each)
        closest = min(branches.values(), key=lambda errors: (len(errors), -_depth(errors)))
        error = max(closest, key=_relevance)
    path = tuple(error.absolute_path)
    return path, _rule_hint(error, path) or error.message


def _relevance(error: ValidationError) -> Any:
    from jsonschema.exceptions import relevance  # noqa: PLC0415

    return relevance(error)


def _rule_hint(error: ValidationError, path: KeyPath) -> str | None:
    """Say what is wrong with a JsonLogic rule that has a key no rule allows: jsonschema would
    say it through whichever alternative came first ("does not match any of the regexes")."""
    in_rules = "targeting" in path or (len(path) >= 2 and path[0] == "$evaluators")
    if error.validator != "additionalProperties" or not in_rules:
        return None
    if not isinstance(error.instance, Mapping):
        return None
    if "$ref" in error.instance:
        return (
            'flagd\'s schema takes {"$ref": ...} as an operand, not as a whole rule: '
            'e.g. {"if": [{"$ref": "beta"}, "on", "off"]}'
        )
    keys = ", ".join(repr(key) for key in error.instance)
    return f"unexpected {keys}: a rule is an object with one operator flagd's JsonLogic knows"


def _depth(errors: Iterable[Any]) -> int:
    """How far into the instance the deepest of these errors (or their causes) reached."""
    return max((max(len(e.absolute_path), _depth(e.context)) for e in errors), default=0)


def _is_flag_types(error: ValidationError) -> bool:
    """A flag (checked on its own) that fails flagd's four flag types only on the types of its
    variants."""
    return (
        error.validator == "anyOf"
        and not error.absolute_path
        and isinstance(error.instance, Mapping)
        and isinstance(error.instance.get("variants"), Mapping)
        and all(_is_variant_type(e) for e in error.context)
    )


def _is_variant_type(error: ValidationError) -> bool:
    path = list(error.absolute_path)
    return len(path) == 2 and path[0] == "variants" and error.validator == "type"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in ((bool, "boolean"), (str, "string"), ((int, float), "number"),
                       (Mapping, "object"), (list, "array")):  # fmt: skip
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _key_path(parts: Iterable[str | int]) -> str:
    """``flags.new-notes-view.targeting.fractional[1]``: the form conveyor's own checks use."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


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
