"""The migration lint on planted SQL, with the real squawk: destructive revisions must be
contract, history has one head, and contracts only trail within a release."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from conveyor import migrationsql, tools
from conveyor.config import Config
from conveyor.migrationsql import CONTRACT, EXPAND, Revision

SQUAWK = tools.require("squawk", "the test group installs squawk-cli")

CREATE_NOTES = """CREATE TABLE notes (
    id SERIAL NOT NULL,
    text VARCHAR(1000) NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (id)
);

CREATE INDEX ix_notes_created_at ON notes (created_at);

INSERT INTO alembic_version (version_num) VALUES ('r1') RETURNING alembic_version.version_num;
"""
ADD_TITLE = "ALTER TABLE notes ADD COLUMN title VARCHAR(200);\n"
DROP_TEXT = "ALTER TABLE notes DROP COLUMN text;\n"


def rev(revision: str, down: str | None, sql: str, kind: str = EXPAND) -> Revision:
    return Revision(revision, (down,) if down else (), kind, f"planted {revision}", sql)


def lint(*revisions: Revision, since: str | None = None) -> migrationsql.LintReport:
    return migrationsql.lint(list(revisions), squawk=SQUAWK, since=since)


def test_a_plain_history_of_additive_revisions_passes_without_warnings() -> None:
    report = lint(rev("r1", None, CREATE_NOTES), rev("r2", "r1", ADD_TITLE))
    assert report.problems == []
    assert report.warnings == []  # timeouts, concurrent index and type taste are switched off
    assert any("SQLite" in note and "differs" in note for note in report.notes)


def test_a_drop_column_in_an_expand_revision_fails_in_one_line_naming_squawks_rule() -> None:
    report = lint(rev("r1", None, CREATE_NOTES), rev("r2", "r1", DROP_TEXT))
    assert len(report.problems) == 1
    line = report.problems[0]
    assert line.startswith("revision r2 (expand, 'planted r2') drops a column")
    assert "ALTER TABLE notes DROP COLUMN text;" in line
    assert "[squawk ban-drop-column]" in line
    assert 'kind = "contract"' in line
    assert "\n" not in line


def test_the_same_drop_marked_contract_passes() -> None:
    report = lint(rev("r1", None, CREATE_NOTES), rev("r2", "r1", DROP_TEXT, CONTRACT))
    assert report.problems == []


@pytest.mark.parametrize(
    ("sql", "what", "rule"),
    [
        ("DROP TABLE notes;", migrationsql.DROPS_TABLE, "ban-drop-table"),
        ("ALTER TABLE notes RENAME COLUMN text TO body;", migrationsql.RENAMES_COLUMN,
         "renaming-column"),
        ("ALTER TABLE notes RENAME TO memos;", migrationsql.RENAMES_TABLE, "renaming-table"),
        ("ALTER TABLE notes ALTER COLUMN text TYPE VARCHAR(10);", migrationsql.CHANGES_TYPE,
         "changing-column-type"),
        ("ALTER TABLE notes ALTER COLUMN text SET NOT NULL;", migrationsql.SETS_NOT_NULL,
         "adding-not-nullable-field"),
        ("ALTER TABLE notes ADD COLUMN owner BIGINT NOT NULL;", migrationsql.ADDS_REQUIRED,
         "adding-required-field"),
    ],
)  # fmt: skip
def test_every_destructive_change_is_caught_by_squawk_and_by_conveyor(
    sql: str, what: str, rule: str
) -> None:
    report = lint(rev("r1", None, CREATE_NOTES), rev("r2", "r1", sql + "\n"))
    assert len(report.problems) == 1, report.problems
    assert f" {what} but is not marked contract" in report.problems[0]
    assert f"[squawk {rule}]" in report.problems[0]


def test_conveyors_own_checks_catch_what_squawk_lets_through() -> None:
    report = lint(rev("r1", None, CREATE_NOTES), rev("r2", "r1", "TRUNCATE notes;\n"))
    assert len(report.problems) == 1
    assert migrationsql.EMPTIES_TABLE in report.problems[0]
    assert report.problems[0].count("[conveyor]") == 1


def test_additive_forms_of_the_same_changes_pass() -> None:
    sql = (
        "ALTER TABLE notes ADD COLUMN owner BIGINT DEFAULT 0 NOT NULL;\n"
        "ALTER TABLE notes ALTER COLUMN text DROP NOT NULL;\n"
        "CREATE TABLE tags (id BIGINT NOT NULL);\n"
        "ALTER TABLE tags ADD COLUMN name TEXT NOT NULL;\n"  # a new table: no rows, no readers
        "ALTER TABLE notes DROP CONSTRAINT notes_text_check;\n"
    )
    report = lint(rev("r1", None, CREATE_NOTES), rev("r2", "r1", sql))
    assert report.problems == []


def test_an_expand_revision_after_a_contract_revision_fails() -> None:
    history = (
        rev("r1", None, CREATE_NOTES),
        rev("r2", "r1", DROP_TEXT, CONTRACT),
        rev("r3", "r2", ADD_TITLE),
    )
    report = lint(*history)
    assert len(report.problems) == 1
    assert report.problems[0].startswith(
        "revision r3 (expand, 'planted r3') follows contract revision r2 in one release"
    )
    # r2 shipped in an earlier release: r3 opens the next one, which is allowed.
    assert lint(*history, since="r2").problems == []


def test_two_heads_fail() -> None:
    report = lint(
        rev("r1", None, CREATE_NOTES), rev("r2", "r1", ADD_TITLE), rev("r3", "r1", ADD_TITLE)
    )
    assert report.problems == [
        "2 heads (r2, r3): history must be linear — merge them (`alembic merge`) or rebase "
        "one branch onto the other"
    ]


def test_a_merge_revision_leaves_one_head() -> None:
    merge = Revision("r4", ("r2", "r3"), EXPAND, "merge", "")
    report = lint(
        rev("r1", None, CREATE_NOTES), rev("r2", "r1", ADD_TITLE), rev("r3", "r1", ""), merge
    )
    assert report.problems == []


def test_statements_keep_their_lines_and_ignore_semicolons_in_strings_and_comments() -> None:
    sql = "-- a; comment\nINSERT INTO t VALUES ('a;b');\n\nCREATE FUNCTION f() AS $$ x; $$;\n"
    found = migrationsql.statements(sql)
    assert [(s.first_line, s.text) for s in found] == [
        (1, "INSERT INTO t VALUES ('a;b');"),
        (3, "CREATE FUNCTION f() AS $$ x; $$;"),
    ]


def test_the_protocol_output_is_parsed_and_refused_when_malformed() -> None:
    text = json.dumps(
        {
            "dialect": "postgresql",
            "revisions": [
                {"revision": "r1", "down_revision": None, "kind": "expand", "message": "m",
                 "sql": "SELECT 1;"},
                {"revision": "r2", "down_revision": ["r1"], "message": "", "sql": ""},
            ],
        }
    )  # fmt: skip
    revisions = migrationsql.parse(text, where="test")
    assert [(r.revision, r.down_revisions, r.kind) for r in revisions] == [
        ("r1", (), EXPAND),
        ("r2", ("r1",), EXPAND),  # kind defaults to expand
    ]
    with pytest.raises(migrationsql.MigrationSqlError, match="not JSON"):
        migrationsql.parse("Traceback …", where="test")
    bad_kind = json.dumps({"revisions": [{"revision": "r1", "kind": "destroy"}]})
    with pytest.raises(migrationsql.MigrationSqlError, match="kind 'destroy'"):
        migrationsql.parse(bad_kind, where="test")


def planted_app(tmp_path: Path, revisions: list[dict[str, Any]]) -> Config:
    """A config whose one image's migration command prints ``revisions`` (a real process)."""
    script = tmp_path / "migrate.py"
    output = json.dumps({"dialect": "postgresql", "revisions": revisions})
    script.write_text(
        "import sys\n"
        "assert sys.argv[1:] == ['migrate', 'sql', '--json'], sys.argv\n"
        f"print({output!r})\n"
    )
    spec = SimpleNamespace(name="api", migrate=f"{sys.executable} {script} migrate")
    web = SimpleNamespace(name="web", migrate="")
    config = SimpleNamespace(
        images={"api": spec, "web": web}, path=tmp_path / "deploy.toml", root=tmp_path
    )
    return cast("Config", config)


