"""The offline OSV mirror: OSV range semantics, loading, and the /v1/query API on 127.0.0.1."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conveyor.scanners import advisories
from conveyor.scanners.advisories import AdvisoryDB, AdvisoryError, affects, canonical_name


def advisory(ident: str, name: str, *ranges: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    return {
        "id": ident,
        "affected": [
            {
                "package": {"name": name, "ecosystem": "PyPI"},
                "ranges": [{"type": "ECOSYSTEM", "events": events} for events in ranges],
                **({"versions": extra.pop("versions")} if "versions" in extra else {}),
            }
        ],
        **extra,
    }


@pytest.mark.parametrize(
    ("version", "expected"),
    [("0.1", True), ("2.19.0", True), ("2.20.0", False), ("2.20.1", False), ("3.0", False)],
)
def test_introduced_zero_fixed_is_half_open(version: str, expected: bool) -> None:
    entry = advisory("PYSEC-1", "requests", [{"introduced": "0"}, {"fixed": "2.20.0"}])
    assert affects(entry, "requests", version) is expected


@pytest.mark.parametrize(
    ("version", "expected"),
    [("1.0", False), ("1.5", True), ("2.0", False), ("2.5", False), ("3.0", True), ("3.1", True)],
)
def test_several_introduced_fixed_pairs(version: str, expected: bool) -> None:
    events = [{"introduced": "1.5"}, {"fixed": "2.0"}, {"introduced": "3.0"}]
    assert affects(advisory("X", "pkg", events), "pkg", version) is expected


def test_last_affected_is_inclusive() -> None:
    entry = advisory("X", "pkg", [{"introduced": "1.0"}, {"last_affected": "1.4"}])
    assert affects(entry, "pkg", "1.4")
    assert not affects(entry, "pkg", "1.4.1")
    assert not affects(entry, "pkg", "0.9")


def test_prereleases_order_by_pep_440() -> None:
    entry = advisory("X", "pkg", [{"introduced": "0"}, {"fixed": "2.0.0"}])
    assert affects(entry, "pkg", "2.0.0rc1")
    assert not affects(entry, "pkg", "2.0.0.post1")


def test_listed_versions_count_even_outside_ranges() -> None:
    entry = advisory("X", "pkg", [{"introduced": "5.0"}], versions=["1.0", "not-pep440"])
    assert affects(entry, "pkg", "1.0")
    assert affects(entry, "pkg", "1.0.0")  # the same PEP 440 version
    assert affects(entry, "pkg", "not-pep440")
    assert not affects(entry, "pkg", "2.0")


def test_withdrawn_other_ecosystems_and_other_packages_never_match() -> None:
    events = [{"introduced": "0"}]
    assert not affects(advisory("X", "pkg", events, withdrawn="2024-01-01"), "pkg", "1.0")
    assert not affects(advisory("X", "other", events), "pkg", "1.0")
    npm = advisory("X", "pkg", events)
    npm["affected"][0]["package"]["ecosystem"] = "npm"
    assert not affects(npm, "pkg", "1.0")


def test_git_ranges_are_ignored_and_unparseable_versions_skip_comparison() -> None:
    entry = {
        "id": "X",
        "affected": [
            {
                "package": {"name": "pkg", "ecosystem": "PyPI"},
                "ranges": [{"type": "GIT", "events": [{"introduced": "0"}, {"fixed": "abc123"}]}],
            }
        ],
    }
    assert not affects(entry, "pkg", "1.0")
    assert not affects(entry, "pkg", "weird version")


def test_names_are_compared_canonically() -> None:
    assert canonical_name("Flask_Caching") == canonical_name("flask.caching") == "flask-caching"
    entry = advisory("X", "Flask_Caching", [{"introduced": "0"}])
    assert affects(entry, "flask-caching", "1.0")


def write_db(folder: Path, *entries: dict[str, Any]) -> Path:
    for entry in entries:
        name = entry["affected"][0]["package"]["name"]
        target = folder / "vulns" / name / f"{entry['id']}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(entry), encoding="utf-8")
    (folder / "SNAPSHOT").write_text("snapshot for tests\n", encoding="utf-8")
    (folder / "README.json").write_text('{"not": "an advisory"}', encoding="utf-8")
    return folder


@pytest.fixture
def db(tmp_path: Path) -> AdvisoryDB:
    return AdvisoryDB.load(
        write_db(
            tmp_path,
            advisory("PYSEC-2018-28", "requests", [{"introduced": "0"}, {"fixed": "2.20.0"}],
                     aliases=["CVE-2018-18074"]),
            advisory("PYSEC-2023-74", "requests", [{"introduced": "2.3.0"}, {"fixed": "2.31.0"}]),
            advisory("PYSEC-2000-1", "Django", [{"introduced": "0"}, {"fixed": "1.0"}]),
        )
    )  # fmt: skip


def test_load_indexes_by_canonical_name_and_skips_non_advisories(db: AdvisoryDB) -> None:
    assert db.count == 3
    assert sorted(db.by_package) == ["django", "requests"]
    assert db.snapshot == "snapshot for tests"
    assert [a["id"] for a in db.query("Requests", "2.19.0")] == ["PYSEC-2018-28", "PYSEC-2023-74"]
    assert [a["id"] for a in db.query("requests", "2.25.0")] == ["PYSEC-2023-74"]
    assert db.query("requests", "2.31.0") == []
    assert db.query("unknown", "1.0") == []


def test_load_fails_clearly_on_a_missing_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(AdvisoryError, match=r"no advisory database at .*CONVEYOR_ADVISORY_DB"):
        AdvisoryDB.load(tmp_path / "nowhere")
    with pytest.raises(AdvisoryError, match="holds no OSV advisories"):
        AdvisoryDB.load(tmp_path)


def test_default_db_is_beside_the_checkout_unless_overridden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(advisories.ENV_DB, raising=False)
    root = tmp_path / "main"
    assert advisories.default_db(root) == tmp_path / "shared/advisories/pypa-advisory-database"
    monkeypatch.setenv(advisories.ENV_DB, "/somewhere/else")
    assert advisories.default_db(root) == Path("/somewhere/else")


def post(url: str, body: object) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_server_answers_osv_queries_on_loopback(db: AdvisoryDB) -> None:
    with advisories.serving(db) as server:
        assert server.url.startswith("http://127.0.0.1:")
        status, body = post(
            server.url, {"package": {"name": "requests", "ecosystem": "PyPI"}, "version": "2.19.0"}
        )
        assert status == 200
        assert [v["id"] for v in body["vulns"]] == ["PYSEC-2018-28", "PYSEC-2023-74"]
        assert body["vulns"][0]["aliases"] == ["CVE-2018-18074"]
        # OSV answers an empty object when nothing matches; pip-audit relies on it.
        assert post(server.url, {"package": {"name": "requests", "ecosystem": "PyPI"},
                                 "version": "2.32.3"}) == (200, {})  # fmt: skip
        status, body = post(server.url, {"package": {"purl": "pkg:pypi/django@0.9"}})
        assert (status, [v["id"] for v in body["vulns"]]) == (200, ["PYSEC-2000-1"])
        with urllib.request.urlopen(server.url.replace("/v1/query", "/"), timeout=10) as info:
            assert json.loads(info.read())["advisories"] == 3
        assert server.queries == 3


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"package": {"name": "x", "ecosystem": "npm"}, "version": "1"}, "only the PyPI"),
        ({"package": {"name": "x", "ecosystem": "PyPI"}}, "needs package.name and version"),
        ({"commit": "abc"}, "commit queries"),
        ({"package": {"purl": "pkg:npm/x@1"}}, "unsupported purl"),
        ([1, 2], "JSON object"),
    ],
)
def test_server_rejects_what_it_cannot_answer(db: AdvisoryDB, body: object, message: str) -> None:
    with advisories.serving(db) as server:
        status, answer = post(server.url, body)
    assert status == 400
    assert message in answer["message"]


def test_server_404s_other_endpoints(db: AdvisoryDB) -> None:
    with advisories.serving(db) as server:
        status, answer = post(server.url.replace("/v1/query", "/v1/querybatch"), {})
    assert status == 404
    assert "no such endpoint" in answer["message"]
