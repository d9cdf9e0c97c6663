"""What GitHub Actions would run for an event, computed from the workflow files themselves.

``invoke ci-plan --event push --ref refs/heads/main`` prints, per workflow, the jobs that would
run in dependency order with the commands each runs, so a developer sees locally what CI will do.

It evaluates what can be known without GitHub: the triggers (``branches``/``tags`` filters;
``paths`` filters only against a given list of changed files, else they are assumed to match and
the plan says so), ``needs``, matrix expansion, calls of local reusable workflows (resolved to the
commands they run with the inputs given) and ``if:`` expressions over ``github.event_name``,
``github.ref``, ``inputs``, ``matrix`` and literal ``env``. Anything else — ``vars``, ``secrets``,
an unsupported function — makes the job *unknown*, with the expression named: never true by
default. The plan assumes every job succeeds (``success()`` is true, ``failure()`` false).
"""

from __future__ import annotations

import importlib
import itertools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from conveyor.config import did_you_mean
from conveyor.errors import ConfigError, ConveyorError, UsageError

EVENTS = (
    "push",
    "pull_request",
    "schedule",
    "workflow_dispatch",
    "pull_request_target",
    "merge_group",
    "release",
    "workflow_run",
    "repository_dispatch",
)
DEFAULT_REF = "refs/heads/main"
# A pull request runs on a merge ref whose number is not known here.
PULL_REQUEST_REF = "refs/pull/<number>/merge"
STATUS_FUNCTIONS = ("always", "success", "failure", "cancelled")
MAX_CALL_DEPTH = 4

RUNS = "runs"
SKIPPED = "skipped"
UNKNOWN = "unknown"


# --- the model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One ``run:`` step, with ``${{ }}`` and ``$ENV`` references resolved where known."""

    text: str
    condition: str | None = None  # an ``if:`` that cannot be evaluated here

    def __str__(self) -> str:
        return self.text if self.condition is None else f"{self.text}  # only if {self.condition}"


@dataclass(frozen=True)
class PlannedJob:
    key: str  # the job's id in its workflow
    title: str  # the id, plus matrix values: "test (3.11)"
    status: str  # RUNS, SKIPPED or UNKNOWN
    reason: str = ""  # why it is skipped or unknown
    needs: tuple[str, ...] = ()
    environment: str | None = None
    concurrency: str | None = None
    calls: str | None = None  # the reusable workflow it runs, e.g. "_nox.yml"
    commands: tuple[Command, ...] = ()
    actions: tuple[str, ...] = ()  # ``uses:`` steps: "actions/checkout v5.0.0"
    unknowns: tuple[str, ...] = ()  # expressions that could not be evaluated


@dataclass(frozen=True)
class WorkflowPlan:
    file: str
    name: str
    triggered: bool
    reason: str
    notes: tuple[str, ...] = ()
    jobs: tuple[PlannedJob, ...] = ()

    def running(self) -> list[PlannedJob]:
        return [job for job in self.jobs if job.status == RUNS]


@dataclass(frozen=True)
class CIPlan:
    event: str
    ref: str
    folder: str
    changed: tuple[str, ...] | None
    workflows: tuple[WorkflowPlan, ...]

    def workflow(self, file: str) -> WorkflowPlan:
        for wf in self.workflows:
            if wf.file == file:
                return wf
        raise KeyError(file)

    def jobs(self, status: str = RUNS) -> list[tuple[str, PlannedJob]]:
        return [(wf.file, job) for wf in self.workflows for job in wf.jobs if job.status == status]

    @property
    def unknowns(self) -> list[str]:
        seen: dict[str, None] = {}
        for wf in self.workflows:
            for job in wf.jobs:
                for expression in job.unknowns:
                    seen.setdefault(expression, None)
        return list(seen)


# --- reading workflow files -----------------------------------------------------------------


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


def load_workflow(path: Path) -> dict[str, Any]:
    """One workflow file as plain data; a parse error names the file and line."""
    try:
        data = _yaml().load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except Exception as exc:  # ruamel's errors share no public base class worth importing
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({exc.__class__.__name__})") from None
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


