"""The built wheel must carry the migrations: the image runs from it with no source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

BACKEND = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed")
    out_dir = tmp_path_factory.mktemp("dist")
    # --offline: `uv sync` has already cached the build backend; tests stay off the network.
    build = subprocess.run(
        [uv, "build", "--offline", "--wheel", "--out-dir", out_dir, BACKEND],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    (built,) = out_dir.glob("refapi-*.whl")
    return built


def test_the_wheel_contains_env_and_every_revision(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    revisions = sorted((BACKEND / "src/refapi/migrations/versions").glob("*.py"))

    assert revisions
    assert "refapi/migrations/env.py" in names
    for revision in revisions:
        assert f"refapi/migrations/versions/{revision.name}" in names


def test_the_wheel_carries_the_flag_definitions_and_serves_them(
    wheel: Path, tmp_path: Path
) -> None:
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("refapi/flags.json") == (BACKEND / "flags.json").read_bytes()
        archive.extractall(tmp_path / "site")
    # Read from the package itself, not from a source tree next to it.
    probe = (
        "import refapi.flagfile as f; print(f.__file__); "
        "print((f.resources.files('refapi') / 'flags.json').is_file()); "
        "print(f.parse(f.packaged_definitions(), 'packaged').variants)"
    )

    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        str(tmp_path / "site/refapi/flagfile.py"),
        "True",
        "{'new-notes-view': ('on', 'off')}",
    ]


def test_the_unpacked_wheel_migrates_from_any_directory(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "DATABASE_URL": "sqlite:///./from-wheel.db"}

    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import refapi, runpy; print(refapi.__file__); "
            "runpy.run_module('refapi', run_name='__main__')",
            "migrate",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(site / "refapi" / "__init__.py")
    assert "is at revision" in result.stderr
    assert (elsewhere / "from-wheel.db").exists()
