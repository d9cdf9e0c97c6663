"""Running external tools (uv, npm, git, scanners) with errors a person can act on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from conveyor.errors import ConveyorError, ToolTimeout


def find(name: str) -> str | None:
    """A tool from this interpreter's venv first (nox installs them there), then PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def require(name: str, hint: str) -> str:
    path = find(name)
    if path is None:
        raise ConveyorError(f"{name} is not installed — {hint}")
    return path


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    what: str | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a tool with its output captured and stdin closed.

    With ``check`` (the default) a non-zero exit fails with the last lines of stderr;
    without it the caller judges the exit code (scanners exit non-zero to say "found
    something"). Running out of ``timeout`` raises ``ToolTimeout`` either way.
    """
    full_env = {**os.environ, **(env or {})}
    try:
        result = subprocess.run(
            list(argv),
            cwd=cwd,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise ConveyorError(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        name = what or Path(argv[0]).name
        raise ToolTimeout(f"{name} did not finish within {timeout:.0f} s") from None
    if check and result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise ConveyorError(
            f"{what or Path(argv[0]).name} failed (exit {result.returncode}): "
            + " | ".join(line.strip() for line in tail)
        )
    return result


def version_of(argv: Sequence[str]) -> str:
    """First line a tool prints for its version, or 'unknown'."""
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"
