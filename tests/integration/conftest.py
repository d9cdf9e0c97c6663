"""Integration fixtures: the repo's release built once, test releases and throwaway environments.

The suite shares the engine with whatever the user runs there (the quickstart's staging), so
it owns everything it touches: the release is built into a temporary dist folder under the
``conveyor-test/`` image prefix (never the repo's dist/ or the user's ``conveyor/`` tags),
and every environment a test creates is named ``test-…``, uses free ports on 127.0.0.1 and is
torn down afterwards (containers, router, state and data volumes). ``engine_untouched``
proves it: it fails the session if anything else on the engine, in dist/ or in .conveyor/
changed, or if a container the suite started is still there at the end.
Test releases are real images derived from the built API and web images, differing only in
the version they report and, for the unhealthy ones, an injected fault (``REFAPI_FAULT``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conveyor import artifacts, engine, images
from conveyor import config as config_mod
from conveyor.config import Config
from conveyor.errors import EngineUnavailable
from testkit import dockerd, lanes, sandbox
from testkit.dockerd import Dockerd, DockerdFailed
from testkit.loadgen import LoadResult
from testkit.migrating import MigratingReleases
from testkit.swarm import Cluster

ROOT = Path(__file__).resolve().parents[2]
# The user's own things in the checkout; .conveyor/cache is the scanners' tool cache.
USER_FOLDERS = (ROOT / "dist", ROOT / ".conveyor")
TOOL_CACHES = ("cache", "scan-venv")
GUARD = pytest.StashKey[sandbox.Guard]()
PROBLEMS = pytest.StashKey[list[str]]()
CHAOS_FIGURES = "chaos.jsonl"
HOST_SEED = "host-seed"


# -- which worker runs what ----------------------------------------------------------------
# nox runs the suite with ``--dist worksteal`` (testkit.lanes): a worker that runs out of tests
# takes the not-yet-started end of another's queue, so none sits idle while tests wait
# (``--dist load`` hands out fixed chunks: one of two workers idled ~4.5 min at the end). The
# tests on an engine of their own are the longest and the heaviest on CPU: they open two
# workers' shares, alternating (the swarms first), so they run at most two at a time, one
# after another in each lane, and the other workers run the tests on the shared engine. In
# one lane they were the run's critical path (CI, three workers: 11 min); three at once would
# start nine dockerds on two cores.
# The fixtures that start an engine of the test's own (``local_place``: setup --swarm's).
SECOND_ENGINE = (
    "swarm_cluster", "local_place", "make_dockerd", "second_engine", "second_dockerd",
)  # fmt: skip
OWN_ENGINE_LANES = 2


def _engine_rank(item: pytest.Item) -> int | None:
    """0 for a swarm test, then the other second-engine tests; None on the shared engine."""
    used = set(getattr(item, "fixturenames", ()))
    return next((rank for rank, name in enumerate(SECOND_ENGINE) if name in used), None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    items[:] = lanes.lay_out(items, _engine_rank, workers, OWN_ENGINE_LANES)


# -- the guard: nothing the suite does not own may change ----------------------------------
# It runs once per run, around everything: in the only process, or in pytest-xdist's
# controller while its workers run the tests (a worker alone would see the other's objects).


def _worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    if not _worker(session.config):
        with contextlib.suppress(EngineUnavailable):  # docker_client fails every test then
            session.config.stash[GUARD] = sandbox.Guard.start(
                engine.connect(), USER_FOLDERS, TOOL_CACHES
            )


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Tell each xdist worker that the controller is guarding the run."""
    node.workerinput["conveyor_guarded"] = GUARD in node.config.stash


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    _remove_host_seed(session.config)
    guard = session.config.stash.get(GUARD, None)
    if guard is not None:
        problems = session.config.stash[PROBLEMS] = guard.problems()
        if problems:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _remove_host_seed(config: pytest.Config) -> None:
    """Once the run is over (in the controller): the daemons' seed (:func:`_host_seed`)."""
    factory = getattr(config, "_tmp_path_factory", None)
    if _worker(config) or factory is None:
        return
    made = _shared(factory, config) / f"{HOST_SEED}.json"
    if made.is_file():
        shutil.rmtree(Path(json.loads(made.read_text(encoding="utf-8"))).parent, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    problems = config.stash.get(PROBLEMS, [])
    if problems:
        terminalreporter.section("the suite touched what it does not own", red=True, bold=True)
        for line in problems:
            terminalreporter.write_line(f"  {line}")
    elif PROBLEMS in config.stash:
        terminalreporter.write_line(
            "engine, dist/ and .conveyor/ untouched: every container, tag and volume the suite "
            "does not own is as it was"
        )
    _print_chaos_figures(terminalreporter, config)


def _print_chaos_figures(terminalreporter: Any, config: pytest.Config) -> None:
    """The chaos cases' figures, from every worker (README: "Under faults")."""
    if _worker(config):
        return
    factory = getattr(config, "_tmp_path_factory", None)
    path = factory.getbasetemp() / "shared" / CHAOS_FIGURES if factory else None
    if path is None or not path.is_file():
        return
    terminalreporter.section("chaos under load (keep-alive, 200 req/s on 127.0.0.1)")
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        rest = ", ".join(f"{k} {v}" for k, v in entry.items() if k not in ("case",))
        terminalreporter.write_line(f"  {entry['case']}: {rest}")


@pytest.fixture(scope="session", autouse=True)
def engine_untouched(request: pytest.FixtureRequest, docker_client: Any) -> Iterator[None]:
    """Guard the session here when the hooks above could not (this conftest was not loaded
    at start-up, e.g. a bare ``pytest``); never leave a run unguarded."""
    config = request.config
    if _worker(config):
        if not getattr(config, "workerinput", {}).get("conveyor_guarded"):
            pytest.fail("the xdist controller is not guarding this run (see pytest_sessionstart)")
        yield
    elif GUARD in config.stash:
        yield
    else:
        with sandbox.untouched(docker_client, USER_FOLDERS, skip=TOOL_CACHES) as problems:
            yield
        if problems:
            pytest.fail("the suite touched what it does not own:\n  " + "\n  ".join(problems))


# -- builds shared by every xdist worker of one run ------------------------------------------


def _shared(factory: pytest.TempPathFactory, config: pytest.Config) -> Path:
    """A folder this run's workers share (this session's own without xdist)."""
    base = factory.getbasetemp()
    folder = (base.parent if _worker(config) else base) / "shared"
    folder.mkdir(exist_ok=True)
    return folder


def _once(folder: Path, key: str, make: Callable[[], Any]) -> Any:
    """``make()`` in the first worker to get here; the others wait and read its JSON result."""
    done = folder / f"{key}.json"
    with (folder / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            done.write_text(json.dumps(make()), encoding="utf-8")
        return json.loads(done.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def shared_folder(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return _shared(tmp_path_factory, request.config)


@pytest.fixture(scope="session")
def isolated_config(repo_config: Config, shared_folder: Path) -> Config:
    """The repo's deploy.toml building into a temporary dist folder, as ``conveyor-test/…``."""
    return sandbox.isolated(repo_config, shared_folder / "build" / "dist")


@pytest.fixture(scope="session")
def release_folder(isolated_config: Config, shared_folder: Path) -> Path:
    """dist/<version>/ of the checkout under test, built by the real build (in a temp dir)."""
    built = _once(
        shared_folder,
        "release",
        lambda: os.fspath(artifacts.build(isolated_config, say=lambda line: None)),
    )
    return Path(built)


@pytest.fixture(scope="session")
def release_images(
    isolated_config: Config, docker_client: Any, release_folder: Path, shared_folder: Path
) -> dict[str, Any]:
    """The api and web images of that release, as ``conveyor-test/…`` (not pushed)."""
    built: dict[str, Any] = _once(
        shared_folder,
        "images",
        lambda: images.build_images(
            isolated_config, docker_client, release_folder, push_to_registry=False
        ),
    )
    return built


@pytest.fixture(scope="session")
def test_project(
    isolated_config: Config,
    release_images: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A deploy.toml for CLI runs (``--config``) naming the same dist folder and images."""
    project = tmp_path_factory.mktemp("project")
    # The same build settings as isolated_config, so a rebuild there reproduces its images.
    (project / "deploy.toml").write_text(sandbox.config_toml(isolated_config), encoding="utf-8")
    # Image builds read docker/webserver.py and the wheelhouse cache under the config's root.
    (project / "docker").symlink_to(ROOT / "docker")
    (project / "build").symlink_to(ROOT / "build")
    return project / "deploy.toml"


@dataclass
class TestEnvironment:
    """A throwaway environment: its deploy.toml, its ports and how to reach it."""

    name: str
    config_path: Path
    ports: list[int]
    offsets: tuple[int, ...]
    dist: Path

    @property
    def config(self) -> Config:
        return config_mod.load(self.config_path)

    def public(self, offset: int = 0) -> int:
        return self.ports[0] + offset

    def service_port(self, service: str, color: str, offset: int = 0) -> int:
        return sandbox.service_port(self.ports, service, color) + offset

    def retime(self, **seconds: float) -> None:
        """Change the environment's ``timeouts`` in its deploy.toml, as a user editing it would:
        ``env.retime(ready=8)`` before a release that never gets ready fails it in 8 s, while
        the deploys before it had the margin a starting service needs on a busy machine."""
        text = self.config_path.read_text(encoding="utf-8")
        head, marker, table = text.partition(f"[environments.{self.name}.timeouts]\n")
        assert marker, f"{self.config_path} has no timeouts table for {self.name}"
        for key, value in seconds.items():
            table, found = re.subn(rf"^{key} = .*$", f"{key} = {value}", table, count=1, flags=re.M)
            assert found, f"no timeouts.{key} to change"
        self.config_path.write_text(head + marker + table, encoding="utf-8")

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 240) -> Any:
        """Run ``python -m conveyor --config … ARGS`` as a user would, from the environment's
        own folder (so nothing relative to the working directory lands in the checkout)."""
        return subprocess.run(
            ["python", "-m", "conveyor", "--config", str(self.config_path), *args],
            cwd=self.config_path.parent,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )

    def cli_running(self, *args: str, env: dict[str, str] | None = None) -> Any:
        """The same command, started in the background (stdout and stderr piped)."""
        return subprocess.Popen(
            ["python", "-m", "conveyor", "--config", str(self.config_path), *args],
            cwd=self.config_path.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )


@dataclass
class EnvironmentFactory:
    tmp: Path
    clients: list[Any]
    made: list[TestEnvironment] = field(default_factory=list)

    def __call__(
        self,
        hosts: list[dict[str, Any]] | None = None,
        offsets: tuple[int, ...] = (0,),
        **timing: Any,
    ) -> TestEnvironment:
        name = sandbox.new_name()
        ports = sandbox.allocate_ports(sandbox.PORTS_NEEDED, offsets)
        folder = self.tmp / name
        folder.mkdir()
        dist = self.tmp / "dist"
        dist.mkdir(exist_ok=True)
        path = folder / "deploy.toml"
        path.write_text(
            sandbox.environment_toml(
                name,
                ports,
                dist,
                ROOT / "docker",
                hosts or [{"name": "local", "docker": "local"}],
                **timing,
            ),
            encoding="utf-8",
        )
        env = TestEnvironment(name=name, config_path=path, ports=ports, offsets=offsets, dist=dist)
        self.made.append(env)
        return env


@pytest.fixture
def make_environment(
    tmp_path: Path, docker_client: Any, test_releases: Any
) -> Iterator[EnvironmentFactory]:
    factory = EnvironmentFactory(tmp=tmp_path, clients=[docker_client])
    # Releases live in one dist folder shared by every test environment of this test.
    shutil.copytree(test_releases.dist, tmp_path / "dist")
    yield factory
    for env in factory.made:
        for client in factory.clients:
            sandbox.teardown(client, env.name)


@dataclass
class TestReleases:
    """Releases derived from the built images: dist folders a deploy can verify and use."""

    client: Any
    base: dict[str, Any]
    dist: Path
    made: dict[str, Path] = field(default_factory=dict)

    def make(self, version: str, *, fault: str | None = None) -> str:
        if version not in self.made:
            self.made[version] = sandbox.derive_release(
                self.client, self.base, self.dist, version, fault=fault
            )
        return version


@pytest.fixture(scope="session")
def migrating(
    docker_client: Any, release_images: dict[str, Any], shared_folder: Path
) -> MigratingReleases:
    """Releases with extra Alembic revisions (testkit.migrating), made when a test asks."""
    return MigratingReleases(docker_client, release_images, shared_folder)


@pytest.fixture(scope="session")
def test_releases(
    docker_client: Any, release_images: dict[str, Any], shared_folder: Path
) -> TestReleases:
    releases = TestReleases(
        client=docker_client, base=release_images, dist=shared_folder / "releases"
    )

    def make_all() -> dict[str, str]:
        for version in ("1.0.0", "2.0.0", "3.0.0"):
            releases.make(version)
        releases.make("9.0.1+notready", fault="not-ready")
        releases.make("9.0.2+crash", fault="crash")
        releases.make("9.0.3+failsoon", fault="fail-after-ready=4")
        # Bad only under real traffic (canary tests): a share of 500s, or slow answers.
        releases.make("9.1.0+failshare", fault="fail-ratio=0.3")
        releases.make("9.1.1+slow", fault="slow=300")
        # Healthy, except for whoever gets new-notes-view on (flag ramp tests).
        releases.make("9.2.0+flagfails", fault="flag-on-fails")
        return {version: os.fspath(folder) for version, folder in releases.made.items()}

    made = _once(shared_folder, "releases", make_all)
    releases.made = {version: Path(folder) for version, folder in made.items()}
    return releases


@pytest.fixture(scope="session")
def second_dockerd(
    docker_client: Any, shared_folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dockerd]:
    """A second real dockerd on this machine: another host with its own socket and data root,
    with live-restore on as scripts/setup starts the main one. Chaos tests stop, kill and
    restart it; each leaves it running."""
    daemon = _dockerd(docker_client, shared_folder, tmp_path_factory, live_restore=True)
    yield daemon
    daemon.remove()


@pytest.fixture
def make_dockerd(
    docker_client: Any, shared_folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Dockerd]]:
    """Another throwaway dockerd for one test (e.g. without live-restore), removed after it."""
    made: list[Dockerd] = []

    def make(*, live_restore: bool) -> Dockerd:
        made.append(
            _dockerd(docker_client, shared_folder, tmp_path_factory, live_restore=live_restore)
        )
        return made[-1]

    yield make
    for daemon in made:
        daemon.remove()


def _dockerd(
    docker_client: Any,
    shared_folder: Path,
    factory: pytest.TempPathFactory,
    *,
    live_restore: bool,
) -> Dockerd:
    """A started dockerd with the base and router images a primary host needs (a real remote
    host pulls its base image; this one cannot)."""
    try:
        daemon = Dockerd(
            live_restore=live_restore, seed=_host_seed(docker_client, shared_folder, factory)
        )
        daemon.start()
    except DockerdFailed as exc:
        pytest.fail(str(exc))
    return daemon


def _host_seed(client: Any, shared_folder: Path, factory: pytest.TempPathFactory) -> Path:
    """The data root the tests' daemons start as clones of, made once per run: the base and
    router images are on them from the start, as on a host that pulled them long ago."""
    needed = _once(shared_folder, "host-images", lambda: _host_images(client, factory))
    made = _once(
        shared_folder, HOST_SEED, lambda: os.fspath(dockerd.seed(client, needed, shared_folder))
    )
    return Path(made)


def _host_images(client: Any, factory: pytest.TempPathFactory) -> list[str]:
    """The base image and the test environments' router image (built here, once)."""
    folder = factory.mktemp("router-image")
    (folder / "deploy.toml").write_text(
        sandbox.environment_toml(
            "test-router-image",
            list(range(40001, 40001 + sandbox.PORTS_NEEDED)),
            folder / "dist",
            ROOT / "docker",
            [{"name": "local", "docker": "local"}],
        ),
        encoding="utf-8",
    )
    config = config_mod.load(folder / "deploy.toml")
    return [images.resolve_base_image(client, config), images.build_router_image(config, client)]


@pytest.fixture
def swarm_cluster(
    docker_client: Any, shared_folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A two-node swarm, each node a dockerd in its own network namespace (testkit.swarm),
    with the base and router images on every node; removed after the test."""
    cluster = Cluster(2, seed=_host_seed(docker_client, shared_folder, tmp_path_factory))
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="session")
def second_engine(second_dockerd: Dockerd) -> tuple[str, Any]:
    """(url, client) of the second engine."""
    return second_dockerd.url, second_dockerd.client


@pytest.fixture
def chaos_figures(shared_folder: Path) -> Callable[..., None]:
    """Record one chaos case's load figures; the run's summary prints them all."""

    def record(case: str, load: LoadResult, **seconds: float) -> None:
        entry = {
            "case": case,
            "requests": load.requests,
            "failed": load.failures,
            **{name: round(value, 2) for name, value in seconds.items()},
        }
        with (shared_folder / CHAOS_FIGURES).open("a", encoding="utf-8") as figures:
            figures.write(json.dumps(entry) + "\n")

    return record


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False
