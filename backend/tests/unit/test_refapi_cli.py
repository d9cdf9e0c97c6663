"""`python -m refapi` paths that end before uvicorn starts, run in-process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from refapi.__main__ import main
from refapi.migrations import current_revision, head_revision


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_migrate_brings_the_database_to_head(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)

    assert main(["migrate"]) == 0

    expected = f"refapi: {sqlite_url} is at revision {head_revision()}"
    assert one_line(capsys.readouterr().err) == expected
    engine = create_engine(sqlite_url)
    with engine.connect() as connection:
        assert current_revision(connection) == head_revision()
    engine.dispose()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PORT", "abc", "refapi: PORT='abc' is not a port number; expected an integer 1-65535"),
        ("MIGRATE_ON_START", "perhaps", "refapi: MIGRATE_ON_START='perhaps' is not a flag"),
        ("REFAPI_FAULT", "explode", "refapi: REFAPI_FAULT='explode' is not a known fault"),
    ],
)
def test_bad_configuration_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(variable, value)

    assert main([]) == 2

    assert one_line(capsys.readouterr().err).startswith(message)


def test_postgres_without_its_driver_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if refapi[postgres] were not installed
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:s3cret@127.0.0.1:1/notes")

    assert main(["migrate"]) == 2

    line = one_line(capsys.readouterr().err)
    assert line == (
        "refapi: DATABASE_URL needs the psycopg driver, which is not installed; "
        "install refapi[postgres]"
    )


def test_unexpected_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--reload"]) == 2

    assert one_line(capsys.readouterr().err).startswith(
        "refapi: unexpected arguments 'serve --reload'; usage: refapi [serve | migrate"
    )


def test_a_failed_migration_exits_1_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'missing' / 'refapi.db'}")

    assert main([]) == 1

    assert one_line(capsys.readouterr().err).startswith("refapi: cannot migrate sqlite:///")


def test_fault_crash_exits_3_before_touching_the_database(
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("REFAPI_FAULT", "crash")

    assert main([]) == 3

    assert one_line(capsys.readouterr().err) == "refapi: fault injected: crash"
    assert list(tmp_path.iterdir()) == []


def test_warm_loads_what_serving_needs_without_listening() -> None:
    import subprocess
    import sys

    probe = (
        "import sys; from refapi.__main__ import main; rc = main(['warm']); "
        "print(rc, 'uvicorn.protocols.http.h11_impl' in sys.modules, "
        "'alembic.runtime.migration' in sys.modules, 'refapi.app' in sys.modules, "
        "'openfeature.contrib.tools.flagd.core.targeting.custom_ops' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["0", "True", "True", "True", "True"], result.stderr
