"""Manifests and verification: a flipped byte, a missing or an extra file is caught by name."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from conveyor import artifacts, migrationsql
from conveyor.errors import ArtifactError


def make_release(folder: Path) -> None:
    (folder / "a.whl").write_bytes(b"wheel-bytes" * 100)
    (folder / "b.tar.gz").write_bytes(b"bundle")
    artifacts.write_manifest(
        folder,
        {
            "schema": artifacts.MANIFEST_SCHEMA,
            "version": "1.0.0",
            "files": artifacts.describe_files(folder, ["a.whl", "b.tar.gz"]),
        },
    )


def test_an_intact_release_verifies(tmp_path: Path) -> None:
    make_release(tmp_path)
    manifest = artifacts.verify(tmp_path)
    assert manifest["files"]["a.whl"]["sha256"] == hashlib.sha256(b"wheel-bytes" * 100).hexdigest()


def test_a_flipped_byte_is_named(tmp_path: Path) -> None:
    make_release(tmp_path)
    data = bytearray((tmp_path / "a.whl").read_bytes())
    data[10] ^= 0x01
    (tmp_path / "a.whl").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"a\.whl: sha256 .* differs"):
        artifacts.verify(tmp_path)


def test_missing_and_extra_files_are_named(tmp_path: Path) -> None:
    make_release(tmp_path)
    (tmp_path / "b.tar.gz").unlink()
    with pytest.raises(ArtifactError, match=r"b\.tar\.gz: listed in the manifest but missing"):
        artifacts.verify(tmp_path)
    make_release(tmp_path)
    (tmp_path / "smuggled.sh").write_text("echo hi")
    with pytest.raises(ArtifactError, match=r"files not in the manifest: smuggled\.sh"):
        artifacts.verify(tmp_path)


def test_no_manifest_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="run `nox -s build` first"):
        artifacts.verify(tmp_path)


def test_tarballs_depend_only_on_content(tmp_path: Path) -> None:
    for name in ("one", "two"):
        src = tmp_path / name / "site"
        (src / "assets").mkdir(parents=True)
        (src / "index.html").write_text("<html></html>")
        (src / "assets" / "app.js").write_text("console.log(1)")
    # Different mtimes and paths on disk must not change the bytes.
    (tmp_path / "two" / "site" / "index.html").touch()
    out_one, out_two = tmp_path / "one.tar.gz", tmp_path / "two.tar.gz"
    artifacts.deterministic_tarball(tmp_path / "one" / "site", out_one, prefix="refweb", mtime=5)
    artifacts.deterministic_tarball(tmp_path / "two" / "site", out_two, prefix="refweb", mtime=5)
    assert out_one.read_bytes() == out_two.read_bytes()
    with tarfile.open(out_one) as tar:
        assert tar.getnames() == ["refweb/assets", "refweb/assets/app.js", "refweb/index.html"]
        assert {m.mtime for m in tar.getmembers()} == {5}


def hand_edit(folder: Path, change: dict[str, object]) -> None:
    """What a person with a text editor does: rewrite manifest.json, leave the seal alone."""
    manifest = json.loads((folder / artifacts.MANIFEST).read_text())
    manifest.update(change)
    (folder / artifacts.MANIFEST).write_text(json.dumps(manifest, indent=2))


def test_an_edited_manifest_is_caught_and_never_resealed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(artifacts.KEY_VARIABLE, raising=False)
    make_release(tmp_path)
    assert artifacts.check_seal(tmp_path) == artifacts.CHECKSUM
    seal = (tmp_path / artifacts.SEAL).read_text()
    body = (tmp_path / artifacts.MANIFEST).read_bytes()
    assert seal == f"{hashlib.sha256(body).hexdigest()}  manifest.json\n", "sha256sum -c format"

    hand_edit(tmp_path, {"scan": {"passed": True}})
    with pytest.raises(
        ArtifactError, match=r"manifest.json does not match manifest.sha256: it was"
    ):
        artifacts.verify(tmp_path)
    # conveyor's own writers refuse to launder the edit into a fresh seal.
    with pytest.raises(ArtifactError, match="edited outside conveyor"):
        artifacts.update_manifest(tmp_path, lambda m: m.__setitem__("images", {}))
    assert "scan" in json.loads((tmp_path / artifacts.MANIFEST).read_text())

    (tmp_path / artifacts.SEAL).unlink()
    with pytest.raises(ArtifactError, match=r"manifest.sha256 is missing: .* covered by no"):
        artifacts.verify(tmp_path)


def test_with_a_key_the_seal_is_an_hmac_nobody_else_can_recompute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(artifacts.KEY_VARIABLE, "k1")
    make_release(tmp_path)
    assert (tmp_path / artifacts.SEAL).read_text().startswith("hmac-sha256:")
    assert artifacts.check_seal(tmp_path) == artifacts.SIGNED
    artifacts.update_manifest(tmp_path, lambda m: m.__setitem__("images", {}))
    assert artifacts.check_seal(tmp_path) == artifacts.SIGNED

    # A forger who knows the format but not the key writes a plain checksum: it verifies as
    # a checksum only, which the gates do not trust while a key is set.
    hand_edit(tmp_path, {"scan": {"passed": True}})
    body = (tmp_path / artifacts.MANIFEST).read_bytes()
    (tmp_path / artifacts.SEAL).write_text(f"{hashlib.sha256(body).hexdigest()}  manifest.json\n")
    assert artifacts.check_seal(tmp_path) == artifacts.CHECKSUM
    forged = "hmac-sha256:" + hashlib.sha256(b"guess" + body).hexdigest()
    (tmp_path / artifacts.SEAL).write_text(f"{forged}  manifest.json\n")
    with pytest.raises(ArtifactError, match="does not match its signature"):
        artifacts.verify(tmp_path)

    make_release(tmp_path)
    monkeypatch.setenv(artifacts.KEY_VARIABLE, "another key")
    with pytest.raises(ArtifactError, match="does not match its signature"):
        artifacts.verify(tmp_path)
    monkeypatch.delenv(artifacts.KEY_VARIABLE)
    with pytest.raises(ArtifactError, match="signed with CONVEYOR_LEDGER_KEY, which is not set"):
        artifacts.verify(tmp_path)


# --- the migration preview a release records -------------------------------------------------

PREVIEW = [
    migrationsql.Revision("r1", (), "expand", "Create the notes table", "CREATE TABLE notes ();"),
    migrationsql.Revision("r2", ("r1",), "contract", "Drop notes.text", "ALTER TABLE notes\n"
                          "DROP COLUMN text;"),
]  # fmt: skip


def with_preview(folder: Path) -> None:
    folder.mkdir(parents=True)
    make_release(folder)
    artifacts.update_manifest(
        folder,
        lambda m: migrationsql.write_preview(folder, m, "api", "sha256:" + "a" * 64, PREVIEW),
    )


def test_a_release_records_its_migrations_and_lists_them_back(tmp_path: Path) -> None:
    folder = tmp_path / "1.0.0"
    with_preview(folder)
    manifest = artifacts.verify(folder)  # the preview files are artifacts like the others
    entry = manifest["migrations"]["api"]
    sql = (folder / "migrations-api-1.0.0.sql").read_text()
    assert entry["sql"] == "migrations-api-1.0.0.sql"
    assert entry["sql_sha256"] == hashlib.sha256(sql.encode()).hexdigest()
    assert manifest["files"]["migrations-api-1.0.0.sql"]["sha256"] == entry["sql_sha256"]
    assert [(r["revision"], r["kind"]) for r in entry["revisions"]] == [
        ("r1", "expand"),
        ("r2", "contract"),
    ]
    assert "SQLite" in sql.splitlines()[0]
    assert "-- revision r1 (expand): Create the notes table\nCREATE TABLE notes ();\n" in sql
    assert "-- revision r2 (contract): Drop notes.text\nALTER TABLE notes\nDROP COLUMN text;" in sql

    listed = migrationsql.release_migrations(tmp_path, "1.0.0")
    assert listed == {
        "api": [
            {"revision": "r1", "down_revision": None, "kind": "expand",
             "message": "Create the notes table", "sql": "CREATE TABLE notes ();"},
            {"revision": "r2", "down_revision": "r1", "kind": "contract",
             "message": "Drop notes.text", "sql": "ALTER TABLE notes\nDROP COLUMN text;"},
        ]
    }  # fmt: skip


def test_a_release_without_migrations_lists_none(tmp_path: Path) -> None:
    make_release(tmp_path)
    assert migrationsql.release_migrations(tmp_path.parent, tmp_path.name) == {}


def test_an_edited_preview_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "1.0.0"
    with_preview(folder)
    (folder / "migrations-api-1.0.0.json").write_text('{"revisions": []}')
    with pytest.raises(ArtifactError, match=r"migration preview of api .* differs"):
        migrationsql.release_migrations(tmp_path, "1.0.0")


def test_an_image_that_stops_declaring_migrate_loses_its_preview(tmp_path: Path) -> None:
    folder = tmp_path / "1.0.0"
    with_preview(folder)
    artifacts.update_manifest(folder, lambda m: migrationsql.drop_preview(folder, m, "api"))
    manifest = artifacts.verify(folder)  # no leftover file, none listed
    assert manifest["migrations"] == {}
    assert not any(name.startswith("migrations-") for name in manifest["files"])
