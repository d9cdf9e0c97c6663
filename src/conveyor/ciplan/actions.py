"""The outputs of the few actions whose results follow from what the plan knows.

A ``uses:`` step's outputs are normally known only on GitHub, so an ``if:`` that reads them is
unknown. ``dorny/paths-filter`` is the exception that matters: its outputs are a function of the
changed files, which ``ci-plan --changed`` gives, so the plan can say which per-area jobs a
commit runs. Without a list every filter is assumed to match, as the workflows' own ``paths``
filters are. Its patterns are picomatch globs; they are matched here with GitHub's filter
syntax, which agrees on the ``dir/**`` and plain-path patterns a workflow's ``paths`` use (it
differs on ``**/name`` at the top level and on braces, which these workflows do not use).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conveyor.ciplan.expressions import Unknown
from conveyor.ciplan.workflows import load_yaml, matches_filters
from conveyor.errors import ConfigError

PATHS_FILTER = "dorny/paths-filter"


class SkippedOutputs(dict[str, str]):
    """A skipped step's (or job's) outputs: GitHub reads every one of them as ``''``."""

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> str:
        return ""


def step_outputs(
    uses: str, inputs: Mapping[str, Any], changed: Sequence[str] | None, root: Path
) -> dict[str, str] | Unknown:
    """What a ``uses:`` step outputs, or Unknown when only a run on GitHub can tell."""
    action = uses.split("@", 1)[0]
    if action != PATHS_FILTER:
        return Unknown(f"the outputs of {action} are known only on GitHub")
    filters = _filters(inputs.get("filters"), root)
    matched: dict[str, list[str]] = {
        name: [f for f in changed if _matches(f, patterns)] if changed is not None else ["*"]
        for name, patterns in filters.items()
    }
    outputs = {name: "true" if hits else "false" for name, hits in matched.items()}
    outputs.update({f"{name}_count": str(len(hits)) for name, hits in matched.items()})
    outputs["changes"] = json.dumps([name for name, hits in matched.items() if hits])
    return outputs


def _matches(path: str, patterns: list[str]) -> bool:
    """paths-filter's default (`some`): a file matches when any one pattern selects it, and a
    ``!pattern`` on its own selects every file it does not match."""
    for pattern in patterns:
        if pattern.startswith("!"):
            if not matches_filters(path, [pattern[1:]]):
                return True
        elif matches_filters(path, [pattern]):
            return True
    return False


def _filters(value: Any, root: Path) -> dict[str, list[str]]:
    """``filters:``, inline YAML or the path of a YAML file, as {name: [patterns]}."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{PATHS_FILTER}: `filters` must be YAML text or a file's path")
    text = value
    if "\n" not in value.strip() and value.strip().endswith((".yml", ".yaml")):
        path = root / value.strip()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"{PATHS_FILTER}: cannot read filters {path} ({exc.strerror})"
            ) from None
    data = load_yaml(text, f"{PATHS_FILTER} filters")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{PATHS_FILTER}: `filters` is not a mapping of names to patterns")
    return {str(name): _patterns(str(name), rules) for name, rules in data.items()}


def _patterns(name: str, rules: Any) -> list[str]:
    """A filter's patterns, flattened: strings, nested lists (YAML anchors) and change-type
    entries such as ``added|modified: "src/**"`` (counted for any change: the plan does not know
    whether a file was added or modified)."""
    if isinstance(rules, str):
        return [rules]
    if isinstance(rules, Mapping):
        return [p for value in rules.values() for p in _patterns(name, value)]
    if isinstance(rules, list):
        return [p for rule in rules for p in _patterns(name, rule)]
    raise ConfigError(f"{PATHS_FILTER}: filter {name!r} has {rules!r}, not a pattern or a list")
