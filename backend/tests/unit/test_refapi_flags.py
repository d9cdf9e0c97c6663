"""Feature flags in the app: the file provider, the targeting key, /api/flags, /metrics and the
flag-on-fails fault. Everything runs the real app (lifespan included) and the real evaluator;
the flag file is replaced the way conveyor replaces it: write beside it, then rename."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from refapi.app import create_app
from refapi.database import create_engine
from refapi.flagfile import PACKAGED, POLL_INTERVAL, packaged_definitions, parse
from refapi.flags import NEW_NOTES_VIEW, SESSION_COOKIE
from refapi.settings import Fault, Settings, database_url

REPO_FLAGS = Path(__file__).resolve().parents[2] / "flags.json"
# The contract with conveyor: a change reaches a running service within this bound.
PICKUP_BOUND = 2.0

MakeClient = Callable[..., TestClient]


def definitions_at(percent: int) -> dict[str, Any]:
    """The repo's definitions with new-notes-view given to `percent` percent of people."""
    definitions = copy.deepcopy(json.loads(REPO_FLAGS.read_text()))
    flag = definitions["flags"][NEW_NOTES_VIEW]
    flag["targeting"] = {"fractional": [["on", percent], ["off", 100 - percent]]}
    return definitions


def replace_file(path: Path, content: bytes, *, mtime_ns: int | None = None) -> None:
    """Write then rename, as conveyor does; optionally stamp a given modification time."""
    incoming = path.with_name(f".incoming-{time.time_ns()}")
    incoming.write_bytes(content)
    if mtime_ns is not None:
        os.utime(incoming, ns=(mtime_ns, mtime_ns))
    os.replace(incoming, path)


def write_flags(path: Path, percent: int, *, mtime_ns: int | None = None) -> None:
    replace_file(path, json.dumps(definitions_at(percent)).encode(), mtime_ns=mtime_ns)


_evaluators: dict[int, Any] = {}


def is_on(percent: int, key: str) -> bool:
    """What flagd's evaluator gives `key` at `percent` (no app involved)."""
    if percent not in _evaluators:
        raw = json.dumps(definitions_at(percent)).encode()
        _evaluators[percent] = parse(raw, f"{percent}%").evaluator
    return bool(_evaluators[percent].resolve_boolean_value(NEW_NOTES_VIEW, False, _ctx(key)).value)


def _ctx(key: str) -> Any:
    from openfeature.evaluation_context import EvaluationContext

    return EvaluationContext(targeting_key=key)


def user_with(predicate: Callable[[str], bool]) -> str:
    return next(key for n in itertools.count() if predicate(key := f"user-{n}"))


