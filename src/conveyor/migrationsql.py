"""A release's migration SQL: read through the app's migration protocol, linted, previewed.

An image that declares ``[images.X] migrate`` (refapi: ``python3 -m refapi migrate``) renders
every revision offline with ``<migrate> sql --json``::

    {"dialect": "postgresql",
     "revisions": [{"revision", "down_revision", "kind", "message", "sql"}, ...]}  # base first

``kind`` is ``expand`` (additive, runs before the switch) or ``contract`` (destructive, runs
only when no old color is left to serve). Two users of that rendering live here:

* **the lint** (``conveyor migrations-lint``, in ``nox -s lint``): one line per problem when a
  revision is destructive without being marked contract, when history has more than one head,
  or when an expand revision follows a contract revision in one release. Destructive statements
  are found by squawk (a PostgreSQL migration linter, its rules mapped to what "destructive"
  means here) and by conveyor's own statement checks, which catch what squawk does not
  (``TRUNCATE``) and keep the lint honest if squawk's rules change.
* **the preview** (written by ``nox -s image`` into ``dist/<version>/``): the revisions as
  JSON and as one SQL file, recorded with their sha256 in the manifest; an approval binds that
  sha256 (:mod:`conveyor.approvals`) and ``deploy --dry-run`` lists the revisions
  (:func:`release_migrations`).

Both check the PostgreSQL rendering: SQLite runs batch SQL (table copies) that differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor import artifacts, tools
from conveyor.config import Config, ImageSpec
from conveyor.errors import ArtifactError, ConveyorError

EXPAND, CONTRACT = "expand", "contract"
KINDS = (EXPAND, CONTRACT)
SQL_COMMAND = ("sql", "--json")
SQLITE_NOTE = (
    "checked the PostgreSQL rendering (`alembic upgrade --sql`); SQLite runs batch SQL "
    "(table copies) that differs from it"
)
MANIFEST_KEY = "migrations"


class MigrationSqlError(ConveyorError):
    """The migration command's offline rendering is missing or not what the protocol says."""


class MigrationLintFailed(ConveyorError):
    """A revision breaks the expand/contract discipline; each problem was printed."""


# --- the protocol ------------------------------------------------------------------------


@dataclass(frozen=True)
class Revision:
    """One revision as ``<migrate> sql --json`` renders it."""

    revision: str
    down_revisions: tuple[str, ...]  # none for a base, two or more for a merge
    kind: str
    message: str
    sql: str

    def as_dict(self) -> dict[str, Any]:
        down: str | list[str] | None = (
            None
            if not self.down_revisions
            else self.down_revisions[0]
            if len(self.down_revisions) == 1
            else list(self.down_revisions)
        )
        return {
            "revision": self.revision,
            "down_revision": down,
            "kind": self.kind,
            "message": self.message,
            "sql": self.sql,
        }


def migrate_argv(command: str) -> list[str]:
    """``<migrate> sql --json`` as an argv (the command is declared as one shell-like string)."""
    return [*shlex.split(command), *SQL_COMMAND]


def image_command(spec: ImageSpec) -> str:
    """The image's migration command; empty when it has no migrations."""
    return str(getattr(spec, "migrate", "") or "")


