from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from refapi.errors import ConfigError
from refapi.settings import Fault, Settings


def test_defaults_when_nothing_is_set() -> None:
    settings = Settings.from_env({})

    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.database_url.render_as_string() == "sqlite:///./refapi.db"
    assert settings.version == metadata.version("refapi")
    assert settings.commit == "unknown"
    assert settings.migrate_on_start is True
    assert settings.access_log is False
    assert settings.fault == Fault("none")
    assert settings.flags_file is None


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "HOST": "127.0.0.2",
            "PORT": "9001",
            "DATABASE_URL": "sqlite:////data/api.db",
            "APP_VERSION": "2.0.0",
            "GIT_COMMIT": "deadbeef",
            "MIGRATE_ON_START": "0",
            "ACCESS_LOG": "1",
            "REFAPI_FAULT": "not-ready",
            "FLAGS_FILE": "/flags/api.json",
        }
    )

    assert (settings.host, settings.port) == ("127.0.0.2", 9001)
    assert settings.database_url.database == "/data/api.db"
    assert (settings.version, settings.commit) == ("2.0.0", "deadbeef")
    assert settings.migrate_on_start is False
    assert settings.access_log is True
    assert settings.fault == Fault("not-ready")
    assert settings.flags_file == Path("/flags/api.json")


def test_empty_variables_fall_back_to_defaults() -> None:
    settings = Settings.from_env(
        {"PORT": "", "APP_VERSION": "", "GIT_COMMIT": " ", "FLAGS_FILE": " "}
    )

    assert settings.port == 8000
    assert settings.version == metadata.version("refapi")
    assert settings.commit == "unknown"
    assert settings.flags_file is None


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_postgres_urls_use_the_psycopg_driver(scheme: str) -> None:
    url = Settings.from_env({"DATABASE_URL": f"{scheme}://app:s3cret@db:5432/notes"}).database_url

    assert url.drivername == "postgresql+psycopg"
    assert (url.username, url.password, url.host, url.port) == ("app", "s3cret", "db", 5432)
    assert url.database == "notes"


@pytest.mark.parametrize("port", ["abc", "0", "65536", "-1", "80.5", "8o80"])
def test_a_bad_port_is_rejected_by_name(port: str) -> None:
    with pytest.raises(ConfigError, match=rf"^PORT='{port}' is not a port number"):
        Settings.from_env({"PORT": port})


def test_an_unparseable_database_url_is_rejected_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL is not a database URL") as caught:
        Settings.from_env({"DATABASE_URL": "not a url :secret"})

    assert "secret" not in str(caught.value)


def test_an_unsupported_database_is_rejected_without_leaking_the_password() -> None:
    with pytest.raises(ConfigError, match="'mysql'; refapi supports sqlite and postgresql") as e:
        Settings.from_env({"DATABASE_URL": "mysql://app:s3cret@db/notes"})

    assert "s3cret" not in str(e.value)


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("true", True), ("0", False)])
def test_flags(raw: str, expected: bool) -> None:
    assert Settings.from_env({"MIGRATE_ON_START": raw}).migrate_on_start is expected


def test_a_bad_flag_is_rejected_by_name() -> None:
    with pytest.raises(ConfigError, match=r"^ACCESS_LOG='maybe' is not a flag"):
        Settings.from_env({"ACCESS_LOG": "maybe"})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("none", Fault("none")),
        ("not-ready", Fault("not-ready")),
        ("crash", Fault("crash")),
        ("fail-after-ready=5", Fault("fail-after-ready", 5.0)),
        ("fail-after-ready=0.5", Fault("fail-after-ready", 0.5)),
        ("fail-ratio=0.2", Fault("fail-ratio", 0.2)),
        ("fail-ratio=1", Fault("fail-ratio", 1.0)),
        (" fail-ratio=.05 ", Fault("fail-ratio", 0.05)),
        ("slow=200", Fault("slow", 200.0)),
        ("slow=0.5", Fault("slow", 0.5)),
        ("slow=60000", Fault("slow", 60000.0)),
        ("flag-on-fails", Fault("flag-on-fails")),
    ],
)
def test_faults_parse(raw: str, expected: Fault) -> None:
    assert Fault.parse(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("boom", r"^REFAPI_FAULT='boom' is not a known fault; expected none, not-ready"),
        ("not_ready", r"is not a known fault \(did you mean 'not-ready'\?\)"),
        ("crash=1", r"is not a known fault \(did you mean 'crash'\?\)"),
        ("fail-after-ready", r"needs a delay: fail-after-ready=N"),
        ("fail-after-ready=", r"N must be a number of seconds >= 0"),
        ("fail-after-ready=-1", r"N must be a number of seconds >= 0"),
        ("fail-after-ready=soon", r"N must be a number of seconds >= 0"),
        ("fail-after-ready=nan", r"N must be a number of seconds >= 0"),
        ("fail_ratio=0.2", r"is not a known fault \(did you mean 'fail-ratio'\?\)"),
        ("fail-ratio", r"needs a share: fail-ratio=R \(of ordinary requests\)"),
        ("fail-ratio=", r"R must be a number in \(0, 1\], e.g. fail-ratio=0.2$"),
        ("fail-ratio=0", r"R must be a number in \(0, 1\]"),
        ("fail-ratio=-0.1", r"R must be a number in \(0, 1\]"),
        ("fail-ratio=1.01", r"R must be a number in \(0, 1\]"),
        ("fail-ratio=20%", r"R must be a number in \(0, 1\]"),
        ("fail-ratio=nan", r"R must be a number in \(0, 1\]"),
        ("slow", r"needs a delay: slow=MS \(milliseconds\)"),
        ("slow=0", r"MS must be a number of milliseconds in \(0, 60000\], e.g. slow=500$"),
        ("slow=-5", r"MS must be a number of milliseconds in \(0, 60000\]"),
        ("slow=60001", r"MS must be a number of milliseconds in \(0, 60000\]"),
        ("slow=200ms", r"MS must be a number of milliseconds in \(0, 60000\]"),
        ("slow=inf", r"MS must be a number of milliseconds in \(0, 60000\]"),
        ("flag-on-fails=1", r"is not a known fault \(did you mean 'flag-on-fails'\?\)"),
        ("flag-on-fail", r"is not a known fault \(did you mean 'flag-on-fails'\?\)"),
    ],
)
def test_bad_faults_are_rejected(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Fault.parse(raw)


def test_a_bad_fault_value_is_one_line_naming_the_variable_rule_and_example() -> None:
    with pytest.raises(ConfigError) as caught:
        Fault.parse("fail-ratio=2")

    assert str(caught.value) == (
        "REFAPI_FAULT='fail-ratio=2': R must be a number in (0, 1], e.g. fail-ratio=0.2"
    )


def test_an_unknown_fault_lists_every_fault_with_its_value() -> None:
    with pytest.raises(ConfigError) as caught:
        Fault.parse("boom")

    assert str(caught.value).endswith(
        "expected none, not-ready, crash, fail-after-ready=N, fail-ratio=R, slow=MS "
        "or flag-on-fails"
    )
