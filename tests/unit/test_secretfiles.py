"""Secrets declared as files: how deploy.toml says so, and what the container is given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conveyor import config, secretfiles
from conveyor.errors import ConfigError
from conveyor.hosts import HostTarget
from conveyor.router import Ports

ROOT = Path(__file__).resolve().parents[2]


def api_with(data: dict[str, Any], secrets: dict[str, Any], **extra: Any) -> config.Service:
    api = data["environments"]["staging"]["services"]["api"]
    api["secrets"] = secrets
    api.update(extra)
    return config.parse(data, Path("deploy.toml")).environment("staging").services["api"]


def refused(data: dict[str, Any], secrets: dict[str, Any], **extra: Any) -> str:
    with pytest.raises(ConfigError) as info:
        api_with(data, secrets, **extra)
    return str(info.value)


def test_a_secret_is_an_env_variable_unless_declared_as_a_file(data: dict[str, Any]) -> None:
    api = api_with(
        data,
        {
            "PLAIN": "env:CONVEYOR_T_PLAIN",
            "DB_PASSWORD": {"from": "file:/etc/qa/db", "as": "file"},
            "TABLE_BUT_ENV": {"from": "env:CONVEYOR_T_X"},
        },
    )
    by_name = {s.name: s for s in api.secrets}
    assert [by_name[n].delivery for n in ("PLAIN", "DB_PASSWORD", "TABLE_BUT_ENV")] == [
        "env",
        "file",
        "env",
    ]
    assert (by_name["DB_PASSWORD"].scheme, by_name["DB_PASSWORD"].target) == ("file", "/etc/qa/db")
    assert secretfiles.environment(api) == {"DB_PASSWORD_FILE": "/run/secrets/DB_PASSWORD"}
    assert secretfiles.tmpfs(api) == {"/run/secrets": secretfiles.TMPFS_OPTIONS}


def test_mistakes_in_a_secret_table_name_the_key_path(data: dict[str, Any]) -> None:
    where = "deploy.toml [environments.staging.services.api.secrets.DB"
    message = refused(data, {"DB": {"from": "env:X", "as": "fiel"}})
    assert message.startswith(f"{where}.as]: 'fiel' is not allowed (allowed: env, file)")
    assert "did you mean 'file'?" in message
    assert "did you mean 'from'?" in refused(data, {"DB": {"frm": "env:X", "as": "file"}})
    assert refused(data, {"DB": {"as": "file"}}).startswith(f"{where}.from]: required key")
    literal = refused(data, {"DB": {"from": "hunter2-literal", "as": "file"}})
    assert literal.startswith(f"{where}.from]: must be a reference") and "hunter2" not in literal
    assert "or a table" in refused(data, {"DB": 42})


def test_a_file_secret_needs_a_file_name_and_no_twin_in_env(data: dict[str, Any]) -> None:
    assert "variable-like name" in refused(data, {"../x": {"from": "env:X", "as": "file"}})
    clash = refused(data, {"DATABASE_URL": {"from": "env:X", "as": "file"}})
    assert "also set in env.DATABASE_URL" in clash and "remove it from env" in clash


def test_the_container_gets_where_the_file_is_never_what(
    data: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_T_TOKEN", "value-as-env")
    monkeypatch.setenv("CONVEYOR_T_DB", "value-as-file")
    api = api_with(
        data,
        {
            "TOKEN": "env:CONVEYOR_T_TOKEN",
            "DB_PASSWORD": {"from": "env:CONVEYOR_T_DB", "as": "file"},
        },
    )
    env = config.parse(data, Path("deploy.toml")).environment("staging")
    target = HostTarget(host=env.hosts[0], env=env, client=None, ports=Ports.of(env, 0))
    given = target.container_env(api, "blue")
    assert (given["TOKEN"], given["DB_PASSWORD_FILE"]) == (
        "value-as-env",
        "/run/secrets/DB_PASSWORD",
    )
    assert "value-as-file" not in json.dumps(given) and "DB_PASSWORD" not in given


def test_a_service_without_file_secrets_gets_no_tmpfs(data: dict[str, Any]) -> None:
    api = api_with(data, {"TOKEN": "env:CONVEYOR_T_TOKEN"})
    assert secretfiles.tmpfs(api) == {} and secretfiles.environment(api) == {}