def parse(text: str, *, where: str) -> list[Revision]:
    """The revisions of one ``sql --json`` output, base first; one clear line when malformed."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MigrationSqlError(f"{where}: not JSON ({exc.msg}): {text.strip()[:120]!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("revisions"), list):
        raise MigrationSqlError(f"{where}: expected an object with a 'revisions' list")
    dialect = data.get("dialect", "postgresql")
    if dialect != "postgresql":
        raise MigrationSqlError(
            f"{where}: rendered for {dialect!r}; conveyor checks the PostgreSQL rendering"
        )
    revisions = []
    for number, item in enumerate(data["revisions"], 1):
        if not isinstance(item, dict) or not item.get("revision"):
            raise MigrationSqlError(f"{where}: revision #{number} has no 'revision' id")
        down = item.get("down_revision")
        downs = (down,) if isinstance(down, str) else tuple(str(d) for d in (down or ()))
        kind = str(item.get("kind") or EXPAND)
        if kind not in KINDS:
            raise MigrationSqlError(
                f"{where}: revision {item['revision']} has kind {kind!r}, not one of "
                f"{', '.join(KINDS)}"
            )
        revisions.append(
            Revision(
                revision=str(item["revision"]),
                down_revisions=downs,
                kind=kind,
                message=str(item.get("message") or ""),
                sql=str(item.get("sql") or ""),
            )
        )
    return revisions


def as_json(revisions: Iterable[Revision]) -> str:
    data = {"dialect": "postgresql", "revisions": [r.as_dict() for r in revisions]}
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def as_sql(revisions: Iterable[Revision]) -> str:
    """Every revision's SQL in order, each under a ``-- revision <id> (<kind>): <message>``
    header: what a reviewer reads and an approval binds."""
    parts = [f"-- {SQLITE_NOTE}.\n"]
    for rev in revisions:
        message = " ".join(rev.message.split())
        parts.append(f"\n-- revision {rev.revision} ({rev.kind}): {message}\n{rev.sql.strip()}\n")
    return "".join(parts)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- the lint: statements ------------------------------------------------------------------

DROPS_COLUMN = "drops a column"
DROPS_TABLE = "drops a table"
RENAMES_COLUMN = "renames a column"
RENAMES_TABLE = "renames a table"
CHANGES_TYPE = "changes a column's type"
SETS_NOT_NULL = "sets NOT NULL on an existing column"
ADDS_REQUIRED = "adds a NOT NULL column without a DEFAULT"
EMPTIES_TABLE = "empties a table"
DROPS_OBJECT = "drops or renames an object existing code may use"

# squawk's rules that mean "the running (old) release may break": destructive, so contract.
DESTRUCTIVE_RULES = {
    "ban-drop-column": DROPS_COLUMN,
    "ban-drop-table": DROPS_TABLE,
    "renaming-column": RENAMES_COLUMN,
    "renaming-table": RENAMES_TABLE,
    "changing-column-type": CHANGES_TYPE,
    "adding-not-nullable-field": SETS_NOT_NULL,
    "adding-required-field": ADDS_REQUIRED,
    "ban-truncate-table-cascade": EMPTIES_TABLE,
    "ban-drop-view": DROPS_OBJECT,
    "ban-drop-sequence": DROPS_OBJECT,
    "ban-drop-type": DROPS_OBJECT,
    "ban-drop-schema": DROPS_OBJECT,
    "ban-drop-database": DROPS_OBJECT,
    "renaming-object": DROPS_OBJECT,
}
SQUAWK_EXCLUDED = (
    # The migration session sets lock_timeout and statement_timeout itself (refapi's command).
    "require-lock-timeout",
    "require-statement-timeout",
    # alembic runs each migration in a transaction, where CONCURRENTLY is not allowed.
    "require-concurrent-index-creation",
    "require-concurrent-index-deletion",
    # The rendering may carry alembic's own BEGIN/COMMIT around what --assume-in-transaction says.
    "transaction-nesting",
    # Column-type taste, not the safety of a schema change against live traffic.
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
    "prefer-identity",
    "prefer-text-field",
    "prefer-timestamptz",
)
SQUAWK_PG_VERSION = "15"  # Debian bookworm's PostgreSQL, the one the tests run


@dataclass(frozen=True)
class Statement:
    text: str
    first_line: int  # 0-based, as squawk counts
    last_line: int


_DOLLAR = re.compile(r"\$[A-Za-z_]*\$")


def statements(sql: str) -> list[Statement]:
    """Split SQL at top-level semicolons (quotes, comments and $$-bodies respected)."""
    found: list[Statement] = []
    start, i, n = 0, 0, len(sql)
    quote: str | None = None
    while i < n:
        if quote is not None:
            if sql.startswith(quote, i):
                i, quote = i + len(quote), None
            else:
                i += 1
        elif sql[i] in "'\"":
            quote, i = sql[i], i + 1
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            i = n if newline < 0 else newline
        elif sql[i] == "$" and (dollar := _DOLLAR.match(sql, i)):
            quote, i = dollar.group(0), dollar.end()
        elif sql[i] == ";":
            _add_statement(found, sql, start, i + 1)
            start = i = i + 1
        else:
            i += 1
    _add_statement(found, sql, start, n)
    return found


def _add_statement(found: list[Statement], sql: str, start: int, end: int) -> None:
    pos = start
    while pos < end:
        if sql[pos].isspace():
            pos += 1
        elif sql.startswith("--", pos):
            newline = sql.find("\n", pos)
            pos = end if newline < 0 else newline
        else:
            break
    if pos >= end:
        return
    found.append(
        Statement(sql[pos:end].strip(), sql.count("\n", 0, pos), sql.count("\n", 0, end - 1))
    )


def _strip_comments(text: str) -> str:
    return re.sub(r"--[^\n]*", "", text)


_ALTER_TABLE = re.compile(
    r"^ALTER TABLE (?:IF EXISTS )?(?:ONLY )?(?P<table>\"[^\"]+\"|[^\s\"]+) (?P<actions>.*?);?$"
)
_CREATE_TABLE = re.compile(
    r"^CREATE (?:UNLOGGED |TEMP |TEMPORARY )?TABLE (?:IF NOT EXISTS )?(?P<table>\"[^\"]+\"|\S+)"
)
_NOT_COLUMNS = ("CONSTRAINT", "PRIMARY", "UNIQUE", "FOREIGN", "CHECK", "EXCLUDE")


def _normal(text: str) -> str:
    """Keywords uppercased, whitespace collapsed: what the statement checks match."""
    return " ".join(_strip_comments(text).split()).upper()


def _actions(actions: str) -> list[str]:
    """``ALTER TABLE`` actions split at top-level commas."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in actions:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def statement_problems(text: str) -> list[str]:
    """conveyor's own checks: what ``text`` does that the old release may not survive."""
    sql = _normal(text)
    if re.match(r"^DROP TABLE\b", sql):
        return [DROPS_TABLE]
    if re.match(r"^TRUNCATE\b", sql):
        return [EMPTIES_TABLE]
    match = _ALTER_TABLE.match(sql)
    if not match:
        return []
    found = []
    for action in _actions(match.group("actions")):
        if re.match(r"^DROP (?!CONSTRAINT\b)", action):
            found.append(DROPS_COLUMN)
        elif re.match(r"^RENAME TO\b", action):
            found.append(RENAMES_TABLE)
        elif re.match(r"^RENAME (?!CONSTRAINT\b)", action):
            found.append(RENAMES_COLUMN)
        elif re.match(r"^ALTER (?:COLUMN )?\S+ (?:SET DATA )?TYPE\b", action):
            found.append(CHANGES_TYPE)
        elif re.match(r"^ALTER (?:COLUMN )?\S+ SET NOT NULL\b", action):
            found.append(SETS_NOT_NULL)
        elif (
            re.match(r"^ADD (?!(?:" + "|".join(_NOT_COLUMNS) + r")\b)", action)
            and " NOT NULL" in action
            and " DEFAULT " not in f"{action} "
            and " GENERATED " not in action
        ):
            found.append(ADDS_REQUIRED)
    return found


