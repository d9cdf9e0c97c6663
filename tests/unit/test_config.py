"""deploy.toml is validated on load, with errors that name the key path and a suggestion."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from conveyor import config
from conveyor.errors import ConfigError, UsageError

ROOT = Path(__file__).resolve().parents[2]


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


def test_production_takes_releases_from_staging_only(data: dict[str, Any]) -> None:
    cfg = parse(data)
    assert cfg.environment("production").promote_from == "staging"
    assert cfg.environment("production").gated and not cfg.environment("staging").gated

    data["environments"]["production"]["promote_from"] = "stagin"
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert str(info.value).startswith("deploy.toml [environments.production.promote_from]: ")
    assert "unknown environment 'stagin'" in str(info.value)
    assert "did you mean 'staging'" in str(info.value)
    data["environments"]["production"]["promote_from"] = "production"
    with pytest.raises(ConfigError, match=r"promote_from\]: 'production' is this environment"):
        parse(data)
    data["environments"]["production"]["promote_from"] = "staging"
    data["environments"]["production"]["promote_form"] = "staging"
    with pytest.raises(ConfigError, match=r"promote_form\]: unknown key.*did you mean"):
        parse(data)


@pytest.mark.parametrize("hours", [0, -1, 8760.5, 1e9])
def test_approvals_expire_within_a_sane_range(data: dict[str, Any], hours: float) -> None:
    data["environments"]["production"]["approval"]["expires_hours"] = hours
    with pytest.raises(ConfigError) as info:
        parse(data)
    message = str(info.value)
    assert message.startswith("deploy.toml [environments.production.approval.expires_hours]: ")
    assert "more than 0 and at most 8760" in message
    data["environments"]["production"]["approval"]["expires_hours"] = 8760
    assert parse(data).environment("production").approval.expires_hours == 8760


def test_environments_on_one_engine_may_not_share_ports(
    data: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONVEYOR_STAGING_DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    prod = data["environments"]["production"]
    prod["hosts"] = [{"name": "prod1", "docker": "local"}]
    prod["router"]["port"] = 8080
    with pytest.raises(ConfigError) as info:
        parse(data)
    message = str(info.value)
    assert "[environments.production.router.port]: port 8080" in message
    assert "[environments.staging.router.port]" in message
    assert "share one engine" in message
    # On another engine the same port is another machine's port: allowed.
    monkeypatch.setenv("CONVEYOR_STAGING_DOCKER_HOST", "ssh://deploy@staging.example")
    assert parse(data).environment("production").router.port == 8080
    # A port_offset moves one environment's whole range off the other's.
    monkeypatch.delenv("CONVEYOR_STAGING_DOCKER_HOST")
    prod["hosts"] = [{"name": "prod1", "docker": "local", "port_offset": 5}]
    prod["services"]["api"]["ports"] = {"blue": 8096, "green": 9102}
    with pytest.raises(ConfigError, match=r"services.api.ports.blue\]: port 8101 is also"):
        parse(data)


def test_unresolved_secrets_are_named_without_their_values(
    data: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    present = tmp_path / "present"
    present.write_text("s3cret-from-file\n")
    data["environments"]["staging"]["services"]["api"]["secrets"] = {
        "SET": "env:CONVEYOR_TEST_SET",
        "UNSET": "env:CONVEYOR_TEST_UNSET",
        "FILE": f"file:{present}",
        "NOFILE": f"file:{tmp_path / 'absent'}",
    }
    monkeypatch.setenv("CONVEYOR_TEST_SET", "s3cret-from-env")
    monkeypatch.delenv("CONVEYOR_TEST_UNSET", raising=False)
    env = parse(data).environment("staging")
    problems = config.unresolved_secrets(env)
    assert problems == [
        "api UNSET (env:CONVEYOR_TEST_UNSET: environment variable CONVEYOR_TEST_UNSET is not set)",
        f"api NOFILE (file:{tmp_path / 'absent'}: cannot read {tmp_path / 'absent'} "
        "(No such file or directory))",
    ]
    with pytest.raises(ConfigError) as info:
        config.require_secrets(env)
    assert "UNSET" in str(info.value) and "NOFILE" in str(info.value)
    assert "s3cret" not in str(info.value)
    monkeypatch.setenv("CONVEYOR_TEST_UNSET", "x")
    (tmp_path / "absent").write_text("y")
    config.require_secrets(env)


@pytest.mark.parametrize(
    ("written", "seconds"), [(0, 0.0), (45, 45.0), ("90s", 90.0), ("10m", 600.0), ("2h", 7200.0)]
)
def test_keep_warm_is_seconds_or_a_duration(
    data: dict[str, Any], written: object, seconds: float
) -> None:
    data["environments"]["staging"]["keep_warm"] = written
    assert parse(data).environment("staging").keep_warm == seconds


@pytest.mark.parametrize("written", ["soon", "-5m", -1, True])
def test_a_bad_keep_warm_says_how_to_write_it(data: dict[str, Any], written: object) -> None:
    data["environments"]["staging"]["keep_warm"] = written
    with pytest.raises(ConfigError, match=r"keep_warm\]: expected seconds"):
        parse(data)


def test_the_shipped_file_keeps_the_previous_release_warm() -> None:
    cfg = config.load(ROOT / "deploy.toml")
    assert cfg.environment("staging").keep_warm == 600.0
    assert cfg.environment("production").keep_warm == 1800.0


def test_an_environment_runs_on_docker_hosts_unless_it_names_swarm(data: dict[str, Any]) -> None:
    assert parse(data).environment("staging").engine == "docker"
    data["environments"]["staging"]["engine"] = "swarm"
    assert parse(data).environment("staging").engine == "swarm"
    data["environments"]["staging"]["engine"] = "kubernetes"
    with pytest.raises(
        ConfigError,
        match=r"\[environments.staging.engine\]: 'kubernetes' is not allowed "
        r"\(allowed: docker, swarm\)",
    ):
        parse(data)


def test_a_swarm_node_may_not_shift_its_ports(data: dict[str, Any]) -> None:
    staging = data["environments"]["staging"]
    staging["engine"] = "swarm"
    staging["services"]["api"]["migrations"] = {"backup": "none"}  # SQLite: one per node
    staging["hosts"] = [
        {"name": "n1", "docker": "ssh://n1.example"},
        {"name": "n2", "docker": "ssh://n2.example", "port_offset": 100},
    ]
    with pytest.raises(ConfigError) as info:
        parse(data)
    message = str(info.value)
    assert "[environments.staging.hosts[1].port_offset]" in message
    assert "same ports" in message
    staging["hosts"][1].pop("port_offset")
    assert [h.name for h in parse(data).environment("staging").hosts] == ["n1", "n2"]


def test_a_swarm_places_its_tasks_by_constraints_swarm_reads(data: dict[str, Any]) -> None:
    staging = data["environments"]["staging"]
    staging["placement"] = ["node.labels.tier == web"]
    with pytest.raises(
        ConfigError, match=r"\[environments.staging.placement\]: .*engine = \"swarm\""
    ):
        parse(data)
    staging["engine"] = "swarm"
    staging["placement"] = ["node.role == manager", "node.labels.tier != batch"]
    assert parse(data).environment("staging").placement == (
        "node.role == manager",
        "node.labels.tier != batch",
    )
    staging["placement"] = ["node.role == manager", "node.labels.tier"]
    with pytest.raises(
        ConfigError, match=r"placement\[1\]\]: 'node.labels.tier' is not a constraint"
    ):
        parse(data)
    staging["placement"] = ["node.rack == a"]
    with pytest.raises(ConfigError, match=r"'node.rack' is not an attribute Swarm places by"):
        parse(data)
    staging["placement"] = "node.role == manager"
    with pytest.raises(ConfigError, match=r"expected an array of strings"):
        parse(data)


def test_a_swarm_reaches_the_nodes_hosts_does_not_list_by_their_address(
    data: dict[str, Any],
) -> None:
    staging = data["environments"]["staging"]
    staging["other_nodes"] = {"docker": "ssh://deploy@{address}"}
    with pytest.raises(ConfigError, match=r"other_nodes\]: is for a swarm"):
        parse(data)
    staging["engine"] = "swarm"
    staging["services"]["api"]["migrations"] = {"backup": "none"}
    other = parse(data).environment("staging").other_nodes
    assert other is not None
    assert (other.docker, other.access) == ("ssh://deploy@{address}", "auto")
    staging["other_nodes"] = {"docker": "unix:///run/nodes/{address}.sock", "access": "exec"}
    assert parse(data).environment("staging").other_nodes.access == "exec"  # type: ignore[union-attr]
    for docker, says in (
        ("ssh://deploy@worker1", "must name the node's address as {address}"),
        ("ssh://deploy@{addr}", "must name the node's address as {address}"),
        ("ssh://deploy@{address}:{port}", "nothing else in braces"),
        ("ssh://deploy@{address", "must name the node's address"),
        ("env:NODE_{address}", "expected 'unix://"),
    ):
        staging["other_nodes"] = {"docker": docker}
        with pytest.raises(ConfigError, match=re.escape(says)):
            parse(data)
    staging["other_nodes"] = {"docker": "ssh://deploy@{address}", "name": "x"}
    with pytest.raises(ConfigError, match=r"other_nodes.*name"):
        parse(data)
