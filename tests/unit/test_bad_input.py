"""Bad input, everywhere: hostile deploy.toml documents, command lines, ledger events and
approval records end in a typed conveyor error (or a refusal), never a traceback, and write
nothing.

Each property draws its inputs with Hypothesis; the counts below keep the file to seconds.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import shutil
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from conveyor import approvals, cli, config, ledger, terms
from conveyor.errors import ConfigError, UsageError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = tomllib.loads((ROOT / "deploy.toml").read_text(encoding="utf-8"))
SOURCE = "deploy.toml"

# No example database: a run leaves nothing in the working tree.
PROPERTY = settings(
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --- values a TOML document can hold --------------------------------------------------------

# Names the loaders know, so random documents reach past the first table.
KNOWN_KEYS = sorted(
    {"project", "build", "registry", "artifacts", "images", "notifications", "environments"}
    | {"staging", "production", "api", "web", "router", "hosts", "services", "ports", "blue"}
    | {"green", "health", "env", "secrets", "volumes", "migrations", "backup", "approval"}
    | {"timeouts", "keep_warm", "keep_releases", "promote_from", "docker", "fallback", "from"}
    | {"as", "image", "route", "kind", "dockerfile", "migrate", "urls", "events", "name"}
)
keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=12)
leaves = (
    st.text(max_size=20)
    | st.sampled_from(["env:X", "file:/x", "local", "unix:///x", "/", "10m", "-1s", "nan", ""])
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.integers(min_value=-2, max_value=70000)
    | st.integers(min_value=10**308, max_value=10**400)  # tomllib reads any integer
    | st.floats()  # TOML has nan and inf
    | st.booleans()
    | st.datetimes()
    | st.datetimes(timezones=st.timezones())
    | st.dates()
    | st.times()
)
toml_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)
documents = st.dictionaries(keys, toml_values, max_size=6)


def parses_or_names_a_key(data: Any) -> None:
    """The property: a Config, or a ConfigError/UsageError whose message starts with the key
    path. Anything else (a TypeError, a KeyError, ...) escapes and fails the test."""
    try:
        config.parse(data, Path(SOURCE))
        outcome = "parsed"
    except (ConfigError, UsageError) as exc:
        message = str(exc)
        assert message.startswith(f"{SOURCE} ["), message
        assert "\n" not in message, message
        where = message.partition("[")[2].partition("]")[0].partition(".")[0]
        outcome = f"refused at [{where if where in KNOWN_KEYS else '...'}]"
    if currently_in_test_context():
        event(outcome)


@settings(PROPERTY, max_examples=100)
@given(documents)
def test_a_random_document_parses_or_fails_with_a_key_path(document: dict[str, Any]) -> None:
    parses_or_names_a_key(document)


def _mutate(doc: dict[str, Any], data: st.DataObject) -> None:
    """Walk to a random table or array of ``doc`` and remove, retype, rename or add one entry."""
    node: Any = doc
    while True:
        here = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not here:
            break
        key = data.draw(st.sampled_from(here), label="key")
        child = node[key]
        if isinstance(child, dict | list) and child and data.draw(st.booleans(), label="deeper"):
            node = child
            continue
        action = data.draw(st.sampled_from(["remove", "retype", "rename", "add"]), label="do")
        if action == "remove":
            del node[key]
        elif action == "retype":
            node[key] = data.draw(toml_values, label="value")
        elif action == "rename" and isinstance(node, dict):
            node[data.draw(keys, label="new name")] = node.pop(key)
        if action != "add":
            return
        break
    value = data.draw(toml_values, label="added")
    if isinstance(node, dict):
        node[data.draw(keys, label="added key")] = value
    else:
        node.append(value)


@settings(PROPERTY, max_examples=300)
@given(st.data())
def test_the_shipped_file_with_one_change_parses_or_fails_with_a_key_path(
    data: st.DataObject,
) -> None:
    doc = copy.deepcopy(SHIPPED)
    _mutate(doc, data)
    parses_or_names_a_key(doc)


# The values most likely to slip past a check: no float holds the first, NaN compares false.
EDGE_VALUES = [10**400, -(10**400), math.nan, math.inf, -math.inf, -1, 0, "", "\n\x1b[2J", [], {}]


def _leaf_paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in items:
        if isinstance(child, dict | list) and child:
            yield from _leaf_paths(child, (*path, key))
        else:
            yield (*path, key)


def test_every_value_of_the_shipped_file_set_to_an_edge_value_names_its_key() -> None:
    """Exhaustive where random draws are thin: each leaf of deploy.toml, each edge value."""
    for path in _leaf_paths(SHIPPED):
        for value in EDGE_VALUES:
            doc = copy.deepcopy(SHIPPED)
            node = doc
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
            parses_or_names_a_key(doc)


def test_the_shipped_file_itself_parses() -> None:
    assert config.parse(SHIPPED, Path(SOURCE)).environments


# Bytes that are sometimes TOML: the characters of its grammar, and raw noise.
TOML_TEXT = st.text(alphabet="[]{}=.,\"'#\n abcz019_-+:eE\\", max_size=60)


@settings(PROPERTY, max_examples=100)
@given(
    TOML_TEXT.map(str.encode)
    | st.binary(max_size=60)
    | st.sampled_from(
        [b"\xff\xfe", "a = 1\n".encode("utf-16"), b"a = " + b"9" * 400, b"a = " + b"9" * 5000]
    )
)
def test_a_file_of_random_bytes_is_a_config_error(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / SOURCE
        path.write_bytes(raw)
        try:
            config.load(path)
        except ConfigError as exc:
            assert str(exc).startswith(SOURCE), exc


@pytest.mark.parametrize("where", ["missing.toml", ".", "/dev/null/x"])
def test_a_config_path_that_is_no_file_is_a_config_error(where: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        config.load(tmp_path / where if where != "." else tmp_path)


# --- command lines ---------------------------------------------------------------------------

# Commands that would do real work on this machine (build, pull, scan, install) are left out.
WORKING = {"build", "image", "scan", "advisories", "setup", "migrations-lint"}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


COMMANDS = {
    name: parser for name, parser in _subcommands(cli.build_parser()).items() if name not in WORKING
}
OPTIONS = sorted(
    {"--config", "--help"}
    | {
        option
        for parser in COMMANDS.values()
        for action in parser._actions
        for option in action.option_strings
    }
)
# What a shell can pass: no NUL (argv is C strings), no lone surrogates.
arg_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=20,
)
tokens = (
    st.sampled_from(OPTIONS)
    | st.sampled_from(["staging", "production", "qa", "r0001", "staging:r0001", "abc123def456"])
    | st.sampled_from(["-", "--", "-1", "0", "nan", "inf", "1e999", ".", "/", "/dev/null", "../"])
    | st.sampled_from(["verify", "list", "prune", "push", "pull_request", "main", "b-1"])
    | st.integers().map(str)
    | arg_text
)
# Values an option may be given: a plausible one, a number, or anything a shell passes.
values = (
    st.sampled_from(["staging", "production", "qa", "r0001", "staging:r0001", "abc123def456"])
    | st.sampled_from(["0", "-1", "2.5", "nan", "inf", "1e999", ".", "/", "/dev/null", "../"])
    | arg_text
)
config_paths = st.sampled_from(["deploy.toml", ".", "/", "/dev/null", "nothing.toml"]) | arg_text


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    """Mostly well-formed: a real command with its required options and some of the others,
    each given a hostile value; sometimes any tokens at all."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.lists(tokens, max_size=6))
    argv = ["--config", draw(config_paths)] if draw(st.integers(0, 5)) == 0 else []
    parser = draw(st.sampled_from(sorted(COMMANDS.items()))).__getitem__(1)
    argv.append(parser.prog.split()[-1])
    while subcommands := _subcommands(parser):  # artifacts ACTION
        name, parser = draw(st.sampled_from(sorted(subcommands.items())))
        argv.append(name)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not (
            action.required or not action.option_strings or draw(st.booleans())
        ):
            continue
        argv += action.option_strings[:1]
        if action.nargs != 0:
            choices = st.sampled_from(sorted(action.choices)) if action.choices else values
            argv.append(draw(choices | values))
    return argv + (draw(st.lists(tokens, max_size=2)) if draw(st.integers(0, 5)) == 0 else [])


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A copy of deploy.toml in an empty folder (the working directory), no Docker engine
    reachable, no CI, no key; CONVEYOR_DEBUG=1 lets a non-conveyor exception escape."""
    shutil.copy(ROOT / "deploy.toml", tmp_path / "deploy.toml")
    for name in list(os.environ):
        if name.startswith(("GITHUB_", "CONVEYOR_", "DOCKER_")) or name == "CI":
            monkeypatch.delenv(name)
    nowhere = "unix:///nonexistent/docker.sock"
    monkeypatch.setenv("DOCKER_HOST", nowhere)
    monkeypatch.setenv("CONVEYOR_PRODUCTION_DOCKER_HOST", nowhere)
    monkeypatch.setenv("CONVEYOR_CONFIG", str(tmp_path / "deploy.toml"))
    monkeypatch.setenv("CONVEYOR_DEBUG", "1")
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@settings(PROPERTY, max_examples=150)
@given(argv=command_lines())
def test_any_command_line_ends_in_an_exit_code_and_one_line(
    argv: list[str], no_engine: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _files(no_engine)
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse: a usage error (2) or --help (0)
        event(f"argparse exit {exit_.code}")
        assert isinstance(exit_.code, int)
        # argparse's "conveyor deploy: error: ..." (it echoes the argument as typed).
        assert exit_.code == 0 or ": error: " in capsys.readouterr().err
        return
    assert isinstance(code, int)
    err = capsys.readouterr().err
    event(f"{next((a for a in argv if a in COMMANDS), '?')} exit {code}")
    if code != 0:
        # One line from conveyor: a typed error (any other escapes, CONVEYOR_DEBUG=1).
        last = err.splitlines()[-1]
        assert last.startswith("conveyor: ") and err.endswith(last + "\n"), err
    assert _files(no_engine) == before, "a failed command wrote files"


# --- ledger events --------------------------------------------------------------------------


class MemoryStore:
    """The state volume's write/read_tree surface in a dict; counts writes."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.writes = 0

    def write(self, path: str, data: bytes) -> None:
        self.writes += 1
        self.files[path] = data

    def read_tree(self, path: str) -> dict[str, bytes]:
        return {k: v for k, v in self.files.items() if k.startswith(path + "/")}


