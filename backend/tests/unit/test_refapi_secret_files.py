"""NAME_FILE: a setting read from a secret file, waited for when it is not there yet."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from refapi.__main__ import main
from refapi.errors import ConfigError
from refapi.settings import Settings, read_secret_file

IN_FILE = "s3cret-from-file"
URL = f"postgresql://app:{IN_FILE}@db:5432/notes"


def test_a_file_variable_wins_over_the_plain_one(tmp_path: Path) -> None:
    secret = tmp_path / "DATABASE_URL"
    secret.write_text(URL + "\n")
    settings = Settings.from_env(
        {"DATABASE_URL": "sqlite:////data/refapi.db", "DATABASE_URL_FILE": str(secret)}
    )
    assert settings.database_url.password == IN_FILE
    assert settings.database_url.host == "db"


def test_a_file_that_appears_after_start_is_waited_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "DATABASE_URL"
    later = threading.Timer(0.3, lambda: secret.write_text(URL))
    later.start()
    began = time.monotonic()
    settings = Settings.from_env({"DATABASE_URL_FILE": str(secret), "SECRET_FILE_WAIT": "10"})
    assert 0.25 <= time.monotonic() - began < 5
    assert settings.database_url.password == IN_FILE
    assert capsys.readouterr().err == f"refapi: waiting for DATABASE_URL_FILE={secret}\n"


def test_a_file_caught_between_its_creation_and_its_write_is_waited_for(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "DATABASE_URL"
    created = threading.Timer(0.2, secret.touch)
    written = threading.Timer(0.6, lambda: secret.write_text(URL))
    created.start()
    written.start()
    settings = Settings.from_env({"DATABASE_URL_FILE": str(secret), "SECRET_FILE_WAIT": "10"})
    assert settings.database_url.password == IN_FILE


def test_a_file_that_never_comes_ends_in_one_line_without_a_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL_FILE", str(tmp_path / "missing"))
    monkeypatch.setenv("SECRET_FILE_WAIT", "0.2")
    assert main(["migrate"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("refapi: DATABASE_URL_FILE=") and "after waiting 0.2 s" in last


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "is empty"), (b"\xff\xfe", "cannot read it (not UTF-8 text)")],
)
def test_an_empty_or_garbled_file_is_refused(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    secret = tmp_path / "TOKEN"
    if isinstance(content, bytes):
        secret.write_bytes(content)
    else:
        secret.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_secret_file("TOKEN_FILE", str(secret), wait=0)


def test_a_bad_wait_is_refused() -> None:
    with pytest.raises(ConfigError, match="SECRET_FILE_WAIT='soon'"):
        Settings.from_env({"SECRET_FILE_WAIT": "soon"})


def test_the_value_never_appears_in_an_error(tmp_path: Path) -> None:
    secret = tmp_path / "DATABASE_URL"
    secret.write_text("not-a-url-but-s3cret")
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"DATABASE_URL_FILE": str(secret)})
    assert "s3cret" not in str(info.value)