def _as_list(value: Any) -> list[str]:
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
        if not matches_filters(name, _as_list(include)):
            return False, f"{kind} filter {_as_list(include)} does not match {name}"
        return True, f"{kind}: {name} matches"
    if ignore is not None:
        if matches_filters(name, _as_list(ignore)):
            return False, f"{kind}-ignore {_as_list(ignore)} matches {name}"
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
        hit = [f for f in changed if matches_filters(f, _as_list(paths))]
        if not hit:
            return False, "no changed file matches its paths filter"
        return True, f"paths filter matches {', '.join(hit[:3])}"
    kept = [f for f in changed if not matches_filters(f, _as_list(ignore))]
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


# --- expressions ----------------------------------------------------------------------------


class Unknown:
    """A value this plan cannot know, carrying the reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Unknown({self.reason!r})"


Value = str | bool | float | None | Unknown | dict[str, Any] | list[Any]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^']|'')*')
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<op>==|!=|<=|>=|&&|\|\||[!()<>,\[\]])
      | (?P<name>[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z_*][A-Za-z0-9_\-]*)*)
    )""",
    re.VERBOSE,
)


def _tokens(source: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    source = source.strip()
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None or match.end() == pos:
            raise SyntaxError(f"cannot read {source[pos:]!r}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def _truthy(value: Value) -> bool:
    if isinstance(value, float):
        return value != 0
    return bool(value)


def _number(value: Value) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip() or 0)
        except ValueError:
            return float("nan")
    return float("nan")


def _equal(left: Value, right: Value) -> bool:
    """GitHub's ``==``: strings compare ignoring case; mixed types compare as numbers."""
    if isinstance(left, str) and isinstance(right, str):
        return left.casefold() == right.casefold()
    if type(left) is type(right):
        return left == right
    return _number(left) == _number(right)


def _text(value: Value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    return str(value)


class Evaluator:
    """A small evaluator of GitHub expressions over the contexts known locally."""

    def __init__(self, contexts: Mapping[str, Any], *, needs_succeeded: bool | None = True):
        self.contexts = contexts
        self.needs_succeeded = needs_succeeded

    def evaluate(self, source: str) -> Value:
        try:
            tokens = _tokens(source)
            value, rest = self._or(tokens)
        except (SyntaxError, IndexError) as exc:
            return Unknown(f"unsupported expression ({exc})")
        if rest:
            return Unknown(f"unsupported expression near {' '.join(t for _, t in rest[:3])!r}")
        return value

    # precedence climbing: || < && < == != < comparisons < ! < primary
    def _or(self, tokens: list[tuple[str, str]]) -> tuple[Value, list[tuple[str, str]]]:
        left, tokens = self._and(tokens)
        while tokens and tokens[0][1] == "||":
            right, tokens = self._and(tokens[1:])
            left = self._either(left, right)
        return left, tokens

    def _and(self, tokens: list[tuple[str, str]]) -> tuple[Value, list[tuple[str, str]]]:
        left, tokens = self._equality(tokens)
        while tokens and tokens[0][1] == "&&":
            right, tokens = self._equality(tokens[1:])
            left = self._both(left, right)
        return left, tokens

    @staticmethod
    def _either(left: Value, right: Value) -> Value:
        if not isinstance(left, Unknown):
            return left if _truthy(left) else right
        if not isinstance(right, Unknown) and _truthy(right):
            return right
        return left

    @staticmethod
    def _both(left: Value, right: Value) -> Value:
        if not isinstance(left, Unknown):
            return right if _truthy(left) else left
        if not isinstance(right, Unknown) and not _truthy(right):
            return right
        return left

    def _equality(self, tokens: list[tuple[str, str]]) -> tuple[Value, list[tuple[str, str]]]:
        left, tokens = self._comparison(tokens)
        while tokens and tokens[0][1] in ("==", "!="):
            op = tokens[0][1]
            right, tokens = self._comparison(tokens[1:])
            if isinstance(left, Unknown) or isinstance(right, Unknown):
                left = left if isinstance(left, Unknown) else right
            else:
                same = _equal(left, right)
                left = same if op == "==" else not same
        return left, tokens

    def _comparison(self, tokens: list[tuple[str, str]]) -> tuple[Value, list[tuple[str, str]]]:
        left, tokens = self._unary(tokens)
        while tokens and tokens[0][1] in ("<", ">", "<=", ">="):
            op = tokens[0][1]
            right, tokens = self._unary(tokens[1:])
            if isinstance(left, Unknown) or isinstance(right, Unknown):
                left = left if isinstance(left, Unknown) else right
                continue
            a, b = _number(left), _number(right)
            left = {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]
        return left, tokens

    def _unary(self, tokens: list[tuple[str, str]]) -> tuple[Value, list[tuple[str, str]]]:
        if tokens and tokens[0][1] == "!":
            value, rest = self._unary(tokens[1:])
            return (value if isinstance(value, Unknown) else not _truthy(value)), rest
        return self._primary(tokens)

    def _primary(self, tokens: list[tuple[str, str]]) -> tuple[Value, list[tuple[str, str]]]:
        kind, text = tokens[0]
        rest = tokens[1:]
        if text == "(":
            value, rest = self._or(rest)
            if not rest or rest[0][1] != ")":
                raise SyntaxError("missing )")
            return value, rest[1:]
        if kind == "string":
            return text[1:-1].replace("''", "'"), rest
        if kind == "number":
            return float(text), rest
        if kind != "name":
            raise SyntaxError(f"unexpected {text!r}")
        if rest and rest[0][1] == "(":
            return self._call(text, rest[1:])
        if rest and rest[0][1] == "[":
            raise SyntaxError("index syntax")
        if text in ("true", "false"):
            return text == "true", rest
        if text == "null":
            return None, rest
        return self._lookup(text), rest

    def _call(
        self, name: str, tokens: list[tuple[str, str]]
    ) -> tuple[Value, list[tuple[str, str]]]:
        args: list[Value] = []
        while tokens[0][1] != ")":
            value, tokens = self._or(tokens)
            args.append(value)
            if tokens[0][1] == ",":
                tokens = tokens[1:]
        tokens = tokens[1:]
        lowered = name.lower()
        if lowered in STATUS_FUNCTIONS:
            return self._status(lowered), tokens
        if lowered in ("startswith", "endswith", "contains") and len(args) == 2:
            if any(isinstance(arg, Unknown) for arg in args):
                return next(arg for arg in args if isinstance(arg, Unknown)), tokens
            haystack, needle = args
            if lowered == "contains" and isinstance(haystack, list):
                return any(_equal(item, needle) for item in haystack), tokens
            a, b = _text(haystack).casefold(), _text(needle).casefold()
            result = {"startswith": a.startswith, "endswith": a.endswith}.get(
                lowered, a.__contains__
            )(b)
            return result, tokens
        return Unknown(f"function {name}() is not evaluated locally"), tokens

    def _status(self, name: str) -> Value:
        if name == "always":
            return True
        if name == "cancelled":
            return False
        if name == "failure":
            return False  # the plan is of the run where everything succeeds
        if self.needs_succeeded is None:
            return Unknown("success() depends on a job whose condition is unknown")
        return self.needs_succeeded

    def _lookup(self, dotted: str) -> Value:
        head, _, tail = dotted.partition(".")
        if head in ("vars", "secrets"):
            return Unknown(f"{dotted} is a repository setting, not known locally")
        if head not in self.contexts:
            return Unknown(f"{dotted} is not known locally")
        value: Any = self.contexts[head]
        for part in tail.split(".") if tail else []:
            if isinstance(value, Unknown):
                return value
            if not isinstance(value, Mapping) or part not in value:
                return Unknown(f"{dotted} is not known locally")
            value = value[part]
        if isinstance(value, (str, bool, float, Unknown)) or value is None:
            return value
        if isinstance(value, int):
            return float(value)
        return Unknown(f"{dotted} is not a plain value")


_INTERPOLATION = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)


def interpolate(text: str, evaluator: Evaluator, unknowns: list[str]) -> str:
    """Replace each ``${{ expr }}`` by its value; unknown ones stay as written (and are noted)."""

    def substitute(match: re.Match[str]) -> str:
        value = evaluator.evaluate(match.group(1))
        if isinstance(value, Unknown):
            unknowns.append(f"${{{{ {match.group(1).strip()} }}}}: {value.reason}")
            return match.group(0)
        return _text(value)

    return _INTERPOLATION.sub(substitute, text)


def _condition_source(condition: Any) -> str:
    text = str(condition).strip()
    whole = _INTERPOLATION.fullmatch(text)
    return whole.group(1).strip() if whole else text


def _uses_status_function(source: str) -> bool:
    return re.search(r"\b(" + "|".join(STATUS_FUNCTIONS) + r")\s*\(", source) is not None


def evaluate_value(value: Any, evaluator: Evaluator, unknowns: list[str]) -> Any:
    """A ``with:``/``env:`` value: a whole ``${{ }}`` keeps its type; Unknown when unknowable."""
    if isinstance(value, str):
        whole = _INTERPOLATION.fullmatch(value.strip())
        if whole:
            result = evaluator.evaluate(whole.group(1))
            if isinstance(result, Unknown):
                unknowns.append(f"{value.strip()}: {result.reason}")
            return result
        before = len(unknowns)
        text = interpolate(value, evaluator, unknowns)
        return Unknown(unknowns[-1]) if len(unknowns) > before else text
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


# --- jobs -----------------------------------------------------------------------------------


def job_order(jobs: Mapping[str, Any]) -> list[str]:
    """Job ids in dependency order; ties keep the file's order. A cycle is a config error."""
    needs = {key: _as_list((job or {}).get("needs")) for key, job in jobs.items()}
    for key, wanted in needs.items():
        for need in wanted:
            if need not in jobs:
                raise ConfigError(
                    f"job {key} needs unknown job {need!r}" + did_you_mean(need, list(jobs))
                )
    order: list[str] = []
    remaining = list(jobs)
    while remaining:
        ready = [key for key in remaining if all(n in order for n in needs[key])]
        if not ready:
            raise ConfigError(f"jobs {', '.join(remaining)} need each other in a cycle")
        order.append(ready[0])
        remaining.remove(ready[0])
    return order


def expand_matrix(strategy: Any) -> list[dict[str, Any]] | Unknown:
    """The matrix's combinations, in GitHub's order (cross product, exclude, then include)."""
    if not isinstance(strategy, Mapping) or "matrix" not in strategy:
        return [{}]
    matrix = strategy["matrix"]
    if not isinstance(matrix, Mapping):
        return Unknown(f"matrix {matrix!r} is computed at run time")
    axes = {k: v for k, v in matrix.items() if k not in ("include", "exclude")}
    for key, values in axes.items():
        if not isinstance(values, list):
            return Unknown(f"matrix.{key} {values!r} is computed at run time")
    combos: list[dict[str, Any]] = [
        dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())
    ]
    for rule in matrix.get("exclude") or []:
        combos = [c for c in combos if not all(c.get(k) == v for k, v in rule.items())]
    for extra in matrix.get("include") or []:
        matched = False
        for combo in combos:
            if all(combo.get(k) == v for k, v in extra.items() if k in axes):
                combo.update({k: v for k, v in extra.items() if k not in axes})
                matched = True
        if not matched:
            combos.append(dict(extra))
    return combos or [{}]


