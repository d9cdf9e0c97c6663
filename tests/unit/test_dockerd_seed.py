"""A test daemon's data root cloned from the seed (testkit.dockerd.clone_data_root): the image
layers' files shared, everything a daemon rewrites its own."""

from __future__ import annotations

import os
from pathlib import Path

from testkit.dockerd import clone_data_root

LAYER = "overlay2/3f9a/diff/usr/bin/python3"
OWN = (
    "overlay2/3f9a/link",
    "image/overlay2/repositories.json",
    "network/files/local-kv.db",
    "volumes/metadata.db",
)


def seed(folder: Path) -> Path:
    for name in (LAYER, *OWN, "engine-id"):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    (folder / "overlay2/l").mkdir()
    (folder / "overlay2/l/ABC").symlink_to("../3f9a/diff")
    return folder


def test_layers_are_shared_and_the_rest_is_copied(tmp_path: Path) -> None:
    source = seed(tmp_path / "seed")
    clone = tmp_path / "clone"
    clone_data_root(source, clone)
    assert (clone / LAYER).stat().st_ino == (source / LAYER).stat().st_ino
    assert os.readlink(clone / "overlay2/l/ABC") == "../3f9a/diff"
    for name in OWN:
        assert (clone / name).read_text() == name
        assert (clone / name).stat().st_ino != (source / name).stat().st_ino, name
    assert not (clone / "engine-id").exists(), "the clone makes its own engine ID"
    assert (source / "engine-id").is_file()


def test_a_daemon_rewriting_its_files_leaves_the_seed_as_it_was(tmp_path: Path) -> None:
    source = seed(tmp_path / "seed")
    clone = tmp_path / "clone"
    clone_data_root(source, clone)
    for name in OWN:
        with (clone / name).open("w") as rewritten:  # in place, as a database does
            rewritten.write("changed")
    (clone / LAYER).unlink()  # an image removed from the clone
    for name in (*OWN, LAYER):
        assert (source / name).read_text() == name, name
