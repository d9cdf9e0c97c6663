"""The canary strategy outside the executor: deploy.toml's keys, the router config and its
runtime-API commands, the planner's choice of strategy, and observe's reading of a split."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests.unit import test_config
from tests.unit.test_analysis import server, show_stat
from tests.unit.test_plan import STAGING, container, deployed, ports, release, state

from conveyor import analysis, config, router
from conveyor.errors import ConfigError
from conveyor.observe import EnvironmentState, HostState, observe_host
from conveyor.plan import plan_move

CANARY = dataclasses.replace(STAGING, strategy="canary")
STICKY = dataclasses.replace(CANARY, canary=config.Canary(sticky=True))

# The shipped deploy.toml's parser (its document is the shared fixture ``data``).
parse = test_config.parse


# --- deploy.toml ---------------------------------------------------------------------------


def test_strategy_defaults_to_blue_green_with_default_canary_and_analysis(
    data: dict[str, Any],
) -> None:
    for key in ("strategy", "canary"):
        data["environments"]["staging"].pop(key, None)
    staging = parse(data).environment("staging")
    assert staging.strategy == "blue-green"
    assert staging.canary == config.Canary(steps=(5, 25, 50, 100), interval=30.0)
    assert staging.analysis == config.Analysis()
    assert (staging.analysis.min_requests, staging.analysis.fail_fast_p) == (50, 0.001)


def test_a_canary_environment_reads_its_steps(data: dict[str, Any]) -> None:
    data["environments"]["staging"]["strategy"] = "canary"
    data["environments"]["staging"]["canary"] = {
        "steps": [10, 50, 100],
        "interval": "2m",
        "sticky": True,
        "synthetic": 5,
    }
    cfg = parse(data)
    staging = cfg.environment("staging")
    assert staging.strategy == "canary"
    assert staging.canary == config.Canary(
        steps=(10, 50, 100), interval=120.0, sticky=True, synthetic=5.0
    )


def test_the_shipped_file_rolls_production_out_as_a_canary(data: dict[str, Any]) -> None:
    cfg = parse(data)
    assert cfg.environment("staging").strategy == "blue-green"
    production = cfg.environment("production")
    assert production.strategy == "canary"
    assert production.canary == config.Canary(steps=(10, 50, 100), interval=60.0, synthetic=20.0)


def test_a_misspelt_strategy_names_its_key_and_the_fix(data: dict[str, Any]) -> None:
    data["environments"]["staging"]["strategy"] = "canery"
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert str(info.value) == (
        "deploy.toml [environments.staging.strategy]: 'canery' is not allowed "
        "(allowed: blue-green, canary) (did you mean 'canary'?)"
    )


@pytest.mark.parametrize("steps", [[5, 25, 50, 100], [1, 100], [99, 100], list(range(10, 101, 10))])
def test_rising_steps_that_end_at_100_are_accepted(data: dict[str, Any], steps: list[int]) -> None:
    data["environments"]["staging"]["canary"] = {"steps": steps}
    assert parse(data).environment("staging").canary.steps == tuple(steps)


@pytest.mark.parametrize(
    "steps",
    [
        [],
        [100],  # no step below 100: that is blue-green
        [5, 25, 50],  # never reaches 100
        [0, 50, 100],  # a step with no traffic
        [-5, 50, 100],
        [5, 50, 100, 101],
        [50, 25, 100],  # falls
        [5, 5, 100],  # stalls
        [5.0, 25, 100],  # floats
        [5, 25.5, 100],
        [True, 100],
        ["5", "100"],
        "5, 25, 100",
        50,
    ],
)
def test_bad_steps_are_one_error_naming_canary_steps(data: dict[str, Any], steps: object) -> None:
    data["environments"]["staging"]["canary"] = {"steps": steps}
    with pytest.raises(ConfigError) as info:
        parse(data)
    message = str(info.value)
    assert message.startswith("deploy.toml [environments.staging.canary.steps]: ")
    assert "rising percentages from 1 that end at 100" in message
    assert "e.g. [5, 25, 50, 100]" in message
    assert repr(steps) in message


@pytest.mark.parametrize(
    ("written", "seconds"), [(45, 45.0), (7.5, 7.5), ("30s", 30.0), ("2m", 120.0)]
)
def test_the_interval_is_seconds_or_a_duration(
    data: dict[str, Any], written: object, seconds: float
) -> None:
    data["environments"]["staging"]["canary"] = {"interval": written}
    assert parse(data).environment("staging").canary.interval == seconds


@pytest.mark.parametrize(
    ("written", "complaint"),
    [
        (0, "must be more than 0 seconds"),
        ("0s", "must be more than 0 seconds"),
        ("soon", "expected seconds"),
        (-1, "expected seconds"),
        (True, "expected seconds"),
    ],
)
def test_a_bad_interval_names_its_key(
    data: dict[str, Any], written: object, complaint: str
) -> None:
    data["environments"]["staging"]["canary"] = {"interval": written}
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert str(info.value).startswith("deploy.toml [environments.staging.canary.interval]: ")
    assert complaint in str(info.value)


def test_an_unknown_canary_key_is_refused_with_a_hint(data: dict[str, Any]) -> None:
    data["environments"]["staging"]["canary"] = {"step": [5, 100]}
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert str(info.value) == (
        "deploy.toml [environments.staging.canary.step]: unknown key "
        "(allowed: interval, steps, sticky, synthetic) (did you mean 'steps'?)"
    )
    data["environments"]["staging"]["canary"] = {"sticky": "yes"}
    with pytest.raises(ConfigError, match=r"canary.sticky\]: expected true or false"):
        parse(data)


def test_analysis_is_one_top_level_table_for_every_environment(data: dict[str, Any]) -> None:
    data["analysis"] = {"min_requests": 20, "max_latency_ratio": 2, "fail_fast_p": 0.01}
    cfg = parse(data)
    for name in ("staging", "production"):
        judged = cfg.environment(name).analysis
        assert (judged.min_requests, judged.max_latency_ratio, judged.fail_fast_p) == (
            20,
            2.0,
            0.01,
        )
        assert judged.max_error_rate_increase == config.Analysis.max_error_rate_increase


@pytest.mark.parametrize(
    ("key", "value", "complaint"),
    [
        ("fail_fast_p", 0, "[analysis.fail_fast_p]: must be between 0 and 1"),
        ("fail_fast_p", 1, "[analysis.fail_fast_p]: must be between 0 and 1"),
        ("fail_fast_p", 1.5, "[analysis.fail_fast_p]: must be between 0 and 1"),
        ("max_latency_ratio", 0.9, "[analysis.max_latency_ratio]: must be at least 1"),
        ("min_requests", 0, "[analysis.min_requests]: must be at least 1"),
        ("min_requests", 2.5, "[analysis.min_requests]: expected an integer"),
        ("fail_fast_errors", 0, "[analysis.fail_fast_errors]: must be at least 1"),
        ("max_inconclusive", -1, "[analysis.max_inconclusive]: must be at least 0"),
        ("max_error_rate_increase", -0.01, "[analysis.max_error_rate_increase]: must be at least"),
        ("sample", 0, "[analysis.sample]: must be more than 0 seconds"),
        ("min_request", 10, "[analysis.min_request]: unknown key"),
    ],
)
def test_bad_analysis_settings_name_their_key(
    data: dict[str, Any], key: str, value: object, complaint: str
) -> None:
    data["analysis"] = {key: value}
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert str(info.value).startswith(f"deploy.toml {complaint}")
    if key == "min_request":
        assert "did you mean 'min_requests'" in str(info.value)


# --- the router ----------------------------------------------------------------------------


def section(text: str, header: str) -> str:
    """The lines of one section of a rendered HAProxy config, up to the next blank line."""
    return text.split(f"\n{header}\n", 1)[1].split("\n\n", 1)[0]


def rendered(env: config.Environment, live: dict[str, str | None]) -> str:
    return router.render(env, router.Ports.of(env, 0), live)


def test_a_canary_router_logs_each_request_in_the_analysis_format() -> None:
    text = rendered(CANARY, {"api": "blue", "web": "blue"})
    assert "    log stdout format raw local0 info" in section(text, "global").split("\n")
    defaults = section(text, "defaults").split("\n")
    assert "    log global" in defaults
    assert f'    log-format "{analysis.LOG_FORMAT}"' in defaults
    assert "cookie" not in text, "sticky is off by default"
    live = section(text, "backend api_live")
    assert live.split("\n") == [
        "    server blue 127.0.0.1:8101 weight 100",
        "    server green 127.0.0.1:8102 weight 100 disabled",
    ]


def test_a_blue_green_router_writes_no_request_log() -> None:
    text = rendered(STAGING, {"api": "blue", "web": "blue"})
    assert [line for line in text.split("\n") if line.lstrip().startswith("log")] == []
    # Sticky means nothing without a canary.
    sticky_blue_green = dataclasses.replace(STAGING, canary=config.Canary(sticky=True))
    assert "cookie" not in rendered(sticky_blue_green, {"api": "blue", "web": "blue"})


def test_sticky_users_get_a_cookie_per_live_server() -> None:
    text = rendered(STICKY, {"api": "green", "web": None})
    assert section(text, "backend api_live").split("\n") == [
        f"    cookie {router.STICKY_COOKIE} insert indirect nocache",
        "    server blue 127.0.0.1:8101 weight 100 cookie blue disabled",
        "    server green 127.0.0.1:8102 weight 100 cookie green",
    ]
    assert section(text, "backend web_live").split("\n") == [
        f"    cookie {router.STICKY_COOKIE} insert indirect nocache",
        "    server blue 127.0.0.1:8201 weight 100 cookie blue disabled",
        "    server green 127.0.0.1:8202 weight 100 cookie green disabled",
    ]
    # The preview route is for smoke checks: no cookie there.
    assert "cookie" not in section(text, "backend api_preview")


def test_changing_the_strategy_changes_the_structure() -> None:
    """Logging and cookies cannot be turned on through the runtime API: a reload is due."""
    live = {"api": "blue", "web": "blue"}
    structures = {router.structure_of(rendered(e, live)) for e in (STAGING, CANARY, STICKY)}
    assert len(structures) == 3
    assert router.structure_of(rendered(CANARY, live)) == router.structure_of(
        rendered(CANARY, {"api": "green", "web": "green"})
    )


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy binary not on this machine")
@pytest.mark.parametrize("env", [CANARY, STICKY], ids=["canary", "sticky"])
@pytest.mark.parametrize("live", [{"api": None, "web": None}, {"api": "blue", "web": "green"}])
def test_haproxy_accepts_the_canary_configs(
    env: config.Environment, live: dict[str, str | None], tmp_path: Path
) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(rendered(env, live))
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


def test_a_split_sets_the_canary_weight_before_readying_it() -> None:
    assert router.split_commands(["api", "web"], "green", 5) == (
        "set weight api_live/green 5; set server api_live/green state ready; "
        "set weight api_live/blue 95; "
        "set weight web_live/green 5; set server web_live/green state ready; "
        "set weight web_live/blue 95"
    )
    assert router.split_commands(["api"], "blue", 75) == (
        "set weight api_live/blue 75; set server api_live/blue state ready; "
        "set weight api_live/green 25"
    )


@pytest.mark.parametrize("percent", [0, 100, -5, 101])
def test_a_split_is_never_all_or_nothing(percent: int) -> None:
    with pytest.raises(ValueError, match="0 < percent < 100"):
        router.split_commands(["api"], "green", percent)


# api is split 95/5, web serves blue alone (green in maintenance).
SPLIT = show_stat(
    server("api_live", "blue", weight=95, hrsp_2xx=900),
    server("api_live", "green", weight=5, hrsp_2xx=50),
    server("api_preview", "blue", status="MAINT"),
    server("api_preview", "green", status="MAINT"),
    server("web_live", "blue", weight=100, hrsp_2xx=300),
    server("web_live", "green", status="MAINT", weight=100),
    server("web_preview", "blue", status="MAINT"),
    server("web_preview", "green", status="MAINT"),
)


def test_weights_and_live_colors_are_read_back_from_show_stat() -> None:
    assert router.parse_weights(SPLIT, ["api", "web"]) == {
        "api": {"blue": 95, "green": 5},
        "web": {"blue": 100},
    }
    assert router.parse_live_colors(SPLIT, ["api", "web"]) == {"api": None, "web": "blue"}


# --- the plan ------------------------------------------------------------------------------


def blue_is_live() -> EnvironmentState:
    """r0001 serves on blue, nothing else runs."""
    observed = state(
        {"api": "blue", "web": "blue"},
        [
            container("api", "blue", "r0001", "running", "a"),
            container("web", "blue", "r0001", "running", "a"),
        ],
    )
    observed.records = [deployed("r0001", "1.0", "a", "blue")]
    return observed


def test_a_canary_deploy_plans_its_steps_for_every_host_together() -> None:
    plan = plan_move(CANARY, blue_is_live(), ports(CANARY), release("2.0", "b"), "r0002")
    assert (plan.strategy, plan.canary_steps, plan.canary_interval) == (
        "canary",
        (5, 25, 50, 100),
        30.0,
    )
    assert plan.notes == ()
    assert plan.steps() == [
        "deploy 2.0 to staging as r0002",
        "  source: dist/2.0",
        "1. take the staging lock",
        "2. [local] start conveyor-staging-api-green-r0002 from reg/api@sha256:x "
        "on 127.0.0.1:8102 (green)",
        "3. [local] start conveyor-staging-web-green-r0002 from reg/web@sha256:x "
        "on 127.0.0.1:8202 (green)",
        "4. [local] wait until api, web are healthy and /readyz reports 2.0",
        "5. [local] smoke-check through the router's preview route",
        "6. [every host together] canary steps 5% → 25% → 50%: each judged for 30 s against "
        "the stable color; a failed window, or invoke rollout-abort, puts every host back on "
        "the stable color",
        "7. [local] switch the rest of the traffic: api blue → green, web blue → green",
        "8. [local] verify for 5 s through http://127.0.0.1:8080; "
        "on failure switch every host back",
        "9. drain 2 s, then keep the old color warm for 600 s (a rollback then only switches), "
        "then stop it",
        "10. record r0002 in the ledger and release the lock",
    ]


def test_two_hosts_step_together_then_switch_one_by_one() -> None:
    observed = EnvironmentState(
        env="staging",
        hosts=[
            HostState("h1", "running", {"api": "blue", "web": "blue"}, []),
            HostState("h2", "running", {"api": "green", "web": "green"}, []),
        ],
        records=[],
        lock=None,
    )
    both = {"h1": router.Ports.of(CANARY, 0), "h2": router.Ports.of(CANARY, 1000)}
    steps = plan_move(CANARY, observed, both, release("2.0", "b"), "r0002").steps()
    hosts = [line.split("] ")[0].split("[")[-1] for line in steps[3:-2]]
    assert hosts == ["h1"] * 4 + ["h2"] * 4 + ["every host together"] + ["h1"] * 2 + ["h2"] * 2
    assert sum("canary steps" in line for line in steps) == 1


def test_a_first_deploy_has_nothing_to_compare_with_and_is_blue_green() -> None:
    plan = plan_move(
        CANARY, state({"api": None, "web": None}, []), ports(CANARY), release("1.0", "a"), "r0001"
    )
    assert (plan.strategy, plan.canary_steps) == ("blue-green", ())
    assert plan.notes == ("nothing serves yet to compare a canary with: this deploy is blue-green",)
    steps = plan.steps()
    assert "  note: nothing serves yet to compare a canary with: this deploy is blue-green" in steps
    assert "6. [local] switch traffic: api (none) → blue, web (none) → blue" in steps
    assert not any("[every host together]" in line for line in steps)


def test_one_host_with_nothing_live_makes_the_whole_deploy_blue_green() -> None:
    observed = EnvironmentState(
        env="staging",
        hosts=[
            HostState("h1", "running", {"api": "blue", "web": "blue"}, []),
            HostState("h2", "running", {"api": None, "web": None}, []),  # a new host
        ],
        records=[],
        lock=None,
    )
    both = {"h1": router.Ports.of(CANARY, 0), "h2": router.Ports.of(CANARY, 1000)}
    plan = plan_move(CANARY, observed, both, release("2.0", "b"), "r0002")
    assert plan.strategy == "blue-green"
    assert "nothing serves yet to compare a canary with: this deploy is blue-green" in plan.notes


def test_a_rollback_switches_at_once_and_says_so() -> None:
    observed = state(
        {"api": "green", "web": "green"},
        [
            container("api", "blue", "r0001", "exited", "a"),
            container("web", "blue", "r0001", "exited", "a"),
            container("api", "green", "r0002", "running", "b"),
            container("web", "green", "r0002", "running", "b"),
        ],
    )
    plan = plan_move(
        CANARY,
        observed,
        ports(CANARY),
        release("1.0", "a"),
        "r0003",
        kind="rollback",
        returning_to=deployed("r0001", "1.0", "a", "blue"),
    )
    assert (plan.strategy, plan.canary_steps) == ("blue-green", ())
    assert "a rollback switches at once (no canary steps)" in plan.notes
    assert not any("[every host together]" in line for line in plan.steps())


def test_a_blue_green_environment_plans_no_canary() -> None:
    plan = plan_move(STAGING, blue_is_live(), ports(STAGING), release("2.0", "b"), "r0002")
    assert (plan.strategy, plan.canary_steps, plan.notes) == ("blue-green", (), ())
    assert "6. [local] switch traffic: api blue → green, web blue → green" in plan.steps()


# --- observe -------------------------------------------------------------------------------


def mid_canary(weights: dict[str, int], *, live_color: str = "blue") -> HostState:
    """r0001 is the ledger's live release on ``live_color``; r0002 runs on the other color;
    both services are split by ``weights``, as observe_host reads them (live not yet named)."""
    canary_color = router.other(live_color)
    return HostState(
        "local",
        "running",
        {"api": None, "web": None},
        [
            container("api", live_color, "r0001", "running", "a"),
            container("web", live_color, "r0001", "running", "a"),
            container("api", canary_color, "r0002", "running", "b"),
            container("web", canary_color, "r0002", "running", "b"),
        ],
        weights={"api": dict(weights), "web": dict(weights)},
    )


def test_a_split_names_the_ledgers_color_live_and_the_other_canary() -> None:
    record = deployed("r0001", "1.0", "a", "blue")
    host = mid_canary({"blue": 95, "green": 5})
    host.settle_split(record)
    assert host.live == {"api": "blue", "web": "blue"}
    assert host.split("api") and host.canary_color("api") == "green"
    assert [c.name for c in host.canaries()] == [
        "conveyor-staging-api-green-r0002",
        "conveyor-staging-web-green-r0002",
    ]
    assert [host.role(c, record) for c in host.containers] == ["live", "live", "canary", "canary"]
    assert host.leftovers(record) == []
    observed = EnvironmentState("staging", [host], [record], lock=None)
    assert observed.disagreements() == []
    assert observed.serving_versions() == {"api": {"v"}, "web": {"v"}}
    shown = observed.as_dict()["hosts"][0]
    assert shown["weights"]["api"] == {"blue": 95, "green": 5}
    assert shown["leftovers"] == []


def test_the_ledger_decides_which_color_is_live_even_when_the_canary_is_heavier() -> None:
    record = deployed("r0001", "1.0", "a", "green")
    host = mid_canary({"blue": 75, "green": 25}, live_color="green")
    host.settle_split(record)
    assert host.live == {"api": "green", "web": "green"}
    assert host.canary_color("api") == "blue"


def test_without_a_live_release_the_heavier_color_is_live() -> None:
    host = mid_canary({"blue": 25, "green": 75})
    host.settle_split(None)
    assert host.live == {"api": "green", "web": "green"}
    assert host.canary_color("web") == "blue"


def test_an_unsplit_service_is_left_as_the_router_reports_it() -> None:
    record = deployed("r0001", "1.0", "a", "blue")
    host = mid_canary({"blue": 95, "green": 5})
    host.weights["web"] = {"blue": 100}
    host.live["web"] = "blue"
    host.settle_split(record)
    assert not host.split("web") and host.canary_color("web") is None
    assert host.live == {"api": "blue", "web": "blue"}
    # web's green container serves nothing and is no canary: a leftover.
    assert [c.name for c in host.leftovers(record)] == ["conveyor-staging-web-green-r0002"]
    assert host.role(host.containers[3], record) == "leftover"
    assert host.role(host.containers[2], record) == "canary"


def test_a_rerun_after_a_crashed_canary_stops_it_and_steps_again() -> None:
    record = deployed("r0001", "1.0", "a", "blue")
    host = mid_canary({"blue": 75, "green": 25})
    host.settle_split(record)
    observed = EnvironmentState("staging", [host], [record], lock=None)
    plan = plan_move(CANARY, observed, ports(CANARY), release("3.0", "c"), "r0003")
    assert plan.strategy == "canary"
    api = plan.hosts[0].moves[0]
    assert (api.from_color, api.to_color) == ("blue", "green")
    assert api.stop_first == ("conveyor-staging-api-green-r0002",)


class RouterOnly:
    """The part of a HostTarget observe_host reads: its containers and its router's answer."""

    name = "local"
    env = CANARY

    def __init__(self, stat: str, containers: list[Any]) -> None:
        self.stat, self.containers = stat, containers

    def service_containers(self) -> list[Any]:
        return self.containers

    def router_status(self) -> str:
        return "running"

    def weights(self) -> dict[str, dict[str, int]]:
        return router.parse_weights(self.stat, self.env.services)

    def node(self) -> None:
        return None  # a host, not a swarm node


def test_observe_reads_a_split_from_show_stat() -> None:
    host = observe_host(RouterOnly(SPLIT, mid_canary({}).containers))  # type: ignore[arg-type]
    assert host.weights == {"api": {"blue": 95, "green": 5}, "web": {"blue": 100}}
    assert host.live == {"api": None, "web": "blue"}, "a split is named by settle_split"
    host.settle_split(deployed("r0001", "1.0", "a", "blue"))
    assert host.live == {"api": "blue", "web": "blue"}