def _title(key: str, combo: Mapping[str, Any]) -> str:
    if not combo:
        return key
    return f"{key} ({', '.join(_text(v) for v in combo.values())})"


_ENV_REF = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def _expand_env(command: str, env: Mapping[str, Any]) -> str:
    """Show ``$NAME`` with its value when the step's env gives a known one (for reading only)."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        value = env.get(name)
        if value is None or isinstance(value, Unknown):
            return match.group(0)
        return _text(value)

    return _ENV_REF.sub(substitute, command)


def _action_label(uses: str, comment: str | None) -> str:
    name = uses.split("@", 1)[0]
    return f"{name} {comment}" if comment else name


class Planner:
    def __init__(self, folder: Path, event: str, ref: str, changed: Sequence[str] | None):
        self.folder = folder
        self.root = folder.parent.parent
        self.event = event
        self.ref = ref
        self.changed = changed
        self.github = github_context(event, ref)
        self._cache: dict[Path, dict[str, Any]] = {}

    def workflow(self, path: Path) -> dict[str, Any]:
        resolved = path.resolve()
        if resolved not in self._cache:
            self._cache[resolved] = load_workflow(path)
        return self._cache[resolved]

    def plan(self, path: Path) -> WorkflowPlan:
        data = self.workflow(path)
        name = str(data.get("name") or path.name)
        on = triggers(data)
        if set(on) <= {"workflow_call"}:
            return WorkflowPlan(path.name, name, False, "reusable: runs only when a job calls it")
        triggered, reason, notes = event_matches(data, self.event, self.ref, self.changed)
        if not triggered:
            return WorkflowPlan(path.name, name, False, reason)
        env = self._env(data.get("env"), {"github": self.github}, [])
        jobs = self.plan_jobs(path, data, {"github": self.github, "env": env}, depth=0)
        return WorkflowPlan(path.name, name, True, reason, tuple(notes), tuple(jobs))

    def plan_jobs(
        self, path: Path, data: Mapping[str, Any], contexts: Mapping[str, Any], *, depth: int
    ) -> list[PlannedJob]:
        jobs: Mapping[str, Any] = data["jobs"]
        try:
            order = job_order(jobs)
        except ConfigError as exc:
            raise ConfigError(f"{path.name}: {exc}") from None
        state: dict[str, str] = {}
        planned: list[PlannedJob] = []
        for key in order:
            job = jobs[key] or {}
            needs = tuple(_as_list(job.get("needs")))
            entries = self.plan_job(
                path, key, job, needs=needs, state=state, contexts=contexts, depth=depth
            )
            statuses = {entry.status for entry in entries}
            state[key] = (
                RUNS if statuses == {RUNS} else (SKIPPED if SKIPPED in statuses else UNKNOWN)
            )
            planned.extend(entries)
        return planned

    def plan_job(
        self,
        path: Path,
        key: str,
        job: Mapping[str, Any],
        *,
        needs: tuple[str, ...],
        state: Mapping[str, str],
        contexts: Mapping[str, Any],
        depth: int,
    ) -> list[PlannedJob]:
        skipped_needs = [n for n in needs if state.get(n) == SKIPPED]
        unknown_needs = [n for n in needs if state.get(n) == UNKNOWN]
        needs_ok: bool | None = False if skipped_needs else (None if unknown_needs else True)
        combos = expand_matrix(job.get("strategy"))
        if isinstance(combos, Unknown):
            return [PlannedJob(key, key, UNKNOWN, combos.reason, needs, unknowns=(combos.reason,))]
        entries = []
        for combo in combos:
            unknowns: list[str] = []
            scope = {**contexts, "matrix": combo, "needs": {}}
            evaluator = Evaluator(scope, needs_succeeded=needs_ok)
            title = _title(key, combo)
            status, reason = self._job_status(
                job, evaluator, skipped_needs, unknown_needs, unknowns
            )
            base = PlannedJob(
                key,
                title,
                status,
                reason,
                needs=needs,
                environment=self._environment(job.get("environment"), evaluator, unknowns),
                concurrency=self._concurrency(job.get("concurrency"), evaluator, unknowns),
            )
            if status != RUNS:
                entries.append(replace(base, unknowns=tuple(unknowns)))
                continue
            if "uses" in job:
                calls, commands, actions = self._call(path, job, scope, unknowns, depth=depth)
            else:
                calls = None
                commands, actions = self._steps(path, job, scope, unknowns)
            entries.append(
                replace(
                    base,
                    calls=calls,
                    commands=tuple(commands),
                    actions=tuple(actions),
                    unknowns=tuple(unknowns),
                )
            )
        return entries

    @staticmethod
    def _job_status(
        job: Mapping[str, Any],
        evaluator: Evaluator,
        skipped_needs: list[str],
        unknown_needs: list[str],
        unknowns: list[str],
    ) -> tuple[str, str]:
        condition = job.get("if")
        source = _condition_source(condition) if condition is not None else None
        # Without a status function, GitHub's `if:` is implicitly `success() && (...)`.
        if source is None or not _uses_status_function(source):
            if skipped_needs:
                return SKIPPED, f"needs {', '.join(skipped_needs)}, which does not run"
            if unknown_needs:
                return UNKNOWN, f"needs {', '.join(unknown_needs)}, whose condition is unknown"
        if source is None:
            return RUNS, ""
        value = evaluator.evaluate(source)
        if isinstance(value, Unknown):
            unknowns.append(f"if: {source} — {value.reason}")
            return UNKNOWN, f"if: {source} — {value.reason}"
        if not _truthy(value):
            return SKIPPED, f"if: {source} is false"
        return RUNS, ""

    @staticmethod
    def _environment(value: Any, evaluator: Evaluator, unknowns: list[str]) -> str | None:
        if value is None:
            return None
        name = value.get("name") if isinstance(value, Mapping) else value
        return interpolate(str(name), evaluator, unknowns)

    @staticmethod
    def _concurrency(value: Any, evaluator: Evaluator, unknowns: list[str]) -> str | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            return interpolate(str(value), evaluator, unknowns)
        group = interpolate(str(value.get("group", "")), evaluator, unknowns)
        cancel = value.get("cancel-in-progress", False)
        if isinstance(cancel, str):
            cancel = evaluate_value(cancel, evaluator, unknowns)
        if isinstance(cancel, Unknown):
            return f"{group} (cancel-in-progress unknown)"
        policy = "cancels the running one" if _truthy(cancel) else "queued, never cancelled"
        return f"{group} ({policy})"

    def _env(
        self, env: Any, contexts: Mapping[str, Any], unknowns: list[str], base: Any = None
    ) -> dict[str, Any]:
        merged = dict(base or {})
        evaluator = Evaluator(contexts)
        for name, value in (env or {}).items():
            merged[str(name)] = evaluate_value(value, evaluator, [])
        return merged

    def _steps(
        self, path: Path, job: Mapping[str, Any], scope: Mapping[str, Any], unknowns: list[str]
    ) -> tuple[list[Command], list[str]]:
        job_env = self._env(job.get("env"), scope, unknowns, base=scope.get("env"))
        comments = self._version_comments(path)
        commands: list[Command] = []
        actions: list[str] = []
        for step in job.get("steps") or []:
            step_env = self._env(step.get("env"), {**scope, "env": job_env}, unknowns, job_env)
            evaluator = Evaluator({**scope, "env": step_env})
            condition: str | None = None
            if "if" in step:
                source = _condition_source(step["if"])
                value = evaluator.evaluate(source)
                if isinstance(value, Unknown):
                    condition = source
                elif not _truthy(value):
                    continue
            if "uses" in step:
                uses = str(step["uses"])
                actions.append(_action_label(uses, comments.get(uses)))
                continue
            if "run" not in step:
                continue
            text = interpolate(str(step["run"]).strip(), evaluator, unknowns)
            commands.append(Command(_expand_env(text, step_env), condition))
        return commands, actions

    def _call(
        self,
        path: Path,
        job: Mapping[str, Any],
        scope: Mapping[str, Any],
        unknowns: list[str],
        *,
        depth: int,
    ) -> tuple[str, list[Command], list[str]]:
        uses = str(job["uses"])
        if not uses.startswith("./"):
            unknowns.append(f"uses: {uses} — a workflow outside this repository")
            return uses, [], []
        target = (self.root / uses.removeprefix("./")).resolve()
        if not target.is_file():
            raise ConfigError(f"{path.name}: job calls {uses}, which does not exist")
        if depth >= MAX_CALL_DEPTH:
            raise ConfigError(f"{path.name}: reusable workflows nest deeper than {MAX_CALL_DEPTH}")
        called = self.workflow(target)
        declared = (triggers(called).get("workflow_call") or {}).get("inputs") or {}
        evaluator = Evaluator(scope)
        inputs: dict[str, Any] = {}
        for name, spec in declared.items():
            default = (spec or {}).get("default")
            inputs[str(name)] = (
                float(default)
                if isinstance(default, int) and not isinstance(default, bool)
                else default
            )
        for name, value in (job.get("with") or {}).items():
            if name not in declared:
                raise ConfigError(
                    f"{path.name}: job passes input {name!r}, which {target.name} does not declare"
                    + did_you_mean(str(name), [str(k) for k in declared])
                )
            inputs[str(name)] = evaluate_value(value, evaluator, unknowns)
        inner = {"github": self.github, "inputs": inputs}
        inner["env"] = self._env(called.get("env"), inner, unknowns)
        commands: list[Command] = []
        actions: list[str] = []
        for entry in self.plan_jobs(target, called, inner, depth=depth + 1):
            unknowns.extend(entry.unknowns)
            if entry.status == RUNS:
                commands.extend(entry.commands)
                actions.extend(entry.actions)
        return target.name, commands, actions

    def _version_comments(self, path: Path) -> dict[str, str]:
        """``uses: owner/repo@sha # v1.2.3`` -> {"owner/repo@sha": "v1.2.3"}, from the text."""
        found: dict[str, str] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            match = re.search(r"uses:\s*(\S+)\s+#\s*(\S+)", line)
            if match:
                found[match.group(1)] = match.group(2)
        return found


