"""Feature flags without a daemon: flagd definitions validated with key paths, percentages
set and merged across deploys, the flag state a rollback puts back (a killed flag stays off),
the ramp's metrics and stages, and the analysis window a ramp is judged by."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor import flags
from conveyor.analysis import Tally, Window
from conveyor.config import Analysis
from conveyor.errors import UsageError
from conveyor.flagops import _change, _wanted
from conveyor.flagramp import open_ramps, parse_metrics, parse_stages
from conveyor.flags import FlagError
from conveyor.flagstate import state_for

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_PATH = ROOT / "backend" / "flags.json"
FLAG = "new-notes-view"


def rampable(
    percent: int = 0,
    *,
    state: str = "ENABLED",
    default: str = "off",
    on: str = "on",
    off: str = "off",
    key: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A flag flag-set and ramps can change: one fractional split, the on-variant first."""
    split: list[Any] = [[on, percent], [off, 100 - percent]]
    return {
        "state": state,
        "variants": {on: True, off: False},
        "defaultVariant": default,
        "targeting": {"fractional": [key, *split] if key else split},
    }


def defs(**named: dict[str, Any]) -> dict[str, Any]:
    """A flag file; keyword names use ``_`` for ``-``."""
    return {"flags": {name.replace("_", "-"): flag for name, flag in named.items()}}


def split(definitions: dict[str, Any], name: str = FLAG) -> list[list[Any]]:
    buckets = flags.split_of(definitions["flags"][name])
    assert buckets is not None, definitions["flags"][name]
    return buckets


@pytest.fixture
def reference() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REFERENCE_PATH.read_text(encoding="utf-8"))
    return data


# --- validate ---------------------------------------------------------------------------------


def test_the_reference_flag_file_is_valid_and_rampable(reference: dict[str, Any]) -> None:
    flags.validate(reference, "backend/flags.json")
    assert flags.load(REFERENCE_PATH) == reference
    flag = reference["flags"][FLAG]
    assert flags.percent(flag) == 0
    assert split(reference) == [["on", 0], ["off", 100]]
    assert flags.describe(reference) == [
        f"{FLAG}: ENABLED, variants on, off, default off; 0% get 'on'"
    ]


def _with(reference: dict[str, Any], change: Any) -> dict[str, Any]:
    data = copy.deepcopy(reference)
    change(data, data["flags"][FLAG])
    return data


def _targeting(value: Any) -> Any:
    return lambda data, flag: flag.update(targeting=value)


def _fraction(*buckets: Any) -> Any:
    return _targeting({"fractional": list(buckets)})


SELF_REFERENCE = {"$evaluators": {"loop": {"$ref": "loop"}}}
CYCLE = {"$evaluators": {"a": {"or": [{"$ref": "b"}]}, "b": {"$ref": "a"}}}

