"""Manifests and verification: a flipped byte, a missing or an extra file is caught by name."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest

from conveyor import artifacts
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
