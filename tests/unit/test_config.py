"""deploy.toml is validated on load, with errors that name the key path and a suggestion."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from conveyor import config
from conveyor.errors import ConfigError, UsageError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data() -> dict[str, Any]:
    return tomllib.loads((ROOT / "deploy.toml").read_text())


def parse(data: dict[str, Any]) -> config.Config:
    return config.parse(data, Path("deploy.toml"))


def test_the_shipped_file_is_valid_and_staging_runs_locally(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = config.load(ROOT / "deploy.toml")
    staging = cfg.environment("staging")
    monkeypatch.delenv("CONVEYOR_STAGING_DOCKER_HOST", raising=False)
    assert staging.hosts[0].endpoint() is None, "without the CI secret: the local engine"
    assert staging.hosts[0].reaches_directly()
    monkeypatch.setenv("CONVEYOR_STAGING_DOCKER_HOST", "ssh://deploy@staging.example")
    assert staging.hosts[0].endpoint() == "ssh://deploy@staging.example"
    assert not staging.hosts[0].reaches_directly()
    assert set(staging.services) == {"api", "web"}
    assert staging.services["api"].ports == {"blue": 8101, "green": 8102}
    assert staging.router.bind == "127.0.0.1"
    assert cfg.environment("production").approval.required


def test_unknown_environment_suggests_the_close_one(data: dict[str, Any]) -> None:
    with pytest.raises(UsageError, match=r"unknown environment 'stagin'.*did you mean 'staging'"):
        parse(data).environment("stagin")


def test_a_misspelt_key_names_its_path_and_the_fix(data: dict[str, Any]) -> None:
    data["environments"]["staging"]["services"]["api"]["helth"] = {}
    with pytest.raises(ConfigError) as info:
        parse(data)
    message = str(info.value)
    assert message.startswith("deploy.toml [environments.staging.services.api.helth]: unknown key")
    assert "did you mean 'health'" in message


def test_a_wrong_value_lists_what_is_allowed(data: dict[str, Any]) -> None:
    data["artifacts"]["store"] = "s3"
    with pytest.raises(
        ConfigError, match=r"\[artifacts.store\]: 's3' is not allowed \(allowed: local, registry\)"
    ):
        parse(data)


def test_wrong_types_and_ranges_are_caught(data: dict[str, Any]) -> None:
    bad = copy.deepcopy(data)
    bad["environments"]["staging"]["timeouts"]["ready"] = "soon"
    with pytest.raises(ConfigError, match=r"timeouts.ready\]: expected a number, got str"):
        parse(bad)
    bad = copy.deepcopy(data)
    bad["environments"]["staging"]["keep_releases"] = 0
    with pytest.raises(ConfigError, match=r"keep_releases\]: must be at least 1"):
        parse(bad)


def test_port_clashes_are_refused_before_deploy(data: dict[str, Any]) -> None:
    data["environments"]["staging"]["services"]["web"]["ports"]["green"] = 8080
    with pytest.raises(ConfigError, match=r"port 8080 is also used by router.port"):
        parse(data)


def test_a_literal_secret_is_refused_without_echoing_it(data: dict[str, Any]) -> None:
    data["environments"]["staging"]["services"]["api"]["secrets"] = {"TOKEN": "hunter2-literal"}
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert "env:VARIABLE" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_secret_references_resolve_from_env_and_files(
    data: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = tmp_path / "key"
    secret_file.write_text("from-file\n")
    data["environments"]["staging"]["services"]["api"]["secrets"] = {
        "A": "env:CONVEYOR_TEST_SECRET",
        "B": f"file:{secret_file}",
    }
    refs = {r.name: r for r in parse(data).environment("staging").services["api"].secrets}
    monkeypatch.setenv("CONVEYOR_TEST_SECRET", "from-env")
    assert refs["A"].resolve() == "from-env"
    assert refs["B"].resolve() == "from-file"
    monkeypatch.delenv("CONVEYOR_TEST_SECRET")
    with pytest.raises(ConfigError, match="CONVEYOR_TEST_SECRET is not set"):
        refs["A"].resolve()


def test_host_endpoints_from_the_environment(
    data: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    host = parse(data).environment("production").hosts[0]
    monkeypatch.delenv("CONVEYOR_PRODUCTION_DOCKER_HOST", raising=False)
    with pytest.raises(ConfigError, match="CONVEYOR_PRODUCTION_DOCKER_HOST"):
        host.endpoint()
    monkeypatch.setenv("CONVEYOR_PRODUCTION_DOCKER_HOST", "ssh://deploy@prod1")
    assert host.endpoint() == "ssh://deploy@prod1"


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deploy.toml"
    path.write_text("[environments\n")
    with pytest.raises(ConfigError, match=r"deploy.toml: not valid TOML"):
        config.load(path)