REFUSED = {
    "unknown top-level key": (
        lambda data, flag: data.update(flag={}),
        "f.json [flag]: unknown key (allowed: $schema, flags, $evaluators, metadata)",
    ),
    "unknown flag key": (
        lambda data, flag: flag.update(enabled=True),
        f"f.json [flags.{FLAG}.enabled]: unknown key (allowed: state, variants,",
    ),
    "state not a state": (
        lambda data, flag: flag.update(state="on"),
        f"f.json [flags.{FLAG}.state]: expected one of ENABLED, DISABLED",
    ),
    "state missing": (
        lambda data, flag: flag.pop("state"),
        f"f.json [flags.{FLAG}.state]",
    ),
    "no variants": (
        lambda data, flag: flag.update(variants={}),
        f"f.json [flags.{FLAG}.variants]: expected an object of at least one variant",
    ),
    "default not a variant": (
        lambda data, flag: flag.update(defaultVariant="maybe"),
        f"f.json [flags.{FLAG}.defaultVariant]: 'maybe' is not a variant (variants: on, off)",
    ),
    "default not a string": (
        lambda data, flag: flag.update(defaultVariant=["on"]),
        f"f.json [flags.{FLAG}.defaultVariant]: ['on'] is not a variant",
    ),
    "fractional names an unknown variant": (
        _fraction(["on", 5], ["of", 95]),
        f"f.json [flags.{FLAG}.targeting.fractional[1]]: 'of' is not a variant (variants: off, on)",
    ),
    "the index counts the bucketing key": (
        _fraction({"var": "email"}, ["on", 5], ["of", 95]),
        f"f.json [flags.{FLAG}.targeting.fractional[2]]: 'of' is not a variant",
    ),
    "fractional nested in an if": (
        _targeting({"if": [{"var": "beta"}, {"fractional": [["on", 50], ["of", 50]]}, "off"]}),
        f"f.json [flags.{FLAG}.targeting.if[1].fractional[1]]: 'of' is not a variant",
    ),
    "fractional weight not whole": (
        _fraction(["on", 5.5], ["off", 94.5]),
        f"f.json [flags.{FLAG}.targeting.fractional[0]]: expected [variant, whole weight >= 0]",
    ),
    "fractional weight negative": (
        _fraction(["on", 101], ["off", -1]),
        f"f.json [flags.{FLAG}.targeting.fractional[1]]: expected [variant, whole weight >= 0]",
    ),
    "fractional weight a bool": (
        _fraction(["on", True], ["off", 99]),
        f"f.json [flags.{FLAG}.targeting.fractional[0]]: expected [variant, whole weight >= 0]",
    ),
    "fractional weight a string": (
        _fraction(["on", "5"], ["off", 95]),
        f"f.json [flags.{FLAG}.targeting.fractional[0]]: expected [variant, whole weight >= 0]",
    ),
    "fractional bucket without a weight": (
        _fraction(["on"], ["off", 100]),
        f"f.json [flags.{FLAG}.targeting.fractional[0]]: expected [variant, whole weight >= 0]",
    ),
    "fractional weights all zero": (
        _fraction(["on", 0], ["off", 0]),
        f"f.json [flags.{FLAG}.targeting.fractional]: the weights add up to 0",
    ),
    "fractional not a list": (
        _targeting({"fractional": {"on": 5}}),
        f"f.json [flags.{FLAG}.targeting.fractional]: expected a list of [variant, weight] pairs",
    ),
    "targeting not an object": (
        _targeting(["on"]),
        f"f.json [flags.{FLAG}.targeting]: expected an object (JsonLogic)",
    ),
    "$ref to a missing evaluator": (
        _targeting({"$ref": "nope"}),
        f"f.json [flags.{FLAG}.targeting.$ref]: no evaluator named 'nope' in $evaluators",
    ),
    "$ref not a name": (
        _targeting({"$ref": ["nope"]}),
        f"f.json [flags.{FLAG}.targeting.$ref]: no evaluator named ['nope'] in $evaluators",
    ),
    "$ref to an evaluator that refers to itself": (
        lambda data, flag: (data.update(SELF_REFERENCE), flag.update(targeting={"$ref": "loop"})),
        f"f.json [flags.{FLAG}.targeting.$ref.$ref]: evaluator 'loop' refers to itself",
    ),
    "$ref through a cycle of two": (
        lambda data, flag: (data.update(CYCLE), flag.update(targeting={"$ref": "a"})),
        f"f.json [flags.{FLAG}.targeting.$ref.or[0].$ref.$ref]: evaluator 'a' refers to itself",
    ),
    "$ref to an evaluator with a bad split": (
        lambda data, flag: (
            data.update({"$evaluators": {"split": {"fractional": [["on", 5], ["gone", 95]]}}}),
            flag.update(targeting={"$ref": "split"}),
        ),
        f"f.json [flags.{FLAG}.targeting.$ref.fractional[1]]: 'gone' is not a variant",
    ),
    "flags not an object": (
        lambda data, flag: data.update(flags=[]),
        "f.json [flags]: expected an object of flags",
    ),
    "$evaluators not an object": (
        lambda data, flag: data.update({"$evaluators": []}),
        "f.json [$evaluators]: expected an object",
    ),
    "a flag not an object": (
        lambda data, flag: data["flags"].update(other=True),
        "f.json [flags.other]: expected an object",
    ),
}