def test_the_command_runs_each_images_migrate_and_fails_with_one_line_per_problem(
    tmp_path: Path,
) -> None:
    config = planted_app(
        tmp_path,
        [
            {"revision": "r1", "down_revision": None, "kind": "expand", "message": "notes",
             "sql": CREATE_NOTES},
            {"revision": "r2", "down_revision": "r1", "kind": "expand", "message": "drop text",
             "sql": DROP_TEXT},
        ],
    )  # fmt: skip
    said: list[str] = []
    with pytest.raises(migrationsql.MigrationLintFailed, match="1 problem"):
        migrationsql.lint_images(config, say=said.append)
    errors = [line for line in said if ": error: " in line]
    assert errors == [
        "api: error: revision r2 (expand, 'drop text') drops a column but is not marked "
        "contract — ALTER TABLE notes DROP COLUMN text; [squawk ban-drop-column] — make it "
        'additive, or set kind = "contract" in the revision (it then runs after the verify '
        "window)"
    ]
    assert any("SQLite" in line for line in said)


def test_the_command_passes_a_clean_history(tmp_path: Path) -> None:
    config = planted_app(
        tmp_path,
        [{"revision": "r1", "down_revision": None, "kind": "expand", "message": "notes",
          "sql": CREATE_NOTES}],
    )  # fmt: skip
    said: list[str] = []
    migrationsql.lint_images(config, say=said.append)
    assert said[-1] == "migration lint: passed"
