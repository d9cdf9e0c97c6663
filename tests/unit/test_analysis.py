"""Canary analysis: counters from ``show stat``, response times from the router's request log,
and the verdicts a window reaches, checked with numbers worked out by hand."""

from __future__ import annotations

import math

import pytest

from conveyor.analysis import (
    LOG_FORMAT,
    Counters,
    MeasurementError,
    Tally,
    Window,
    binomial_tail,
    delta,
    latencies,
    read_counters,
)
from conveyor.config import Analysis

# ``show stat`` columns as HAProxy 2.6 (the router image's) prints them, in order: management.txt,
# section 9.1. Every line, the header too, ends with a comma.
STAT_HEADER = (
    "pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,"
    "wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,"
    "lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,"
    "hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,"
    "cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,"
    "ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,"
    "check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,"
    "conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,"
    "srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,"
    "safe_conn_cur,used_conn_cur,need_conn_est,uweight"
)
STAT_FIELDS = STAT_HEADER.split(",")


def show_stat(*rows: dict[str, object]) -> str:
    """The text ``show stat`` answers: the ``# `` header, one line per row, a blank line."""
    lines = [f"# {STAT_HEADER},"]
    for row in rows:
        assert set(row) <= set(STAT_FIELDS), set(row) - set(STAT_FIELDS)
        lines.append(",".join(str(row.get(name, "")) for name in STAT_FIELDS) + ",")
    return "\n".join(lines) + "\n\n"


def frontend(name: str, **counters: int) -> dict[str, object]:
    return {"pxname": name, "svname": "FRONTEND", "status": "OPEN", "type": 0, "mode": "http",
            **counters}  # fmt: skip


def server(
    backend: str, color: str, *, status: str = "no check", weight: int = 100, **counters: int
) -> dict[str, object]:
    """A server line; the counters not given are 0, as HAProxy prints them."""
    zero = dict.fromkeys(("econ", "eresp", "wretr", "wredis", "rtime", "ttime"), 0)
    zero |= {f"hrsp_{kind}": 0 for kind in ("1xx", "2xx", "3xx", "4xx", "5xx", "other")}
    return {
        "pxname": backend,
        "svname": color,
        "status": status,
        "weight": weight,
        "uweight": weight,
        "act": 1,
        "bck": 0,
        "type": 2,
        "mode": "http",
        "addr": "127.0.0.1:8101",
        **zero,
        **counters,
    }


def backend(name: str, **counters: int) -> dict[str, object]:
    return {"pxname": name, "svname": "BACKEND", "status": "UP", "type": 1, "mode": "http",
            "algo": "roundrobin", **counters}  # fmt: skip


# A canary step on api (green takes 5%), web not split: what read_counters must pick out.
MID_STEP = show_stat(
    frontend("public", hrsp_2xx=1990, hrsp_4xx=12, hrsp_5xx=9),
    frontend("preview", hrsp_2xx=40),
    server("api_live", "blue", weight=95, hrsp_2xx=1500, hrsp_3xx=4, hrsp_4xx=10, hrsp_5xx=1),
    server("api_live", "green", weight=5, hrsp_1xx=1, hrsp_2xx=70, hrsp_5xx=8, econ=2, eresp=3),
    backend("api_live", hrsp_2xx=1570, hrsp_5xx=9, econ=2, eresp=3),
    server("api_preview", "blue", status="MAINT", hrsp_2xx=20),
    server("api_preview", "green", status="MAINT", hrsp_2xx=20, hrsp_5xx=20),
    backend("api_preview", hrsp_2xx=40, hrsp_5xx=20),
    server("web_live", "blue", hrsp_2xx=420, hrsp_other=2),
    server("web_live", "green", status="MAINT"),
    backend("web_live", hrsp_2xx=420),
)


def test_counters_come_from_each_live_server_of_a_real_show_stat() -> None:
    assert read_counters(MID_STEP, ["api", "web"]) == {
        ("api", "blue"): Counters(responses=1515, http_5xx=1),
        ("api", "green"): Counters(responses=79, http_5xx=8, conn_errors=2, resp_errors=3),
        ("web", "blue"): Counters(responses=422),
        ("web", "green"): Counters(),
    }
    assert set(read_counters(MID_STEP, ["api"])) == {("api", "blue"), ("api", "green")}
    assert read_counters(MID_STEP, []) == {}


def test_a_window_counts_5xx_and_connection_and_response_errors() -> None:
    before = Counters(responses=100, http_5xx=2, conn_errors=1, resp_errors=1)
    after = Counters(responses=160, http_5xx=5, conn_errors=3, resp_errors=5)
    # 60 responses (3 of them 5xx), plus 2 connection and 4 response errors that got none.
    assert delta(before, after) == Tally(requests=66, errors=9)
    assert delta(after, after) == Tally()


