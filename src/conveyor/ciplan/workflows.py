"""Which workflows an event starts: the files, their ``on:`` triggers and GitHub's filters.

Reading a file and deciding whether ``push`` to ``refs/heads/main`` (or a pull request with a
given list of changed files) triggers it needs no expressions and no job graph, so it stands
alone: the planner asks it one question per file. ``paths`` filters are only checked against a
given list of changed files; without one they are assumed to match and the plan says so.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from conveyor.errors import ConfigError, ConveyorError


def _yaml() -> Any:
    try:
        module = importlib.import_module("ruamel.yaml")
    except ImportError:
        raise ConveyorError(
            "ci-plan reads workflows with ruamel.yaml, which this venv lacks — "
            "run `uv sync --group test` (or `nox -s test`)"
        ) from None
    # YAML 1.2 (safe, pure Python): `on:` stays the string "on", not the boolean of YAML 1.1.
    return module.YAML(typ="safe", pure=True)


def load_yaml(text: str, where: object) -> Any:
    """YAML text as plain data; a parse error names ``where`` and the line."""
    try:
        return _yaml().load(text)
    except ConveyorError:
        raise
    except Exception as exc:  # ruamel's errors share no public base class worth importing
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where}{line}: not valid YAML ({exc.__class__.__name__})") from None


def load_workflow(path: Path) -> dict[str, Any]:
    """One workflow file as plain data; a parse error names the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    data = load_yaml(text, path)
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), dict):
        raise ConfigError(f"{path}: not a workflow (no `jobs:` mapping)")
    return data


def workflow_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ConfigError(f"no workflow folder at {folder} — run from the repository root")
    files = sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")])
    if not files:
        raise ConfigError(f"{folder}: no workflow files (*.yml)")
    return files


def triggers(workflow: Mapping[Any, Any]) -> dict[str, Any]:
    """``on:`` as {event: its filters (a mapping; a list for schedule)}, from any of its forms."""
    on = workflow.get("on", workflow.get(True))  # True: a YAML 1.1 loader read `on` as a bool
    if isinstance(on, str):
        return {on: {}}
    if isinstance(on, list):
        return {str(event): {} for event in on}
    if isinstance(on, dict):
        return {str(event): {} if value is None else value for event, value in on.items()}
    return {}


# --- GitHub filter patterns -----------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """GitHub's filter syntax: ``*`` (not ``/``), ``**``, ``?`` and ``+`` after a character,
    ``[...]`` classes; everything else literal."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char in "?+" and out:
            out.append(char)
        elif char == "[":
            end = pattern.find("]", i)
            if end == -1:
                out.append(re.escape(char))
            else:
                out.append(pattern[i : end + 1])
                i = end + 1
                continue
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out))


def matches_filters(value: str, patterns: Iterable[str]) -> bool:
    """Whether ``value`` is selected by a list of patterns; a later ``!pattern`` excludes."""
    selected = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if _pattern_regex(pattern[1:] if negated else pattern).fullmatch(value):
            selected = not negated
    return selected


def as_list(value: Any) -> list[str]:
    """A field GitHub accepts as one string or a list (``needs:``, ``branches:``) as a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


def _ref_filter(event: str, filters: Mapping[str, Any], ref: str) -> tuple[bool, str]:
    """push: branch or tag filters on the pushed ref; pull_request: branch filters on its base."""
    if ref.startswith("refs/tags/"):
        kind, name = "tags", ref.removeprefix("refs/tags/")
    else:
        kind, name = "branches", ref.removeprefix("refs/heads/")
    other = "tags" if kind == "branches" else "branches"
    include, ignore = filters.get(kind), filters.get(f"{kind}-ignore")
    if include is not None:
        if not matches_filters(name, as_list(include)):
            return False, f"{kind} filter {as_list(include)} does not match {name}"
        return True, f"{kind}: {name} matches"
    if ignore is not None:
        if matches_filters(name, as_list(ignore)):
            return False, f"{kind}-ignore {as_list(ignore)} matches {name}"
        return True, f"{kind}-ignore does not match {name}"
    if event == "push" and (other in filters or f"{other}-ignore" in filters):
        what = "tag" if kind == "tags" else "branch"
        return False, f"only {other} filters are set, so a {what} push does not run it"
    return True, ""


def _path_filter(
    filters: Mapping[str, Any], changed: Sequence[str] | None
) -> tuple[bool, str | None]:
    paths, ignore = filters.get("paths"), filters.get("paths-ignore")
    if paths is None and ignore is None:
        return True, None
    if changed is None:
        return True, "paths filter assumed to match (no changed-file list)"
    if paths is not None:
        hit = [f for f in changed if matches_filters(f, as_list(paths))]
        if not hit:
            return False, "no changed file matches its paths filter"
        return True, f"paths filter matches {', '.join(hit[:3])}"
    kept = [f for f in changed if not matches_filters(f, as_list(ignore))]
    if not kept:
        return False, "every changed file matches its paths-ignore filter"
    return True, f"paths-ignore leaves {', '.join(kept[:3])}"


def event_matches(
    workflow: Mapping[str, Any], event: str, ref: str, changed: Sequence[str] | None = None
) -> tuple[bool, str, list[str]]:
    """(runs?, why, notes) for one workflow and one event."""
    on = triggers(workflow)
    if event not in on:
        known = ", ".join(sorted(on)) or "none"
        return False, f"no {event} trigger (triggers: {known})", []
    filters = on[event]
    if not isinstance(filters, Mapping) and event != "schedule":
        filters = {}
    notes: list[str] = []
    why = [event]
    if event in ("push", "pull_request", "pull_request_target"):
        ok, detail = _ref_filter(event, filters, ref)
        if not ok:
            return False, f"{event}: {detail}", []
        if detail:
            why.append(detail)
        ok, path_note = _path_filter(filters, changed)
        if not ok:
            return False, f"{event}: {path_note}", []
        if path_note:
            why.append(path_note)
            if changed is None:
                notes.append(path_note)
    elif event == "schedule" and isinstance(filters, list):
        why.append(f"cron {', '.join(str(entry.get('cron')) for entry in filters)}")
    return True, "; ".join(why), notes
