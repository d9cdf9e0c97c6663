"""One release version per build, derived from git.

PEP 440 for Python (``1.4.0`` on a tag, ``1.4.1.dev3+g1a2b3c4`` three commits after it,
``…+g1a2b3c4.dirty`` with uncommitted changes) and a registry-safe form for image tags
(``1.4.1.dev3-g1a2b3c4``, plus ``sha-1a2b3c4`` for clean builds). Nothing is ever tagged
``latest``: a deploy names the exact release.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from conveyor import tools
from conveyor.errors import ConveyorError

TAG_PATTERN = "v[0-9]*"
_DESCRIBE = re.compile(r"^(?P<tag>.+)-(?P<distance>\d+)-g(?P<sha>[0-9a-f]+)$")


@dataclass(frozen=True)
class ReleaseVersion:
    """The version of one build and where it came from."""

    python: str
    commit: str
    dirty: bool
    commit_time: int
    distance: int

    @property
    def short_commit(self) -> str:
        return self.commit[:7]

    @property
    def image_tag(self) -> str:
        """Registry tags allow ``[A-Za-z0-9_.-]``: PEP 440's ``+`` becomes ``-``."""
        return self.python.replace("+", "-")

    @property
    def image_tags(self) -> tuple[str, ...]:
        # A sha- tag promises "exactly this commit"; a dirty tree cannot keep that promise.
        if self.dirty:
            return (self.image_tag,)
        return (self.image_tag, f"sha-{self.short_commit}")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "image_tag": self.image_tag, "image_tags": list(self.image_tags)}


def _git(root: Path, *args: str) -> str:
    git = tools.require("git", "install git to derive versions")
    return tools.run([git, *args], cwd=root, what=f"git {' '.join(args)}").stdout.strip()


def compose(
    *, tag: str | None, distance: int, commit: str, dirty: bool, commit_time: int
) -> ReleaseVersion:
    """The pure rule from git facts to a version (unit-tested without a repository)."""
    if tag is None:
        base = Version("0.0.0")
    else:
        try:
            base = Version(tag.removeprefix("v"))
        except InvalidVersion:
            raise ConveyorError(
                f"git tag {tag} is not a PEP 440 version (expected v1.2.3)"
            ) from None
    if distance == 0 and not dirty and tag is not None:
        python = str(base)
    else:
        release = list(base.release) + [0] * (3 - len(base.release))
        release[-1] += 1
        next_version = ".".join(str(part) for part in release)
        local = f"g{commit[:7]}" + (".dirty" if dirty else "")
        python = f"{next_version}.dev{distance}+{local}"
    return ReleaseVersion(
        python=python, commit=commit, dirty=dirty, commit_time=commit_time, distance=distance
    )


def current(root: Path) -> ReleaseVersion:
    """The version of the working tree at ``root``."""
    commit = _git(root, "rev-parse", "HEAD")
    commit_time = int(_git(root, "show", "-s", "--format=%ct", "HEAD"))
    # Untracked files count: the build would package them, so the version must say so.
    dirty = bool(_git(root, "status", "--porcelain"))
    try:
        described = _git(root, "describe", "--tags", "--long", "--match", TAG_PATTERN)
    except ConveyorError:
        described = ""
    match = _DESCRIBE.match(described)
    if match:
        tag: str | None = match["tag"]
        distance = int(match["distance"])
    else:
        tag = None
        distance = int(_git(root, "rev-list", "--count", "HEAD"))
    return compose(tag=tag, distance=distance, commit=commit, dirty=dirty, commit_time=commit_time)