@pytest.mark.parametrize("field", ["http_5xx", "conn_errors", "resp_errors"])
def test_each_kind_of_error_counts_on_its_own(field: str) -> None:
    # A 5xx is one of the responses; a connection or response error got no response at all.
    answered = 4 if field == "http_5xx" else 0
    after = Counters(**{"responses": 10 + answered, field: 4})
    assert delta(Counters(responses=10), after) == Tally(requests=4, errors=4)


@pytest.mark.parametrize("field", ["responses", "http_5xx", "conn_errors", "resp_errors"])
def test_counters_going_back_are_a_measurement_error(field: str) -> None:
    before = Counters(responses=50, http_5xx=5, conn_errors=5, resp_errors=5)
    after = Counters(**{**before.__dict__, field: 4})
    with pytest.raises(MeasurementError, match="went back"):
        delta(before, after)


def test_response_times_come_from_the_routers_request_log() -> None:
    log = "\n".join(
        [
            "[NOTICE]   (1) : New worker (8) forked",
            "conveyor-req api_live green 200 40",
            "conveyor-req api_live green 500 20",
            "conveyor-req api_live green 503 -1",  # no response: the counters have it
            "conveyor-req api_live blue 200 10",
            "conveyor-req api_live blue 200 0",
            "conveyor-req api_preview green 200 900",  # a smoke check, not user traffic
            "conveyor-req public <NOSRV> 404 -1",  # no route
            "conveyor-req other_live blue 200 7",  # not a service of this environment
            "conveyor-req api_live purple 200 7",
            "conveyor-req api_live blue 200 7 extra",
            "something-else api_live blue 200 7",
            "",
            "conveyor-req web_live blue 200 3",
        ]
    )
    assert latencies(log, ["api", "web"]) == {
        ("api", "green"): Tally(latency_sum_ms=60.0, latency_count=2),
        ("api", "blue"): Tally(latency_sum_ms=10.0, latency_count=2),
        ("web", "blue"): Tally(latency_sum_ms=3.0, latency_count=1),
    }
    assert latencies(log, ["web"]) == {("web", "blue"): Tally(latency_sum_ms=3.0, latency_count=1)}


def test_the_log_format_the_router_writes_is_the_one_read_back() -> None:
    line = (
        LOG_FORMAT.replace("%b", "api_live")
        .replace("%s", "green")
        .replace("%ST", "200")
        .replace("%Tr", "12")
    )
    assert latencies(line + "\n", ["api"]) == {
        ("api", "green"): Tally(latency_sum_ms=12.0, latency_count=1)
    }


def exact_tail(errors: int, total: int, share: float) -> float:
    return sum(
        math.comb(total, k) * share**k * (1 - share) ** (total - k)
        for k in range(errors, total + 1)
    )


@pytest.mark.parametrize("share", [0.01, 0.05, 0.25, 0.5, 0.9])
def test_the_binomial_tail_matches_the_exact_sum(share: float) -> None:
    for total in range(1, 30):
        for errors in range(1, total + 1):
            expected = exact_tail(errors, total, share)
            assert binomial_tail(errors, total, share) == pytest.approx(expected, rel=1e-9)


def test_the_binomial_tail_at_known_points() -> None:
    # All 10 errors on a canary taking 5% of the requests.
    assert binomial_tail(10, 10, 0.05) == pytest.approx(0.05**10, rel=1e-9)
    assert binomial_tail(10, 10, 0.5) == pytest.approx(1 / 1024, rel=1e-9)
    # At least 1 of 2 at a half: 1 - 1/4.
    assert binomial_tail(1, 2, 0.5) == pytest.approx(0.75)
    assert binomial_tail(0, 5, 0.05) == 1.0, "no errors is always possible"
    assert binomial_tail(3, 0, 0.05) == 0.0, "more errors than there are"
    assert binomial_tail(3, 10, 0.0) == 0.0
    assert binomial_tail(3, 10, 1.0) == 1.0
    # Large counts stay finite and small (no overflow in the terms).
    assert 0.0 < binomial_tail(300, 2000, 0.05) < 1e-50


SETTINGS = Analysis()  # min_requests 50, +1% errors, 1.5x and +25 ms, 10 errors at p < 0.001


def tally(requests: int, errors: int = 0, *, mean_ms: float = 10.0, timed: int = -1) -> Tally:
    """``requests`` requests, each timed at ``mean_ms`` unless ``timed`` says how many were."""
    count = requests if timed < 0 else timed
    return Tally(requests, errors, latency_sum_ms=mean_ms * count, latency_count=count)