def github_context(event: str, ref: str) -> dict[str, Any]:
    """The parts of the ``github`` context that follow from the event and ref."""
    if event in ("pull_request", "pull_request_target"):
        base = ref.removeprefix("refs/heads/")
        return {
            "event_name": event,
            "ref": PULL_REQUEST_REF,
            "ref_name": "<number>/merge",
            "base_ref": base,
            "head_ref": Unknown("github.head_ref is the pull request's branch, not known here"),
        }
    name = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
    return {
        "event_name": event,
        "ref": ref,
        "ref_name": name,
        "ref_type": "tag" if ref.startswith("refs/tags/") else "branch",
        "base_ref": "",
        "head_ref": "",
    }


def plan(
    folder: Path,
    *,
    event: str,
    ref: str = DEFAULT_REF,
    changed: Sequence[str] | None = None,
) -> CIPlan:
    """The jobs every workflow in ``folder`` would run for ``event`` on ``ref``.

    For ``pull_request``, ``ref`` is the base branch the pull request targets. ``changed`` is the
    list of changed files for ``paths`` filters; without it they are assumed to match.
    """
    if event not in EVENTS:
        raise UsageError(
            f"unknown event {event!r} (known: {', '.join(EVENTS)})" + did_you_mean(event, EVENTS)
        )
    if not ref.startswith(("refs/heads/", "refs/tags/")):
        raise UsageError(f"ref {ref!r} is not a full ref — give refs/heads/BRANCH or refs/tags/TAG")
    planner = Planner(folder, event, ref, changed)
    workflows = tuple(planner.plan(path) for path in workflow_files(folder))
    shown = (Path(folder.parent.name) / folder.name).as_posix()  # ".github/workflows"
    return CIPlan(event, ref, shown, tuple(changed) if changed is not None else None, workflows)