def seal(payload: Any) -> bytes:
    """A well-sealed event around any payload: only its content is hostile."""
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return json.dumps({"sha256": hashlib.sha256(body).hexdigest(), "record": payload}).encode()


GOOD_RECORD: dict[str, Any] = ledger.ReleaseRecord(
    id="r0001",
    environment="staging",
    kind=terms.DEPLOY,
    version="1.0",
    commit="c" * 40,
    services={"api": {"image_id": "sha256:a"}},
    who="tester",
    started=1.0,
    ended=2.0,
    outcome=terms.SUCCEEDED,
).as_dict()

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats()
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def hostile_records(draw: st.DrawFn) -> Any:
    """A real record with fields removed or retyped, or something that is no record at all."""
    if draw(st.integers(0, 4)) == 0:
        return draw(json_values)
    record = dict(GOOD_RECORD)
    for name in draw(st.lists(st.sampled_from(sorted(record)), max_size=4)):
        if draw(st.booleans()):
            record.pop(name, None)
        else:
            record[name] = draw(json_values)
    return record


raw_events = (
    st.binary(max_size=80)
    | st.sampled_from([b"[" * 100_000, b'{"record": ' * 5000, b"\xff", b"null", b"{}", b"[]"])
    | json_values.map(lambda v: json.dumps(v).encode())
)