def flag_for(client: TestClient, user: str) -> bool:
    response = client.get("/api/flags", headers={"X-User": user})
    assert response.status_code == 200, response.text
    value: bool = response.json()["flags"][NEW_NOTES_VIEW]
    return value


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    """Seconds until `condition` held; fails the test after `timeout`."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - began


def metric(client: TestClient, name: str, **labels: str) -> int:
    text = client.get("/metrics").text
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    match = re.search(rf"^{name}{{{re.escape(wanted)}}} (\d+)$", text, re.MULTILINE)
    assert match, f"no {name}{{{wanted}}} in\n{text}"
    return int(match.group(1))


@pytest.fixture
def flags_file(tmp_path: Path) -> Path:
    folder = tmp_path / "flags"
    folder.mkdir()
    return folder / "api.json"


# --- the definitions in the repo -------------------------------------------------------------


def test_the_repo_defines_new_notes_view_dark_and_rampable() -> None:
    definitions = json.loads(REPO_FLAGS.read_text())

    assert definitions["$schema"] == "https://flagd.dev/schema/v0/flags.json"
    assert definitions["flags"][NEW_NOTES_VIEW] == {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
        # The on-variant first and weights summing to 100: raising P only adds people.
        "targeting": {"fractional": [["on", 0], ["off", 100]]},
    }


def test_the_packaged_definitions_are_the_repo_file() -> None:
    assert packaged_definitions() == REPO_FLAGS.read_bytes()


# --- reading the definitions -----------------------------------------------------------------


def test_without_flags_file_the_packaged_definitions_are_served(client: TestClient) -> None:
    assert flag_for(client, "anyone") is False
    text = client.get("/metrics").text
    sha = hashlib.sha256(REPO_FLAGS.read_bytes()).hexdigest()
    assert f'refapi_flag_definitions_info{{sha256="{sha}",source="{PACKAGED}"}} 1' in text
    assert "refapi_flag_definitions_stale 0" in text


def test_the_flags_file_is_evaluated_from_the_start(
    make_client: MakeClient, flags_file: Path
) -> None:
    write_flags(flags_file, 100)

    client = make_client(flags_file=flags_file)

    assert flag_for(client, "anyone") is True
    assert f'source="{flags_file}"' in client.get("/metrics").text


def test_a_missing_flags_file_serves_the_packaged_defaults_then_the_file_once_written(
    make_client: MakeClient, flags_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="refapi.flags")
    client = make_client(flags_file=flags_file)

    assert flag_for(client, "anyone") is False
    assert "refapi_flag_definitions_stale 1" in client.get("/metrics").text
    time.sleep(3 * POLL_INTERVAL)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"refapi: flags file {flags_file}: no such file; serving the packaged defaults"
    ]

    write_flags(flags_file, 100)

    assert wait_until(lambda: flag_for(client, "anyone")) < PICKUP_BOUND
    assert "refapi_flag_definitions_stale 0" in client.get("/metrics").text


def test_a_change_is_picked_up_within_the_bound_with_no_failed_request(
    make_client: MakeClient, flags_file: Path
) -> None:
    write_flags(flags_file, 0)
    client = make_client(flags_file=flags_file)
    assert flag_for(client, "anyone") is False
    statuses: list[int] = []

    def turned_on() -> bool:
        response = client.get("/api/flags", headers={"X-User": "anyone"})
        statuses.append(response.status_code)
        statuses.append(client.get("/api/notes", headers={"X-User": "anyone"}).status_code)
        return bool(response.json()["flags"][NEW_NOTES_VIEW])

    write_flags(flags_file, 100)
    seconds = wait_until(turned_on)

    assert seconds < PICKUP_BOUND
    assert set(statuses) == {200}


def test_two_changes_within_one_second_with_the_same_mtime_and_size_are_both_seen(
    make_client: MakeClient, flags_file: Path
) -> None:
    # 1% and 99% files have the same size; pinning the mtime to one whole second is what an
    # archive upload does, so only the content tells the versions apart.
    user = user_with(lambda key: not is_on(1, key) and is_on(99, key))
    write_flags(flags_file, 1)
    one_second = (flags_file.stat().st_mtime_ns // 10**9) * 10**9
    os.utime(flags_file, ns=(one_second, one_second))
    client = make_client(flags_file=flags_file)
    assert flag_for(client, user) is False

    first = time.monotonic()
    write_flags(flags_file, 99, mtime_ns=one_second)
    assert wait_until(lambda: flag_for(client, user)) < PICKUP_BOUND
    second = time.monotonic()
    write_flags(flags_file, 1, mtime_ns=one_second)
    assert wait_until(lambda: not flag_for(client, user)) < PICKUP_BOUND

    assert second - first < 1.0
    assert flags_file.stat().st_mtime_ns == one_second


def test_a_corrupt_file_keeps_the_last_good_values_and_says_so_once(
    make_client: MakeClient, flags_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_flags(flags_file, 100)
    client = make_client(flags_file=flags_file)
    assert flag_for(client, "anyone") is True
    caplog.set_level(logging.INFO, logger="refapi.flags")

    replace_file(flags_file, b'{"flags": {"new-notes-view": ')
    statuses = []
    deadline = time.monotonic() + 4 * POLL_INTERVAL
    while time.monotonic() < deadline:
        response = client.get("/api/flags", headers={"X-User": "anyone"})
        statuses.append(response.status_code)
        assert response.json()["flags"][NEW_NOTES_VIEW] is True
        time.sleep(0.05)

    assert set(statuses) == {200}
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].exc_info is None
    message = warnings[0].getMessage()
    assert message.startswith(f"refapi: flags file {flags_file}: not JSON (")
    assert message.endswith("; serving the last good flags")
    assert "\n" not in message
    assert "refapi_flag_definitions_stale 1" in client.get("/metrics").text

    write_flags(flags_file, 0)

    assert wait_until(lambda: not flag_for(client, "anyone")) < PICKUP_BOUND
    assert "refapi_flag_definitions_stale 0" in client.get("/metrics").text


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"\xff\xfe not text", "not UTF-8 text"),
        (b'{"flags": ', "not JSON (Expecting value: line 1 column 11"),
        (b"[]", "expected a JSON object with a 'flags' object"),
        (b'{"flags": []}', "expected a JSON object with a 'flags' object"),
        (b'{"flags": {"f": {"state": "ON", "variants": {"a": 1}}}}', "not flagd's flag format"),
        (b'{"flags": {"f": {"state": "ENABLED"}}}', "not flagd's flag format"),
    ],
)
def test_definitions_flagd_would_refuse_are_refused(content: bytes, why: str) -> None:
    from refapi.flagfile import FlagFileError

    with pytest.raises(FlagFileError, match=re.escape(why)):
        parse(content, "test")


def test_a_bad_file_at_start_serves_the_packaged_defaults(
    make_client: MakeClient, flags_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="refapi.flags")
    replace_file(flags_file, b"not json")

    client = make_client(flags_file=flags_file)

    assert flag_for(client, "anyone") is False
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].endswith("; serving the packaged defaults")


# --- who is asking -----------------------------------------------------------------------------


def test_api_flags_sets_a_session_cookie_once_and_keeps_its_answer(client: TestClient) -> None:
    first = client.get("/api/flags")

    cookie = first.headers["set-cookie"]
    assert re.fullmatch(
        rf"{SESSION_COOKIE}=[A-Za-z0-9_-]{{22}}; Max-Age=31536000; Path=/; HttpOnly; SameSite=Lax",
        cookie,
    )
    key = first.json()["key"]
    assert cookie.startswith(f"{SESSION_COOKIE}={key};")
    assert first.json() == {"flags": {NEW_NOTES_VIEW: False}, "key": key}
    for _ in range(5):  # the TestClient sends the cookie back, as a browser does
        again = client.get("/api/flags")
        assert again.json() == first.json()
        assert "set-cookie" not in again.headers


def test_the_x_user_header_wins_over_the_cookie(client: TestClient) -> None:
    session = client.get("/api/flags").json()["key"]

    assert client.get("/api/flags", headers={"X-User": "ada"}).json()["key"] == "ada"
    assert client.get("/api/flags").json()["key"] == session


def test_a_forged_session_cookie_is_replaced(client: TestClient) -> None:
    client.cookies.set(SESSION_COOKIE, "x")

    response = client.get("/api/flags")

    assert response.json()["key"] != "x"
    assert response.headers["set-cookie"].startswith(f"{SESSION_COOKIE}={response.json()['key']};")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_and_metrics_set_no_cookie(client: TestClient, path: str) -> None:
    assert "set-cookie" not in client.get(path).headers


def test_the_same_person_gets_the_same_variant_every_time_and_after_a_restart(
    make_client: MakeClient, flags_file: Path
) -> None:
    write_flags(flags_file, 50)
    users = [f"person-{n}" for n in range(200)]
    first = make_client(flags_file=flags_file)
    seen = {user: flag_for(first, user) for user in users}

    second = make_client(flags_file=flags_file)

    assert {user: flag_for(first, user) for user in users} == seen
    assert {user: flag_for(second, user) for user in users} == seen
    assert seen == {user: is_on(50, user) for user in users}
    assert 70 < sum(seen.values()) < 130


# --- ramps only add people ---------------------------------------------------------------------

RAMP = (0, 1, 5, 25, 50, 99, 100)


@settings(max_examples=2000, deadline=None)
@given(key=st.text(min_size=1, max_size=64))
def test_raising_the_percentage_never_turns_anyone_off(key: str) -> None:
    on = [is_on(percent, key) for percent in RAMP]

    # Off up to some step, then on for good: sorted ascending.
    assert on == sorted(on)
    assert (on[0], on[-1]) == (False, True)


def test_a_ramp_5_25_50_over_10000_keys_only_adds_people_in_the_right_shares() -> None:
    keys = [f"session-{n}" for n in range(10_000)]

    on = {percent: {key for key in keys if is_on(percent, key)} for percent in (5, 25, 50)}

    assert on[5] <= on[25] <= on[50]
    for percent, people in on.items():
        assert abs(len(people) / len(keys) - percent / 100) < 0.02, (percent, len(people))


# --- metrics by variant -------------------------------------------------------------------------


def test_metrics_count_requests_and_errors_by_variant(
    make_client: MakeClient, flags_file: Path
) -> None:
    write_flags(flags_file, 50)
    on_user = user_with(lambda key: is_on(50, key))
    off_user = user_with(lambda key: not is_on(50, key))
    client = make_client(flags_file=flags_file, fault=Fault("flag-on-fails"))

    assert metric(client, "refapi_flag_requests_total", flag=NEW_NOTES_VIEW, variant="on") == 0
    for _ in range(3):
        assert client.get("/api/notes", headers={"X-User": on_user}).status_code == 500
    for _ in range(4):
        assert client.get("/api/notes", headers={"X-User": off_user}).status_code == 200
    created = client.post("/api/notes", json={"text": "x"}, headers={"X-User": off_user})
    assert created.status_code == 201
    # Neither the probes, /metrics, nor a request that evaluates no flag is counted.
    for path in ("/healthz", "/readyz", "/metrics", "/api/version"):
        client.get(path, headers={"X-User": on_user})

    text = client.get("/metrics").text
    assert "# TYPE refapi_flag_requests_total counter" in text
    assert "# TYPE refapi_flag_errors_total counter" in text
    assert metric(client, "refapi_flag_requests_total", flag=NEW_NOTES_VIEW, variant="on") == 3
    assert metric(client, "refapi_flag_errors_total", flag=NEW_NOTES_VIEW, variant="on") == 3
    assert metric(client, "refapi_flag_requests_total", flag=NEW_NOTES_VIEW, variant="off") == 5
    assert metric(client, "refapi_flag_errors_total", flag=NEW_NOTES_VIEW, variant="off") == 0
    assert client.get("/metrics").headers["content-type"] == (
        "text/plain; version=0.0.4; charset=utf-8"
    )


def test_an_exception_counts_as_an_error_of_the_variant_served(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    unreachable = database_url(f"sqlite:///{tmp_path / 'missing-dir' / 'refapi.db'}")
    settings = make_settings(database_url=unreachable)
    engine = create_engine(settings.database_url)
    app = create_app(settings, engine)

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/api/notes", headers={"X-User": "ada"}).status_code == 500

        assert metric(client, "refapi_flag_requests_total", flag=NEW_NOTES_VIEW, variant="off") == 1
        assert metric(client, "refapi_flag_errors_total", flag=NEW_NOTES_VIEW, variant="off") == 1
    engine.dispose()


def test_fault_flag_on_fails_fails_only_the_on_variant(
    make_client: MakeClient, flags_file: Path
) -> None:
    write_flags(flags_file, 50)
    on_user = user_with(lambda key: is_on(50, key))
    off_user = user_with(lambda key: not is_on(50, key))
    client = make_client(flags_file=flags_file, fault=Fault("flag-on-fails"))

    failed = client.get("/api/notes", headers={"X-User": on_user})

    assert failed.status_code == 500
    assert failed.json() == {"detail": "fault injected: flag-on-fails"}
    assert client.get("/api/flags", headers={"X-User": on_user}).status_code == 500
    assert client.get("/api/notes", headers={"X-User": off_user}).status_code == 200
    assert flag_for(client, off_user) is False
    assert client.get("/readyz").status_code == 200
    assert client.get("/api/version", headers={"X-User": on_user}).status_code == 200