@pytest.mark.parametrize(("change", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_validate_refuses_with_the_key_path(
    reference: dict[str, Any], change: Any, message: str
) -> None:
    data = _with(reference, change)
    with pytest.raises(FlagError, match=f"^{re.escape(message)}"):
        flags.validate(data, "f.json")


def test_validate_accepts_what_flagd_accepts(reference: dict[str, Any]) -> None:
    shared = {
        "$evaluators": {
            "beta": {"in": ["@example.com", {"var": "email"}]},
            "split": {"fractional": [{"var": "email"}, ["on", 30], ["off", 70]]},
        }
    }
    data = _with(
        reference,
        lambda data, flag: (
            data.update(shared),
            flag.update(targeting={"if": [{"$ref": "beta"}, "on", {"$ref": "split"}]}),
            flag.update(metadata={"owner": "notes"}),
        ),
    )
    flags.validate(data, "f.json")
    # The same evaluator twice on separate branches is a reuse, not a cycle.
    data["flags"][FLAG]["targeting"] = {"or": [{"$ref": "beta"}, {"$ref": "beta"}]}
    flags.validate(data, "f.json")
    # A weight of 0 is fine as long as someone is bucketed somewhere.
    flags.validate(defs(x=rampable(0)), "f.json")


def test_validate_refuses_something_not_an_object() -> None:
    with pytest.raises(FlagError, match=r"^f\.json: expected an object with a 'flags' object"):
        flags.validate([], "f.json")


def test_load_and_parse_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "flags.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(FlagError, match=rf"^{re.escape(str(broken))}: not JSON"):
        flags.load(broken)
    with pytest.raises(FlagError, match=rf"^{re.escape(str(tmp_path / 'gone'))}: cannot read"):
        flags.load(tmp_path / "gone")
    with pytest.raises(FlagError, match=r"^host:vol/api\.json \[flags\]: expected an object"):
        flags.parse(b'{"flags": 1}', "host:vol/api.json")
    assert flags.parse(flags.dumps(defs(x=rampable(7))), "x") == defs(x=rampable(7))


# --- percent and with_percent ------------------------------------------------------------------


def test_percent_is_the_on_variants_share_and_none_when_not_rampable() -> None:
    assert flags.percent(rampable(35)) == 35
    assert flags.percent(rampable(35, key={"var": "email"})) == 35
    # A disabled flag serves its default variant to everyone.
    assert flags.percent(rampable(35, state="DISABLED")) == 0
    assert flags.percent(rampable(35, state="DISABLED", default="on")) == 100
    assert (
        flags.percent({"state": "ENABLED", "variants": {"on": 1}, "defaultVariant": "on"}) is None
    )
    three = rampable(30)
    three["targeting"]["fractional"].append(["other", 0])
    assert flags.percent(three) is None


@pytest.mark.parametrize("value", [0, 1, 50, 99, 100])
def test_with_percent_sets_the_split_and_still_validates(value: int) -> None:
    before = defs(new_notes_view=rampable(5), other=rampable(40))
    kept = copy.deepcopy(before)
    after = flags.with_percent(before, FLAG, value, "staging api flags")
    assert before == kept, "the input was changed"
    assert split(after) == [["on", value], ["off", 100 - value]]
    assert flags.percent(after["flags"][FLAG]) == value
    assert after["flags"]["other"] == before["flags"]["other"]
    flags.validate(after, "after")


@pytest.mark.parametrize("value", [101, -1, 1000])
def test_with_percent_refuses_a_share_outside_0_to_100(value: int) -> None:
    before = defs(new_notes_view=rampable(5))
    with pytest.raises(FlagError, match=rf"^staging: a percentage is 0 to 100, got {value}$"):
        flags.with_percent(before, FLAG, value, "staging")


def test_with_percent_names_the_known_flags_for_an_unknown_one() -> None:
    before = defs(new_notes_view=rampable(5), dark_mode=rampable(0))
    with pytest.raises(
        FlagError, match=r"^staging: no flag named 'new-note' \(flags: dark-mode, new-notes-view\)$"
    ):
        flags.with_percent(before, "new-note", 5, "staging")
    with pytest.raises(FlagError, match=r"\(flags: none\)"):
        flags.with_percent({"flags": {}}, "x", 5, "staging")


NOT_RAMPABLE = {
    "no targeting": {"state": "ENABLED", "variants": {"on": True, "off": False},
                     "defaultVariant": "off"},
    "a rule around the split": {**rampable(), "targeting": {"if": [
        {"var": "beta"}, "on", {"fractional": [["on", 5], ["off", 95]]}]}},
    "three buckets": {**rampable(), "variants": {"on": 1, "off": 0, "b": 2}, "targeting": {
        "fractional": [["on", 5], ["b", 5], ["off", 90]]}},
    "weights not out of 100": {**rampable(), "targeting": {"fractional": [["on", 1], ["off", 3]]}},
}  # fmt: skip


@pytest.mark.parametrize("flag", NOT_RAMPABLE.values(), ids=NOT_RAMPABLE.keys())
def test_with_percent_refuses_a_flag_that_is_not_one_split(flag: dict[str, Any]) -> None:
    before = defs(x=flag)
    flags.validate(before, "f.json")
    with pytest.raises(FlagError, match=r"^staging \[flags\.x\.targeting\]: not rampable — "):
        flags.with_percent(before, "x", 5, "staging")


def test_with_percent_enables_a_disabled_flag_and_keeps_the_bucketing_key() -> None:
    key = {"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]}
    before = defs(new_notes_view=rampable(0, state="DISABLED", key=key))
    after = flags.with_percent(before, FLAG, 25, "staging")
    flag = after["flags"][FLAG]
    assert flag["state"] == "ENABLED"
    assert flag["targeting"]["fractional"] == [key, ["on", 25], ["off", 75]]
    assert flags.percent(flag) == 25


# --- merge --------------------------------------------------------------------------------------


def test_merge_keeps_the_environments_percentages_and_the_releases_flags() -> None:
    release = defs(
        kept=rampable(0, on="enabled", off="disabled", default="disabled"),
        new=rampable(10),
        plain=NOT_RAMPABLE["no targeting"],
    )
    release["flags"]["kept"]["metadata"] = {"owner": "notes"}
    current = defs(kept=rampable(40), removed=rampable(60), plain=rampable(50))
    before = copy.deepcopy((release, current))
    merged = flags.merge(release, current)
    assert (release, current) == before, "merge changed its inputs"
    assert sorted(merged["flags"]) == ["kept", "new", "plain"]
    kept = merged["flags"]["kept"]
    # The environment's share, on the release's variants (renamed here) and definition.
    assert kept["targeting"]["fractional"] == [["enabled", 40], ["disabled", 60]]
    assert kept["metadata"] == {"owner": "notes"}
    assert merged["flags"]["new"] == release["flags"]["new"]
    assert merged["flags"]["plain"] == release["flags"]["plain"]
    flags.validate(merged, "merged")


def test_merge_keeps_a_disabled_flag_disabled() -> None:
    release = defs(x=rampable(20))
    merged = flags.merge(release, defs(x=rampable(70, state="DISABLED")))
    assert merged["flags"]["x"]["state"] == "DISABLED"
    assert flags.percent(merged["flags"]["x"]) == 0
    flags.validate(merged, "merged")


def test_merge_takes_the_environments_state_and_share_over_a_disabled_release() -> None:
    merged = flags.merge(defs(x=rampable(0, state="DISABLED")), defs(x=rampable(30)))
    assert merged["flags"]["x"]["state"] == "ENABLED"
    assert flags.percent(merged["flags"]["x"]) == 30


def test_merge_with_no_current_flags_is_a_copy_of_the_release() -> None:
    release = defs(x=rampable(20))
    nothing: list[dict[str, Any] | None] = [None, {}]
    for current in nothing:
        merged = flags.merge(release, current)
        assert merged == release
        merged["flags"]["x"]["state"] = "DISABLED"
        assert release["flags"]["x"]["state"] == "ENABLED"


def test_merge_uses_the_releases_share_where_the_live_flag_is_not_rampable() -> None:
    merged = flags.merge(defs(x=rampable(15)), defs(x=NOT_RAMPABLE["a rule around the split"]))
    assert flags.percent(merged["flags"]["x"]) == 15


# Flag files as a ramp sees them: rampable flags with any share, state and bucketing key.
_names = st.sampled_from(["a", "b", "c", "d"])


@st.composite
def _flag(draw: st.DrawFn) -> dict[str, Any]:
    on = draw(st.sampled_from(["on", "new"]))
    return rampable(
        draw(st.integers(0, 100)),
        state=draw(st.sampled_from(flags.STATES)),
        default=draw(st.sampled_from([on, "off"])),
        on=on,
        key=draw(st.one_of(st.none(), st.just({"var": "email"}))),
    )


_files = st.dictionaries(_names, _flag()).map(lambda named: {"flags": named})


def _weights(flag: dict[str, Any]) -> tuple[str, int]:
    buckets = flags.split_of(flag)
    assert buckets is not None, flag
    assert sum(b[1] for b in buckets) == flags.FULL
    return buckets[0][0], buckets[0][1]


@settings(database=None, deadline=None, max_examples=300)
@given(release=_files, current=st.one_of(st.none(), _files))
def test_merge_never_changes_the_total_weight_or_the_on_variant(
    release: dict[str, Any], current: dict[str, Any] | None
) -> None:
    merged = flags.merge(release, current)
    flags.validate(merged, "merged")
    assert merged["flags"].keys() == release["flags"].keys()
    for name, flag in merged["flags"].items():
        on, share = _weights(flag)
        assert on == _weights(release["flags"][name])[0]
        live = (current or {}).get("flags", {}).get(name)
        if live is not None and live["state"] == "ENABLED":
            assert (flag["state"], share) == ("ENABLED", flags.percent(live))
        if live is not None and live["state"] == "DISABLED":
            assert flag["state"] == "DISABLED"


@settings(database=None, deadline=None, max_examples=300)
@given(before=_files.filter(lambda d: bool(d["flags"])), data=st.data())
def test_with_percent_never_changes_the_total_weight_or_the_on_variant(
    before: dict[str, Any], data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(before["flags"])))
    value = data.draw(st.integers(0, 100))
    after = flags.with_percent(before, name, value, "prop")
    for other, flag in after["flags"].items():
        on, share = _weights(flag)
        assert on == _weights(before["flags"][other])[0]
        if other == name:
            assert (flag["state"], share, flags.percent(flag)) == ("ENABLED", value, value)
        else:
            assert flag == before["flags"][other]


# --- state_for ----------------------------------------------------------------------------------


def flag_set(
    record: str | None, share: int, *, image: str = "api", flag: str = FLAG, ramp: str | None = None
) -> dict[str, Any]:
    """A flag-set audit event as flagops.write_change records it."""
    return {"kind": "flag-set", "image": image, "flag": flag, "old": 0, "new": share,
            "record": record, "state": defs(new_notes_view=rampable(share)), "ramp": ramp,
            "why": ""}  # fmt: skip


def killed(*, image: str = "api", flag: str = FLAG, ramp: str = "ramp-1") -> dict[str, Any]:
    return {"kind": "flag-killed", "image": image, "flag": flag, "ramp": ramp, "verdict": {}}


def deployed(share: int, **images: dict[str, Any]) -> dict[str, Any]:
    """A release record's ``flags``: its definitions and what its deploy wrote."""
    state = {"api": defs(new_notes_view=rampable(share)), **images}
    return {"definitions": state, "state": state}


def shares(found: dict[str, dict[str, Any]], image: str = "api", flag: str = FLAG) -> int | None:
    return flags.percent(found[image]["flags"][flag])


def test_state_for_is_the_deploys_state_then_that_records_latest_flag_sets() -> None:
    assert shares(state_for("r1", deployed(10), [])) == 10
    events = [flag_set("r1", 25), flag_set("r2", 90), flag_set("r1", 40), flag_set("r0", 5)]
    assert shares(state_for("r1", deployed(10), events)) == 40
    assert shares(state_for("r1", deployed(10), [flag_set("r2", 90)])) == 10
    assert state_for("r1", {}, [flag_set("r1", 30)]) == {"api": flag_set("r1", 30)["state"]}
    assert state_for("r1", {}, [flag_set("r2", 30)]) == {}


def test_a_killed_flag_stays_off_until_a_person_sets_it() -> None:
    recorded = deployed(50)
    events = [flag_set("r1", 25, ramp="ramp-1"), flag_set("r1", 0, ramp="ramp-1"), killed()]
    found = state_for("r1", recorded, events)
    assert shares(found) == 0
    flags.validate(found["api"], "found")
    # A rollback to an older release: its own share was 50, the kill still holds.
    assert shares(state_for("r0", deployed(50), events)) == 0
    # A ramp's flag-set is not a person's.
    assert shares(state_for("r0", deployed(50), [*events, flag_set("r9", 30, ramp="r")])) == 0
    # A person's flag-set, under any release, lifts it; the target's own share comes back.
    assert shares(state_for("r0", deployed(50), [*events, flag_set("r9", 30)])) == 50
    # ...unless the ramp kills it again afterwards.
    again = [*events, flag_set("r9", 30), killed(ramp="ramp-2")]
    assert shares(state_for("r0", deployed(50), again)) == 0


def test_a_new_ramp_started_by_a_person_lifts_a_kill() -> None:
    events = [
        killed(),
        {"kind": "flag-ramp-started", "ramp": "ramp-2", "flag": FLAG, "image": "api"},
        flag_set("r1", 5, ramp="ramp-2"),
    ]
    assert shares(state_for("r1", deployed(50), events)) == 5


def test_a_kill_holds_for_its_own_images_flag_only() -> None:
    web = defs(new_notes_view=rampable(70), other=rampable(20))
    recorded = deployed(50, web=web)
    events = [killed(image="web")]
    found = state_for("r1", recorded, events)
    assert (shares(found), shares(found, "web"), shares(found, "web", "other")) == (50, 0, 20)
    # A person setting api's flag of the same name does not lift web's kill.
    assert shares(state_for("r1", recorded, [*events, flag_set("r2", 30)]), "web") == 0


def test_a_kill_of_a_flag_the_target_lacks_or_cannot_ramp_is_ignored() -> None:
    recorded = deployed(50)
    for event in (killed(flag="gone"), killed(image="worker")):
        assert state_for("r1", recorded, [event]) == recorded["state"]
    # An older release where the flag was a plain on/off: nothing to set to 0, no crash.
    older = {"state": {"api": defs(new_notes_view=NOT_RAMPABLE["no targeting"])}}
    assert state_for("r0", older, [killed()]) == older["state"]


def test_state_for_skips_events_without_an_image() -> None:
    event = flag_set("r1", 30)
    del event["image"]
    assert (
        state_for("r1", deployed(10), [event, {"kind": "flag-killed", "flag": FLAG}])
        == (deployed(10)["state"])
    )


# --- flagramp: metrics, stages, open ramps ------------------------------------------------------

METRICS = """\
# HELP refapi_flag_requests_total Requests served, by the flag variants they got.
# TYPE refapi_flag_requests_total counter
refapi_flag_requests_total{flag="new-notes-view",variant="off"} 120
refapi_flag_requests_total{flag="new-notes-view",variant="on"} 12
refapi_flag_requests_total{flag="new-notes-view-2",variant="on"} 999
refapi_flag_requests_total{flag="new",variant="on"} 998
# HELP refapi_flag_errors_total Requests that failed, by the flag variants they got.
# TYPE refapi_flag_errors_total counter
refapi_flag_errors_total{flag="new-notes-view",variant="off"} 0
refapi_flag_errors_total{flag="new-notes-view",variant="on"} 3
refapi_flag_errors_total{flag="dark-mode",variant="on"} 7
# TYPE refapi_flag_definitions_info gauge
refapi_flag_definitions_info{sha256="abc",source="/flags/api.json"} 1
refapi_flag_definitions_stale 0
http_requests_total{flag="new-notes-view",variant="on"} 5000
flag_requests_created{flag="new-notes-view",variant="on"} 1.7e+09
"""


def test_parse_metrics_reads_one_flags_counters_by_variant() -> None:
    assert parse_metrics(METRICS, FLAG) == {
        ("requests", "off"): 120,
        ("requests", "on"): 12,
        ("errors", "off"): 0,
        ("errors", "on"): 3,
    }
    assert parse_metrics(METRICS, "dark-mode") == {("errors", "on"): 7}
    assert parse_metrics(METRICS, "absent") == {}
    assert parse_metrics("", FLAG) == {}


@pytest.mark.parametrize("name", ["flag", "app_flag", "refapi_v2_flag"])
def test_parse_metrics_takes_any_prefix_and_float_counters(name: str) -> None:
    text = (
        f'{name}_requests_total{{flag="x",variant="on"}} 12.0\n'
        f'{name}_errors_total{{flag="x",variant="on"}} 2 1700000000000\n'
    )
    assert parse_metrics(text, "x") == {("requests", "on"): 12, ("errors", "on"): 2}


@pytest.mark.parametrize(
    ("raw", "stages"),
    [("1,5,100", [1, 5, 100]), ("100", [100]), (" 1, 5 ,25,50,100", [1, 5, 25, 50, 100])],
)
def test_parse_stages_accepts_rising_percentages_ending_at_100(raw: str, stages: list[int]) -> None:
    assert parse_stages(raw) == stages


@pytest.mark.parametrize("raw", ["5,1,100", "1,5,50", "0,100", "a,100", "", "1,5,5,100", "-1,100",
                                 "1,100,150", "1.5,100"])  # fmt: skip
def test_parse_stages_refuses_anything_else(raw: str) -> None:
    with pytest.raises(UsageError, match=r"^--stages: rising percentages that end at 100"):
        parse_stages(raw)


def test_open_ramps_pairs_started_and_ended_by_ramp_id() -> None:
    one = {"kind": "flag-ramp-started", "ramp": "ramp-1", "flag": "a"}
    two = {"kind": "flag-ramp-started", "ramp": "ramp-2", "flag": "b"}
    events = [
        one,
        {"kind": "flag-set", "ramp": "ramp-1"},
        two,
        {"kind": "flag-ramp-ended", "ramp": "ramp-1", "outcome": "completed"},
        {"kind": "flag-ramp-ended", "ramp": "ramp-0", "outcome": "interrupted"},
    ]
    assert open_ramps(events) == {"ramp-2": two}
    assert open_ramps([*events, {"kind": "flag-ramp-ended", "ramp": "ramp-2"}]) == {}
    assert open_ramps([]) == {}


# --- flagops: the wanted share and the change --------------------------------------------------


def test_wanted_is_exactly_one_of_on_off_or_a_percentage() -> None:
    assert _wanted(True, False, None) == 100
    assert _wanted(False, True, None) == 0
    assert _wanted(False, False, 37) == 37
    assert _wanted(False, False, 0) == 0
    for on, off, percent in [(False, False, None), (True, True, None), (True, False, 0),
                             (False, True, 50)]:  # fmt: skip
        with pytest.raises(UsageError, match=r"^say one of --on, --off or --percent N$"):
            _wanted(on, off, percent)


def test_change_carries_the_old_and_new_share_and_the_whole_new_file() -> None:
    before = defs(new_notes_view=rampable(5, state="DISABLED"), other=rampable(40))
    change = _change(before, "api", FLAG, 25, "staging")
    assert change == {
        "image": "api",
        "flag": FLAG,
        "old": 0,
        "new": 25,
        "state": flags.with_percent(before, FLAG, 25, "x"),
    }
    assert before["flags"][FLAG]["state"] == "DISABLED"


def test_change_refuses_before_anything_is_written() -> None:
    before = defs(new_notes_view=rampable(5))
    with pytest.raises(FlagError, match=r"^staging: no api flags written yet — deploy"):
        _change(None, "api", FLAG, 25, "staging")
    with pytest.raises(FlagError, match=r"no flag named 'new-note' \(flags: new-notes-view\)"):
        _change(before, "api", "new-note", 25, "staging")
    with pytest.raises(FlagError, match=r"^staging api flags: a percentage is 0 to 100, got 101"):
        _change(before, "api", FLAG, 101, "staging")
    with pytest.raises(FlagError, match=r"^staging api flags \[flags\.x\.targeting\]: not ramp"):
        _change(defs(x=NOT_RAMPABLE["no targeting"]), "api", "x", 25, "staging")


# --- the window a ramp is judged by -------------------------------------------------------------


def _window(on: Tally, off: Tally, *, latency: bool = False) -> Window:
    window = Window(Analysis(), 5, [FLAG], latency=latency)
    window.add(FLAG, "canary", on)
    window.add(FLAG, "stable", off)
    return window


def test_a_ramp_window_passes_on_enough_requests_without_latency() -> None:
    on, off = Tally(requests=60, errors=0), Tally(requests=900, errors=2)
    window = _window(on, off)
    assert window.early(10.0) is None
    verdict = window.final(10.0)
    assert (verdict.outcome, verdict.rule) == ("pass", "within-thresholds")
    assert verdict.services[FLAG]["canary"]["requests"] == 60
    # A canary window, which times requests, would not pass on these numbers.
    canary = _window(on, off, latency=True).final(10.0)
    assert (canary.outcome, canary.rule) == ("inconclusive", "latency-unmeasured")


def test_a_ramp_window_ignores_latency_numbers() -> None:
    on = Tally(requests=60, latency_sum_ms=60 * 900.0, latency_count=60)
    off = Tally(requests=900, latency_sum_ms=900 * 10.0, latency_count=900)
    verdict = _window(on, off).final(10.0)
    assert (verdict.outcome, verdict.rule) == ("pass", "within-thresholds")
    assert _window(on, off, latency=True).final(10.0).rule == "latency"


def test_a_ramp_window_fails_fast_on_the_on_variants_errors() -> None:
    window = _window(Tally(requests=40, errors=15), Tally(requests=400, errors=0))
    verdict = window.early(3.0)
    assert verdict is not None
    assert (verdict.outcome, verdict.rule, verdict.early) == ("fail", "fail-fast", True)
    assert verdict.reason.startswith(f"{FLAG}: canary 15/40 errors (37.5%) against stable 0/400")


def test_a_ramp_window_never_passes_on_too_little_traffic() -> None:
    verdict = _window(Tally(requests=49), Tally(requests=900)).final(10.0)
    assert (verdict.outcome, verdict.rule) == ("inconclusive", "too-little-traffic")
    idle = _window(Tally(), Tally()).final(10.0)
    assert (idle.outcome, idle.rule) == ("inconclusive", "too-little-traffic")


def test_a_ramp_window_fails_at_the_end_on_a_higher_error_rate() -> None:
    verdict = _window(Tally(requests=100, errors=3), Tally(requests=900, errors=0)).final(10.0)
    assert (verdict.outcome, verdict.rule) == ("fail", "error-rate")


def test_the_report_lists_flag_changes_and_kills_beside_the_deploys() -> None:
    from conveyor import metrics, report

    changes = [
        {
            "kind": "flag-set",
            "at": 1767225600,
            "flag": "new-notes-view",
            "old": 0,
            "new": 25,
            "who": "ana@example.com",
            "record": "r0003",
            "why": "",
        },
        {
            "kind": "flag-killed",
            "at": 1767225700,
            "flag": "new-notes-view",
            "who": "ci",
            "ramp": "ramp-1",
            "verdict": {"percent": 25, "reason": "on 12/240 errors vs off 0/700"},
        },
    ]
    page = report.render(metrics.compute("staging", []), generated=0, flag_changes=changes)
    table = page.split('<table id="flags">')[1].split("</table>")[0]
    rows = table.split("<tr")[2:]
    assert len(rows) == 2
    assert "killed at 25%" in rows[0] and "on 12/240 errors vs off 0/700" in rows[0]
    assert "0% → 25%" in rows[1] and "ana@example.com" in rows[1] and "r0003" in rows[1]


# --- flagd's JSON schema (vendored) -------------------------------------------------------------

SCHEMA_DIR = ROOT / "src" / "conveyor" / "schemas" / "flagd"


def test_the_vendored_schema_is_flagds_and_says_where_it_came_from() -> None:
    from jsonschema import Draft7Validator

    for name in flags.SCHEMA_FILES:
        schema = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
        assert schema["$id"] == f"https://flagd.dev/schema/v0/{name}"
        Draft7Validator.check_schema(schema)
    assert "Apache License" in (SCHEMA_DIR / "LICENSE").read_text(encoding="utf-8")
    provenance = (SCHEMA_DIR / "README.md").read_text(encoding="utf-8")
    assert "open-feature/flagd-schemas" in provenance
    assert "741a7f8e7dc309a6e3a9c4259edbe52c89488ea9" in provenance


def test_the_reference_flag_file_passes_flagds_schema(reference: dict[str, Any]) -> None:
    flags._check_schema(reference, "backend/flags.json")
    flags.validate(reference, "backend/flags.json")
    # flagd's other flag types: string, number and object variants.
    for variants in ({"a": "new", "b": "old"}, {"a": 1, "b": 2.5}, {"a": {"x": 1}, "b": {}}):
        flag = {**rampable(10, on="a", off="b", default="b"), "variants": variants}
        flags.validate(defs(x=flag), "f.json")


def _rule(rule: Any) -> Any:
    return _targeting({"if": [rule, "on", "off"]})


# Problems conveyor's own checks let through and flagd's schema refuses: each is one line
# naming the key path.
SCHEMA_REFUSED = {
    "a variant value flagd has no type for": (
        lambda data, flag: flag["variants"].update(off=None),
        f"f.json [flags.{FLAG}.variants]: variants must all be booleans, all strings, all numbers "
        "or all objects (on: boolean, off: null)",
    ),
    "variants of mixed types": (
        lambda data, flag: flag["variants"].update(off="no"),
        f"f.json [flags.{FLAG}.variants]: variants must all be booleans, all strings, all numbers "
        "or all objects (on: boolean, off: string)",
    ),
    "an operator JsonLogic does not know": (
        _targeting({"iff": [{"var": "beta"}, "on", "off"]}),
        f"f.json [flags.{FLAG}.targeting]: unexpected 'iff': a rule is an object with one "
        "operator flagd's JsonLogic knows",
    ),
    "an unknown operator deep inside a rule": (
        _rule({"and": [{"var": "beta"}, {"contains": [{"var": "email"}, "@example.com"]}]}),
        f"f.json [flags.{FLAG}.targeting.if[0].and[1]]: unexpected 'contains'",
    ),
    "a comparison with three operands": (
        _rule({"==": [{"var": "tier"}, "gold", "silver"]}),
        f"f.json [flags.{FLAG}.targeting.if[0].==]: [{{'var': 'tier'}}, 'gold', 'silver'] "
        "is too long",
    ),
    "a sem_ver range flagd does not know": (
        _rule({"sem_ver": [{"var": "version"}, "=>", "1.0.0"]}),
        f"f.json [flags.{FLAG}.targeting.if[0].sem_ver[1]]: '=>' is not one of ['=', '!=',",
    ),
    "a $flagd property that does not exist": (
        _rule({"==": [{"var": "$flagd.key"}, "x"]}),
        f"f.json [flags.{FLAG}.targeting.if[0].==[0].var]: '$flagd.key' does not match",
    ),
    "a $ref as the whole rule": (
        lambda data, flag: (
            data.update({"$evaluators": {"split": {"fractional": [["on", 5], ["off", 95]]}}}),
            flag.update(targeting={"$ref": "split"}),
        ),
        f'f.json [flags.{FLAG}.targeting]: flagd\'s schema takes {{"$ref": ...}} as an operand, '
        "not as a whole rule",
    ),
    "a shared evaluator that is not a rule": (
        lambda data, flag: data.update({"$evaluators": {"beta": {"email": "@example.com"}}}),
        "f.json [$evaluators.beta]: unexpected 'email': a rule is an object with one operator",
    ),
    "flag metadata that is not a scalar": (
        lambda data, flag: flag.update(metadata={"owner": {"team": "notes"}}),
        f"f.json [flags.{FLAG}.metadata.owner]: {{'team': 'notes'}} is not of type 'string', "
        "'number', 'boolean'",
    ),
    "file metadata that is not a scalar": (
        lambda data, flag: data.update(metadata={"version": None}),
        "f.json [metadata.version]: None is not of type 'string'",
    ),
    "a flag without a name": (
        lambda data, flag: data["flags"].update({"": copy.deepcopy(flag)}),
        "f.json [flags]: '' does not match any of the regexes: '^.{1,}$'",
    ),
}


@pytest.mark.parametrize(("change", "message"), SCHEMA_REFUSED.values(), ids=SCHEMA_REFUSED.keys())
def test_flagds_schema_refuses_what_the_hand_checks_let_through(
    reference: dict[str, Any], change: Any, message: str
) -> None:
    data = _with(reference, change)
    flags._check_shape_and_references(data, "f.json")  # conveyor's own checks alone: no objection
    with pytest.raises(FlagError, match=f"^{re.escape(message)}") as refused:
        flags.validate(data, "f.json")
    assert "\n" not in str(refused.value)


def test_conveyors_own_message_wins_where_both_object(reference: dict[str, Any]) -> None:
    # The schema refuses these too; conveyor's checks name the allowed values and variants.
    data = _with(reference, lambda data, flag: flag.update(state="enabled"))
    with pytest.raises(FlagError, match=r"\.state\]: expected one of ENABLED, DISABLED$"):
        flags.validate(data, "f.json")
    data = _with(reference, _fraction(["on", 2.5], ["off", 97.5]))
    with pytest.raises(FlagError, match=r"fractional\[0\]\]: expected \[variant, whole weight"):
        flags.validate(data, "f.json")


def test_a_remembered_verdict_names_each_file_and_flag(reference: dict[str, Any]) -> None:
    bad = copy.deepcopy(reference["flags"][FLAG])
    bad["variants"]["off"] = None
    for source, name in [("a.json", "first"), ("b.json", "second"), ("a.json", "first")]:
        with pytest.raises(FlagError, match=rf"^{source} \[flags\.{name}\.variants\]: "):
            flags.validate({"flags": {"good": reference["flags"][FLAG], name: bad}}, source)
    flags.validate(reference, "backend/flags.json")


def test_validation_never_touches_the_network(
    reference: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"flag validation opened a connection: {args} {kwargs}")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    # From a cold start: the schema files are read and every $ref (flags.json to
    # targeting.json, and within each) is resolved while the network is refused.
    flags._validators.cache_clear()
    flags._canonical_flag_problem.cache_clear()
    shared = {"$evaluators": {"beta": {"in": ["@example.com", {"var": "email"}]}}}
    split = {"fractional": [["on", 5], ["off", 95]]}
    data = _with(
        reference,
        lambda data, flag: (
            data.update(shared),
            flag.update(targeting={"if": [{"$ref": "beta"}, "on", split]}),
        ),
    )
    flags.validate(data, "f.json")
    flags.validate(reference, "backend/flags.json")
    data["flags"][FLAG]["targeting"]["if"][0] = {"sem_ver": [{"var": "v"}, "=>", "1.0.0"]}
    with pytest.raises(FlagError, match=r"sem_ver\[1\]\]: '=>' is not one of"):
        flags.validate(data, "f.json")