@pytest.mark.parametrize("key", ["", "k" * 32], ids=["checksum", "signed"])
@settings(PROPERTY, max_examples=100)
@given(
    events=st.lists(st.tuples(hostile_records().map(seal) | raw_events, st.booleans()), max_size=4)
)
def test_hostile_ledger_events_are_reported_and_nothing_is_written(
    key: str, events: list[tuple[bytes, bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hostile events beside a genuine one (the newest, so that with a key every hostile,
    unsigned event is judged by the times its payload claims)."""
    monkeypatch.setenv(ledger.LEDGER_KEY_ENV, key)
    genuine = f"ledger/r0001/{10**19:020d}-aaaaaa-succeeded.json"
    files = {genuine: ledger._seal(GOOD_RECORD)}
    for index, (raw, same_release) in enumerate(events, start=2):
        release = "r0001" if same_release else f"r{index:04d}"
        files[f"ledger/{release}/{index:020d}-bbbbbb-x.json"] = raw
    store = MemoryStore(files)
    book = ledger.Ledger(store)  # type: ignore[arg-type]
    records = book.records()
    assert store.writes == 0 and store.files == files
    for record in records:
        assert isinstance(record.id, str) and isinstance(record.started, int | float)
        assert isinstance(record.services, dict) and isinstance(record.phases, dict)
        record.digests(), record.is_verified, record.duration
    ledger.lineage(records)
    # One record per release folder with a readable event; every other event is reported.
    rejected = set(book.unreadable) | set(book.forged)
    folders: dict[str, set[str]] = {}
    for path in files:
        folders.setdefault(path.split("/")[1], set()).add(path)
    readable = [name for name, paths in folders.items() if not paths <= rejected]
    assert len(records) == len(readable), (records, rejected)
    # The genuine release always stands, beside a hostile neighbour or a hostile event.
    assert genuine not in rejected and "r0001" in readable


@settings(PROPERTY, max_examples=200)
@given(hostile_records())
def test_from_dict_makes_a_usable_record_or_raises_value_error(data: Any) -> None:
    try:
        record = ledger.ReleaseRecord.from_dict(data)
    except ValueError:
        return
    ledger.lineage([record])
    record.digests(), record.duration


# --- approval records ------------------------------------------------------------------------

GOOD_APPROVAL: dict[str, Any] = {
    "id": "a-1",
    "environment": "production",
    "key": "k" * 64,
    "digests": {"api": "sha256:a"},
    "version": "1.0",
    "commit": "c" * 40,
    "approver": "alice",
    "at": 1000.0,
    "expires": 1000.0 + 3600,
    "method": "ledger",
}


@st.composite
def hostile_approvals(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 4)) == 0:
        return draw(json_values)
    approval = dict(GOOD_APPROVAL)
    for name in draw(st.lists(st.sampled_from([*approval, "migrations", "note"]), max_size=3)):
        if draw(st.booleans()):
            approval.pop(name, None)
        else:
            approval[name] = draw(
                json_values | st.sampled_from([math.nan, math.inf, -math.inf, 10**400])
            )
    return approval


@settings(PROPERTY, max_examples=200)
@given(st.lists(hostile_approvals(), max_size=3), st.floats(0, 1e10))
def test_hostile_approval_records_are_refused_not_tracebacks(
    records: list[Any], now: float
) -> None:
    events = [{"kind": approvals.AUDIT_KIND, "approval": r} for r in records]
    found = approvals.recorded(events, "production")
    policy = config.Approval(allow_self_approval=True)
    verdict = approvals.evaluate(policy, {"api": "sha256:a"}, "bob", found, now=now)
    if verdict.approval is not None:
        # An approval that counts was given, and has not expired, on a real clock.
        assert math.isfinite(verdict.approval.at) and math.isfinite(verdict.approval.expires)
        assert verdict.approval.at <= now + 300 < verdict.approval.expires + 300


@settings(PROPERTY, max_examples=80)
@given(st.lists(hostile_approvals().map(lambda a: {"kind": "approval", "approval": a}), max_size=3))
def test_hostile_approvals_in_the_audit_trail_are_read_without_writing(
    payloads: list[Any],
) -> None:
    files = {f"audit/{i:020d}-cccccc-approval.json": seal(p) for i, p in enumerate(payloads)}
    store = MemoryStore(files)
    events = ledger.Ledger(store).audit_events(signed_only=True)  # type: ignore[arg-type]
    approvals.recorded(events, "production")
    assert store.writes == 0


def test_a_nan_dated_approval_never_counts() -> None:
    """NaN compares false with everything: it must not slip past the expiry checks."""
    forged = dict(GOOD_APPROVAL, at=math.nan, expires=math.nan)
    assert approvals.ApprovalRecord.from_dict(forged) is None