# --- output ---------------------------------------------------------------------------------


def _describe_event(ci: CIPlan) -> str:
    if ci.event in ("pull_request", "pull_request_target"):
        return f"{ci.event} into {ci.ref} (github.ref = {PULL_REQUEST_REF})"
    if ci.event == "push":
        return f"push to {ci.ref}"
    return f"{ci.event} on {ci.ref}"


def render(ci: CIPlan) -> str:
    return "\n".join(_render_lines(ci))


def _render_lines(ci: CIPlan) -> Iterator[str]:
    yield f"CI plan for {_describe_event(ci)}, from the workflow files in {ci.folder}"
    if ci.changed is None:
        yield "Path filters are assumed to match: no list of changed files was given."
    yield "The plan assumes every job succeeds; `if:` it cannot evaluate is reported, not assumed."
    for wf in ci.workflows:
        if not wf.triggered:
            continue
        yield ""
        yield f"{wf.file} ({wf.name}): runs — {wf.reason}"
        number = 0
        for job in wf.jobs:
            if job.status != RUNS:
                continue
            number += 1
            details = []
            if job.needs:
                details.append(f"after {', '.join(job.needs)}")
            if job.environment:
                details.append(f"environment {job.environment}")
            if job.concurrency:
                details.append(f"concurrency {job.concurrency}")
            if job.calls:
                details.append(f"via {job.calls}")
            suffix = f"  [{'; '.join(details)}]" if details else ""
            yield f"  {number}. {job.title}{suffix}"
            for command in job.commands:
                yield f"       $ {command}"
            if not job.commands:
                yield f"       (actions only: {', '.join(job.actions) or 'none'})"
        for job in wf.jobs:
            if job.status == SKIPPED:
                yield f"  skipped: {job.title} — {job.reason}"
        for job in wf.jobs:
            if job.status == UNKNOWN:
                yield f"  UNKNOWN: {job.title} — {job.reason}"
    quiet = [wf for wf in ci.workflows if not wf.triggered]
    if quiet:
        yield ""
        yield "Not triggered:"
        for wf in quiet:
            yield f"  {wf.file}: {wf.reason}"
    if ci.unknowns:
        yield ""
        yield "Not evaluated locally (left as written; a job whose `if:` needs one is UNKNOWN):"
        for expression in ci.unknowns:
            yield f"  {expression}"
