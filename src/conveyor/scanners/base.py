"""The one signature every scanner module shares, and the helpers they all use.

A scanner module exposes ``SPEC = ScannerSpec(...)`` whose ``run(ctx) -> ScannerRun`` never raises
for a tool problem: a missing tool is ``unavailable``, a crash or unreadable output is ``error``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor import tools
from conveyor.scanners.model import ScannerRun

WORKFLOW_DIR = Path(".github/workflows")
TAIL_LINES = 3


@dataclass(frozen=True)
class ScanContext:
    """What a scanner is given: the project, its options from the policy, where to cache."""

    root: Path
    cache: Path
    options: Mapping[str, Any] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    artifacts: Path | None = None
    timeout: float = 300.0

    def option(self, name: str) -> Any:
        return self.options[name]

    def relative(self, path: Path | str) -> str:
        """A path as reports show it: relative to the project root, POSIX separators."""
        candidate = Path(path)
        if candidate.is_absolute():
            try:
                candidate = candidate.relative_to(self.root)
            except ValueError:
                return candidate.as_posix()
        return candidate.as_posix().removeprefix("./")


@dataclass(frozen=True)
class ScannerSpec:
    """A row of the registry table."""

    name: str
    description: str
    run: Callable[[ScanContext], ScannerRun]
    options: Mapping[str, Any] = field(default_factory=dict)
    # Allowed values of string options, checked when the policy is loaded.
    choices: Mapping[str, Sequence[str]] = field(default_factory=dict)
    required: bool = True
    timeout: float = 300.0
    # Image scanners only run when `conveyor scan --artifacts dist/<version>` names images.
    needs_artifacts: bool = False


@dataclass(frozen=True)
class ToolResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last meaningful lines of stderr (else stdout), for an error reason."""
        text = (self.stderr or self.stdout).strip().splitlines()
        kept = [line.strip() for line in text if line.strip()][-lines:]
        return " | ".join(kept)[:600] or f"exit {self.returncode} with no output"


def execute(
    argv: Sequence[str],
    *,
    cwd: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> ToolResult:
    """Run a scanner and return whatever it did; the caller judges the exit code.

    Bounded by ``timeout`` (``ToolTimeout``).
    """
    done = tools.run(argv, cwd=cwd, env=env, timeout=timeout, check=False)
    return ToolResult(tuple(argv), done.returncode, done.stdout or "", done.stderr or "")


def find_tool(name: str) -> str | None:
    """The tool from this interpreter's venv (where ``nox -s scan`` installs it), else PATH."""
    return tools.find(name)


def missing(name: str, tool: str, hint: str = "run `nox -s scan` (group scan)") -> ScannerRun:
    return ScannerRun.unavailable(name, f"{tool} is not installed — {hint}")


def workflow_files(ctx: ScanContext) -> list[Path]:
    """The project's GitHub workflows (``.github/workflows/*.yml|yaml``), sorted."""
    folder = ctx.root / WORKFLOW_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".yml", ".yaml") and p.is_file())


NO_WORKFLOWS = f"no workflows in {WORKFLOW_DIR.as_posix()}/ — nothing to check"


def line_of(path: Path, needle: str) -> int | None:
    """The first line of ``path`` containing ``needle`` (1-based), for package locations."""
    try:
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if needle in text:
                return number
    except OSError:
        return None
    return None