def _table_of(text: str) -> str | None:
    match = _ALTER_TABLE.match(_normal(text))
    return match.group("table") if match else None


def _created_tables(stmts: Iterable[Statement]) -> set[str]:
    found = set()
    for stmt in stmts:
        match = _CREATE_TABLE.match(_normal(stmt.text))
        if match:
            found.add(match.group("table"))
    return found


# --- the lint: squawk ----------------------------------------------------------------------


@dataclass(frozen=True)
class SquawkFinding:
    rule: str
    line: int  # 0-based, in the revision's SQL
    message: str


def run_squawk(revisions: Sequence[Revision], squawk: str) -> dict[str, list[SquawkFinding]]:
    """squawk's findings on each revision's SQL (one file per revision, one run)."""
    findings: dict[str, list[SquawkFinding]] = {r.revision: [] for r in revisions}
    with tempfile.TemporaryDirectory(prefix="conveyor-squawk-") as tmp:
        files: dict[str, str] = {}
        for number, rev in enumerate(revisions):
            if not rev.sql.strip():
                continue
            path = Path(tmp) / f"{number:04d}.sql"
            path.write_text(rev.sql, encoding="utf-8")
            files[str(path)] = rev.revision
        if not files:
            return findings
        result = tools.run(
            [
                squawk,
                "--reporter=json",
                "--assume-in-transaction",
                f"--pg-version={SQUAWK_PG_VERSION}",
                f"--exclude={','.join(SQUAWK_EXCLUDED)}",
                *files,
            ],
            what="squawk",
            timeout=120,
            check=False,
        )
    if result.returncode not in (0, 1):
        tail = (result.stderr or result.stdout).strip().splitlines()[-2:]
        raise MigrationSqlError(f"squawk failed (exit {result.returncode}): {' | '.join(tail)}")
    try:
        reported = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        raise MigrationSqlError(
            f"squawk printed no JSON: {result.stdout.strip()[:160]!r}"
        ) from None
    for item in reported:
        revision = files.get(str(item.get("file", "")))
        if revision is not None:
            findings[revision].append(
                SquawkFinding(
                    rule=str(item.get("rule_name", "")),
                    line=int(item.get("line", 0)),
                    message=str(item.get("message", "")),
                )
            )
    return findings