def window(percent: int = 5, **services: tuple[Tally, Tally]) -> Window:
    """A window over ``services``, each given as (canary, stable)."""
    judged = Window(SETTINGS, percent, services)
    for name, (canary, stable) in services.items():
        judged.add(name, "canary", canary)
        judged.add(name, "stable", stable)
    return judged


def test_a_clean_window_passes_with_its_numbers_and_thresholds() -> None:
    verdict = window(api=(tally(100), tally(1900)), web=(tally(60), tally(1200))).final(30.0)
    assert (verdict.outcome, verdict.rule, verdict.percent, verdict.early) == (
        "pass",
        "within-thresholds",
        5,
        False,
    )
    line = verdict.line()
    assert line.startswith("5%: pass [within-thresholds] after 30.0 s — ")
    assert "api: canary 0/100 errors (0.0%), 10 ms mean, stable 0/1900 errors" in line
    assert "web: canary 0/60 errors" in line
    assert "error rate +1.00%" in line and "1.5x and +25 ms" in line and "50 requests" in line
    recorded = verdict.as_dict()
    assert recorded["outcome"] == "pass" and recorded["rule"] == "within-thresholds"
    assert recorded["reason"] == verdict.reason
    assert recorded["services"]["api"] == {
        "canary": {"requests": 100, "errors": 0, "error_rate": 0.0, "mean_ms": 10.0, "timed": 100},
        "stable": {
            "requests": 1900,
            "errors": 0,
            "error_rate": 0.0,
            "mean_ms": 10.0,
            "timed": 1900,
        },
    }


@pytest.mark.parametrize(
    ("canary", "stable"),
    [
        (tally(49), tally(2000)),  # a perfect canary one request short
        (tally(0), tally(2000)),
        (tally(200), tally(49)),
        (tally(9, errors=9), tally(2000)),  # bad, but not yet evidence enough to fail
    ],
)
def test_too_little_traffic_never_passes(canary: Tally, stable: Tally) -> None:
    verdict = window(api=(canary, stable)).final(30.0)
    assert (verdict.outcome, verdict.rule) == ("inconclusive", "too-little-traffic")
    assert (
        f"api: {canary.requests} canary and {stable.requests} stable requests (need 50 on each)"
        in verdict.line()
    )


def test_no_traffic_anywhere_is_inconclusive() -> None:
    verdict = window(api=(Tally(), Tally()), web=(Tally(), Tally())).final(30.0)
    assert (verdict.outcome, verdict.rule) == ("inconclusive", "too-little-traffic")
    assert verdict.reason == "no requests on any service"


def test_an_idle_service_is_not_judged_and_says_so() -> None:
    verdict = window(api=(tally(100), tally(1900)), web=(Tally(), Tally())).final(30.0)
    assert verdict.outcome == "pass"
    assert "idle, not judged: web" in verdict.reason


def test_a_verdict_says_when_synthetic_traffic_ran() -> None:
    judged = window(api=(tally(100), tally(1900)))
    judged.synthetic = 40
    verdict = judged.final(30.0)
    assert verdict.line().endswith("; 40 synthetic requests")
    assert verdict.as_dict()["synthetic"] == 40


def test_response_times_missing_from_the_log_are_inconclusive() -> None:
    verdict = window(api=(tally(100, timed=20), tally(1900))).final(30.0)
    assert (verdict.outcome, verdict.rule) == ("inconclusive", "latency-unmeasured")
    assert "20 of 100 canary" in verdict.reason


def test_an_error_rate_above_stables_by_more_than_the_limit_fails() -> None:
    # 5 errors are too few to fail early, but 5% against 0.5% is over the +1% limit.
    verdict = window(api=(tally(100, errors=5), tally(2000, errors=10))).final(30.0)
    assert (verdict.outcome, verdict.rule) == ("fail", "error-rate")
    assert "canary 5/100 errors (5.0%)" in verdict.reason
    assert "stable 10/2000 errors (0.5%)" in verdict.reason
    assert "+4.50% > 1.00%" in verdict.reason
    # Within the limit: 1.5% against 0.8%.
    within = window(api=(tally(200, errors=3), tally(2000, errors=16))).final(30.0)
    assert within.outcome == "pass"


def test_a_fail_on_one_service_beats_too_little_traffic_on_another() -> None:
    verdict = window(api=(tally(10), tally(200)), web=(tally(100, errors=8), tally(1900))).final(
        30.0
    )
    assert (verdict.outcome, verdict.rule) == ("fail", "error-rate")
    assert verdict.reason.startswith("web: ")


