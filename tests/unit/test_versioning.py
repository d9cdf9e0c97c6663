"""Versions from git facts: PEP 440 for Python, a registry-safe tag for images."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conveyor import versioning
from conveyor.errors import ConveyorError

# What a registry accepts as a tag (the OCI distribution spec).
REGISTRY_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")

SHA = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"


def compose(tag: str | None, distance: int, dirty: bool = False) -> versioning.ReleaseVersion:
    return versioning.compose(tag=tag, distance=distance, commit=SHA, dirty=dirty, commit_time=1)


def test_on_a_tag_the_version_is_the_tag() -> None:
    version = compose("v1.4.0", 0)
    assert version.python == "1.4.0"
    assert version.image_tags == ("1.4.0", "sha-1a2b3c4")


def test_after_a_tag_it_is_a_dev_release_of_the_next_patch() -> None:
    version = compose("v1.4.0", 3)
    assert version.python == "1.4.1.dev3+g1a2b3c4"
    assert version.image_tag == "1.4.1.dev3-g1a2b3c4"
    assert version.image_tags == ("1.4.1.dev3-g1a2b3c4", "sha-1a2b3c4")


def test_a_dirty_tree_says_so_and_gets_no_sha_tag() -> None:
    version = compose("v1.4.0", 0, dirty=True)
    assert version.python == "1.4.1.dev0+g1a2b3c4.dirty"
    assert version.image_tags == ("1.4.1.dev0-g1a2b3c4.dirty",)


def test_without_any_tag() -> None:
    assert compose(None, 12).python == "0.0.1.dev12+g1a2b3c4"


def test_every_tag_is_registry_safe_and_never_latest() -> None:
    for version in (compose("v2.0", 0), compose("v2.0", 5, dirty=True), compose(None, 1)):
        for tag in version.image_tags:
            assert REGISTRY_TAG.match(tag), tag
            assert tag != "latest"


def test_a_tag_that_is_not_a_version_is_refused() -> None:
    with pytest.raises(ConveyorError, match="not a PEP 440 version"):
        compose("vbanana", 0)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_current_reads_a_real_repository(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@example.com")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / "a").write_text("1")
    _git(tmp_path, "add", "a")
    _git(tmp_path, "commit", "-qm", "one")
    _git(tmp_path, "tag", "v1.4.0")
    assert versioning.current(tmp_path).python == "1.4.0"
    (tmp_path / "a").write_text("2")
    _git(tmp_path, "commit", "-qam", "two")
    later = versioning.current(tmp_path)
    assert later.python.startswith("1.4.1.dev1+g") and not later.dirty
    (tmp_path / "a").write_text("3")
    assert versioning.current(tmp_path).python.endswith(".dirty")