# --- the lint ------------------------------------------------------------------------------


@dataclass
class LintReport:
    """What the lint found: problems fail it, warnings (squawk's other advice) do not."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def heads(revisions: Sequence[Revision]) -> list[str]:
    """Revisions that no other revision revises."""
    revised = {down for rev in revisions for down in rev.down_revisions}
    return [rev.revision for rev in revisions if rev.revision not in revised]


def _name(rev: Revision) -> str:
    message = " ".join(rev.message.split())
    return f"revision {rev.revision} ({rev.kind}{', ' + repr(message) if message else ''})"


def structure_problems(revisions: Sequence[Revision], *, since: str | None = None) -> list[str]:
    """One head, every parent known, and within the revisions after ``since`` (this
    release's) no expand revision after a contract revision."""
    problems = []
    known = {rev.revision for rev in revisions}
    for rev in revisions:
        for down in rev.down_revisions:
            if down not in known:
                problems.append(f"{_name(rev)} revises {down}, which is not a revision here")
    tips = heads(revisions)
    if len(tips) > 1:
        problems.append(
            f"{len(tips)} heads ({', '.join(tips)}): history must be linear — merge them "
            f"(`alembic merge`) or rebase one branch onto the other"
        )
    pending = list(revisions)
    if since is not None:
        ids = [rev.revision for rev in revisions]
        if since not in ids:
            problems.append(f"--since {since} is not one of these revisions")
            return problems
        pending = pending[ids.index(since) + 1 :]
    contract: Revision | None = None
    for rev in pending:
        if rev.kind == CONTRACT:
            contract = contract or rev
        elif contract is not None:
            problems.append(
                f"{_name(rev)} follows contract revision {contract.revision} in one release: "
                f"contract revisions run after the verify window, so it could not run before "
                f"the switch — order it before {contract.revision} or mark it contract (if "
                f"{contract.revision} shipped in an earlier release, pass --since "
                f"{contract.revision})"
            )
    return problems


def destructive_problems(
    revisions: Sequence[Revision], squawked: Mapping[str, Sequence[SquawkFinding]]
) -> tuple[list[str], list[str]]:
    """Destructive statements in expand revisions (problems) and squawk's other advice
    (warnings), one line each; a statement both squawk and conveyor flag is named once."""
    problems: list[str] = []
    warnings: list[str] = []
    for rev in revisions:
        stmts = statements(rev.sql)
        created = _created_tables(stmts)
        flagged: dict[tuple[int, str], list[str]] = {}
        for index, stmt in enumerate(stmts):
            for what in statement_problems(stmt.text):
                flagged.setdefault((index, what), [])
        for finding in squawked.get(rev.revision, ()):
            index = next(
                (i for i, s in enumerate(stmts) if s.first_line <= finding.line <= s.last_line),
                -1,
            )
            meaning = DESTRUCTIVE_RULES.get(finding.rule)
            if meaning is None:
                shown = stmts[index].text if index >= 0 else f"line {finding.line + 1}"
                warnings.append(
                    f"{_name(rev)}: squawk {finding.rule}: {finding.message} — {_short(shown)}"
                )
                continue
            flagged.setdefault((index, meaning), []).append(finding.rule)
        if rev.kind == CONTRACT:
            continue
        for (index, what), rules in sorted(flagged.items()):
            text = stmts[index].text if index >= 0 else ""
            if what == ADDS_REQUIRED and _table_of(text) in created:
                continue  # a table created in this revision has no rows and no old readers
            by = f"squawk {', '.join(sorted(set(rules)))}" if rules else "conveyor"
            problems.append(
                f"{_name(rev)} {what} but is not marked contract — {_short(text)} [{by}] — "
                f'make it additive, or set kind = "contract" in the revision (it then runs '
                f"after the verify window)"
            )
    return problems, warnings


def _short(text: str, limit: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def lint(revisions: Sequence[Revision], *, squawk: str, since: str | None = None) -> LintReport:
    """The whole lint of one image's revisions (squawk runs for real)."""
    report = LintReport()
    report.problems.extend(structure_problems(revisions, since=since))
    problems, warnings = destructive_problems(revisions, run_squawk(revisions, squawk))
    report.problems.extend(problems)
    report.warnings.extend(warnings)
    contracts = sum(1 for r in revisions if r.kind == CONTRACT)
    order = f"after {since}" if since else "over the whole history"
    report.notes.append(
        f"{len(revisions)} revisions ({len(revisions) - contracts} expand, {contracts} "
        f"contract); expand-after-contract checked {order}"
    )
    report.notes.append(SQLITE_NOTE)
    return report


def render_locally(config: Config, spec: ImageSpec) -> list[Revision]:
    """Run the image's migration command in this environment (the lint's venv has the app
    installed) and read its revisions."""
    command = image_command(spec)
    argv = migrate_argv(command)
    result = tools.run(argv, cwd=config.root, what=f"{command} sql --json", timeout=300)
    return parse(result.stdout, where=f"[images.{spec.name}] `{command} sql --json`")


def lint_images(
    config: Config,
    *,
    since: str | None = None,
    say: Callable[[str], None] = print,
) -> None:
    """Lint every image that declares a migration command; raise when a problem was found."""
    specs = [spec for spec in config.images.values() if image_command(spec)]
    if not specs:
        say(f"migration lint: no image in {config.path.name} declares `migrate`; nothing to check")
        return
    squawk = tools.require("squawk", "install the lint group (`nox -s lint`): squawk-cli")
    failed = 0
    for spec in specs:
        report = lint(render_locally(config, spec), squawk=squawk, since=since)
        for line in report.problems:
            say(f"{spec.name}: error: {line}")
        for line in report.warnings:
            say(f"{spec.name}: warning: {line}")
        for line in report.notes:
            say(f"{spec.name}: {line}")
        failed += len(report.problems)
    if failed:
        raise MigrationLintFailed(
            f"migration lint: {failed} problem(s) above — a destructive change belongs in a "
            f"contract revision, and history stays linear"
        )
    say("migration lint: passed")


# --- the preview in a release ---------------------------------------------------------------


def preview_names(image: str, version: str) -> tuple[str, str]:
    """The preview's file names in dist/<version>/ (flat, like every artifact there: the
    artifact store publishes a version's files, not folders)."""
    return f"migrations-{image}-{version}.json", f"migrations-{image}-{version}.sql"


def write_preview(
    folder: Path, manifest: dict[str, Any], image: str, image_id: str, revisions: list[Revision]
) -> dict[str, Any]:
    """Write one image's preview into ``folder`` and record it in ``manifest`` (not saved)."""
    json_name, sql_name = preview_names(image, str(manifest["version"]))
    sql = as_sql(revisions)
    (folder / json_name).write_text(as_json(revisions), encoding="utf-8")
    (folder / sql_name).write_text(sql, encoding="utf-8")
    manifest.setdefault("files", {}).update(artifacts.describe_files(folder, [json_name, sql_name]))
    entry: dict[str, Any] = {
        "image_id": image_id,
        "json": json_name,
        "sql": sql_name,
        "sql_sha256": sha256_text(sql),
        "head": revisions[-1].revision if revisions else None,
        "revisions": [{k: v for k, v in r.as_dict().items() if k != "sql"} for r in revisions],
        "dialect": "postgresql",
        "note": SQLITE_NOTE,
    }
    manifest.setdefault(MANIFEST_KEY, {})[image] = entry
    return entry


def drop_preview(folder: Path, manifest: dict[str, Any], image: str) -> None:
    """Forget an image's preview (it no longer declares ``migrate``)."""
    entry = manifest.get(MANIFEST_KEY, {}).pop(image, None)
    if not entry:
        return
    for name in (entry.get("json"), entry.get("sql")):
        if name:
            manifest.get("files", {}).pop(name, None)
            (folder / name).unlink(missing_ok=True)


def release_migrations(dist_dir: Path, version: str) -> dict[str, list[dict[str, Any]]]:
    """The revisions recorded for ``dist_dir/<version>``, per image, base first: each a dict
    with revision, down_revision, kind, message and sql. Images without migrations are absent;
    a preview whose bytes differ from the manifest is refused."""
    folder = dist_dir / version
    manifest = artifacts.read_manifest(folder)
    artifacts.check_seal(folder)
    found: dict[str, list[dict[str, Any]]] = {}
    for image, entry in sorted(dict(manifest.get(MANIFEST_KEY) or {}).items()):
        name = str(entry.get("json", ""))
        recorded = (manifest.get("files") or {}).get(name, {})
        path = folder / name
        if not name or not path.is_file() or artifacts.sha256_file(path) != recorded.get("sha256"):
            raise ArtifactError(
                f"{path}: the migration preview of {image} is missing or differs from the "
                f"manifest — rebuild the images (`nox -s image`)"
            )
        revisions = parse(path.read_text(encoding="utf-8"), where=str(path))
        found[image] = [r.as_dict() for r in revisions]
    return found


def sql_digests(manifest: Mapping[str, Any], image_ids: Mapping[str, str]) -> dict[str, str]:
    """sha256 of each image's migration SQL, for the images (name → image ID) given, taken
    only from previews rendered from exactly that image ID."""
    recorded = manifest.get(MANIFEST_KEY) or {}
    return {
        image: str(recorded[image]["sql_sha256"])
        for image, image_id in sorted(image_ids.items())
        if isinstance(recorded.get(image), dict)
        and recorded[image].get("image_id") == image_id
        and recorded[image].get("sql_sha256")
    }


# --- command line ----------------------------------------------------------------------------


def cmd_lint(args: argparse.Namespace) -> int:
    from conveyor import config as config_mod  # noqa: PLC0415
    from conveyor.console import console  # noqa: PLC0415

    cfg = config_mod.load(Path(args.config) if args.config else None)
    lint_images(cfg, since=args.since, say=console.say)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``migrations-lint`` to conveyor's CLI."""
    parser = sub.add_parser(
        "migrations-lint",
        help="Lint every image's migration SQL (expand/contract, one head).",
        description="Render each image's migrations offline (`<migrate> sql --json`, "
        "PostgreSQL) and fail on a destructive revision not marked contract, more than one "
        "head, or an expand revision after a contract revision.",
    )
    parser.add_argument(
        "--since",
        metavar="REVISION",
        help="the last released head: order is checked over the revisions after it only "
        "(default: the whole history)",
    )
    parser.set_defaults(handler=cmd_lint)