@pytest.mark.parametrize(
    ("canary_ms", "stable_ms", "outcome"),
    [
        (200.0, 100.0, "fail"),  # 2x and +100 ms
        (3.0, 1.0, "pass"),  # 3x, but only +2 ms
        (130.0, 100.0, "pass"),  # +30 ms, but only 1.3x
        (151.0, 100.0, "fail"),  # just over both
        (150.0, 100.0, "pass"),  # exactly 1.5x is not over it
        (30.0, 0.0, "fail"),  # against an instant stable color, the slack decides
    ],
)
def test_latency_fails_only_over_both_the_ratio_and_the_slack(
    canary_ms: float, stable_ms: float, outcome: str
) -> None:
    verdict = window(api=(tally(100, mean_ms=canary_ms), tally(1900, mean_ms=stable_ms))).final(
        30.0
    )
    assert verdict.outcome == outcome
    if outcome == "fail":
        assert verdict.rule == "latency"
        assert f"canary {canary_ms:.0f} ms mean against stable {stable_ms:.0f} ms" in verdict.reason
        assert "> 1.5x and" in verdict.reason and "> 25 ms" in verdict.reason


def test_a_measurement_error_is_never_a_pass() -> None:
    judged = window(api=(tally(100), tally(1900)))
    judged.measurement_failed("local: the router's counters went back (it restarted mid-window)")
    verdict = judged.final(30.0)
    assert (verdict.outcome, verdict.rule) == ("inconclusive", "measurement-error")
    assert "counters went back" in verdict.line()


def test_ten_canary_errors_against_a_clean_stable_color_fail_at_once() -> None:
    judged = window(api=(tally(50, errors=10), tally(950)))
    verdict = judged.early(4.2)
    assert verdict is not None
    assert (verdict.outcome, verdict.rule, verdict.early) == ("fail", "fail-fast", True)
    line = verdict.line()
    assert line.startswith("5%: fail [fail-fast] (before the window ended) after 4.2 s — ")
    assert "canary 10/50 errors (20.0%)" in line and "stable 0/950 errors (0.0%)" in line
    p = 0.05**10  # all 10 errors on a 5% share
    assert f"p={p:.1e} < 0.001" in line
    assert "increase +20.0% > 1.0%" in line
    recorded = verdict.as_dict()
    assert (recorded["rule"], recorded["early"], recorded["seconds"]) == ("fail-fast", True, 4.2)
    assert recorded["services"]["api"]["canary"]["errors"] == 10
    assert recorded["services"]["api"]["canary"]["requests"] == 50
    assert recorded["services"]["api"]["stable"]["requests"] == 950
    # The same numbers at the window's end fail the same way.
    assert judged.final(30.0).rule == "fail-fast"


@pytest.mark.parametrize(
    ("canary", "stable"),
    [
        (tally(30, errors=3), tally(570)),  # a handful: below fail_fast_errors
        (tally(1000, errors=15), tally(19000, errors=190)),  # 1.5% against 1%: within +1%
        # Clearly worse by the test (p ≈ 4e-6), but by less than the allowed increase.
        (tally(10_000, errors=150), tally(190_000, errors=1900)),
        (tally(1000, errors=10), tally(19000, errors=190)),  # the same rate as stable
        # At a 50% step 10 errors against 5 is not unlikely by chance (p ≈ 0.15).
        (tally(200, errors=10), tally(200, errors=5)),
    ],
)
def test_early_waits_without_clear_evidence(canary: Tally, stable: Tally) -> None:
    assert window(percent=50, api=(canary, stable)).early(4.0) is None


def test_latency_fails_early_once_both_colors_have_enough_timed_requests() -> None:
    slow = window(api=(tally(49, mean_ms=500.0), tally(900, mean_ms=20.0)))
    assert slow.early(3.0) is None
    slow.add("api", "canary", tally(1, mean_ms=500.0))
    verdict = slow.early(3.0)
    assert verdict is not None and (verdict.rule, verdict.early) == ("latency", True)
    assert "50 and 900 timed requests" in verdict.reason


def test_tallies_add_up_across_samples_and_hosts() -> None:
    judged = Window(SETTINGS, 25, ["api"])
    for _ in range(3):
        judged.add("api", "canary", Tally(requests=20, errors=1, latency_sum_ms=200.0,
                                          latency_count=20))  # fmt: skip
    canary = judged.tallies[("api", "canary")]
    assert (canary.requests, canary.errors, canary.mean_ms) == (60, 3, 10.0)
    assert canary.error_rate == pytest.approx(0.05)
    assert Tally().error_rate is None and Tally().mean_ms is None
    assert Tally().describe() == "0/0 errors"
