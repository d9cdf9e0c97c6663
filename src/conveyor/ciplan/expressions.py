"""GitHub's ``${{ }}`` expressions, evaluated over what is known without GitHub.

The contexts known locally are ``github`` (what follows from the event and ref), ``inputs``,
``matrix`` and literal ``env``. Anything else — ``vars``, ``secrets``, an unsupported function —
evaluates to an ``Unknown`` carrying the reason, which spreads through operators instead of
being guessed: a job whose ``if:`` is unknown is reported as unknown, never assumed to run.
``success()`` is true and ``failure()`` false, because the plan is of the run where every job
succeeds.

A small hand-written parser rather than a dependency: GitHub's grammar is tiny, and its
semantics (case-insensitive ``==``, numbers from mixed types) are what matter here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from conveyor.ciplan.model import PULL_REQUEST_REF

STATUS_FUNCTIONS = ("always", "success", "failure", "cancelled")


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


def truthy(value: Value) -> bool:
    """Whether a value makes an ``if:`` true: ``false``, ``null``, ``0`` and ``''`` do not."""
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


def as_text(value: Value) -> str:
    """A value as GitHub writes it into a string: ``true``, ``3`` (not ``3.0``), ``''`` for null."""
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
            return left if truthy(left) else right
        if not isinstance(right, Unknown) and truthy(right):
            return right
        return left

    @staticmethod
    def _both(left: Value, right: Value) -> Value:
        if not isinstance(left, Unknown):
            return right if truthy(left) else left
        if not isinstance(right, Unknown) and not truthy(right):
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
            return (value if isinstance(value, Unknown) else not truthy(value)), rest
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
            a, b = as_text(haystack).casefold(), as_text(needle).casefold()
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
        return as_text(value)

    return _INTERPOLATION.sub(substitute, text)


def condition_source(condition: Any) -> str:
    """An ``if:`` as an expression: GitHub allows it with or without ``${{ }}``."""
    text = str(condition).strip()
    whole = _INTERPOLATION.fullmatch(text)
    return whole.group(1).strip() if whole else text


def uses_status_function(source: str) -> bool:
    """Whether an ``if:`` calls ``always()`` & co. (else GitHub adds ``success() &&``)."""
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
