"""The router config and runtime-API commands, checked without a running router container."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conveyor import config, router

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def staging() -> config.Environment:
    return config.load(ROOT / "deploy.toml").environment("staging")


def test_the_config_routes_by_prefix_and_by_header(staging: config.Environment) -> None:
    text = router.render(staging, router.Ports.of(staging, 0), {"api": "blue", "web": "blue"})
    assert "bind 127.0.0.1:8080" in text and "bind 127.0.0.1:8081" in text
    assert "stats socket ipv4@127.0.0.1:8082 level admin" in text
    assert "use_backend api_live if { path /api } || { path_beg /api/ }" in text
    assert "default_backend web_live" in text
    assert "use_backend api_preview if { req.hdr(X-Conveyor-Service) -m str api }" in text
    live = text.split("\nbackend api_live\n")[1].split("\nbackend ")[0]
    assert "server blue 127.0.0.1:8101 weight 100\n" in live
    assert "server green 127.0.0.1:8102 weight 100 disabled" in live


def test_a_host_offset_moves_every_port(staging: config.Environment) -> None:
    ports = router.Ports.of(staging, 1000)
    assert (ports.public, ports.preview, ports.admin) == (9080, 9081, 9082)
    assert ports.services["api"] == {"blue": 9101, "green": 9102}


def test_switching_colors_keeps_the_structure_hash(staging: config.Environment) -> None:
    ports = router.Ports.of(staging, 0)
    blue = router.render(staging, ports, {"api": "blue", "web": "blue"})
    green = router.render(staging, ports, {"api": "green", "web": "green"})
    moved = router.render(staging, router.Ports.of(staging, 5), {"api": "blue", "web": "blue"})
    assert blue != green
    assert router.structure_of(blue) == router.structure_of(green)
    assert router.structure_of(blue) != router.structure_of(moved)


def test_the_running_router_names_its_structure_in_show_info(
    staging: config.Environment,
) -> None:
    ports = router.Ports.of(staging, 0)
    text = router.render(staging, ports, {"api": "blue", "web": None})
    hashed = router.structure(staging, ports)
    assert router.structure_of(text) == hashed
    assert f"    description conveyor-structure {hashed}" in text.splitlines()
    # The hash leaves the description out: a router rendered before it hashes the same.
    without = "\n".join(line for line in text.splitlines() if "description" not in line)
    assert hashlib.sha256(router._render(staging, ports, {}).encode()).hexdigest()[
        :16
    ] == router.structure_of(without)
    info = f"Name: HAProxy\nnode: vm\ndescription: conveyor-structure {hashed}\nStopping: 0\n"
    assert router.loaded_structure(info) == hashed
    assert router.loaded_structure("Name: HAProxy\nnode: vm\nStopping: 0\n") is None
    assert router.loaded_structure("description: someone else's\n") is None


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy binary not on this machine")
def test_haproxy_accepts_the_rendered_config(staging: config.Environment, tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(router.render(staging, router.Ports.of(staging, 0), {"api": None, "web": None}))
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def running_ports(env: config.Environment) -> router.Ports:
    """Ports a test's own HAProxy can bind on 127.0.0.1 (the kernel's picks)."""

    def free() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    return router.Ports(
        bind="127.0.0.1",
        public=free(),
        preview=free(),
        admin=free(),
        services={name: {"blue": free(), "green": free()} for name in env.services},
    )


def wait_for_admin(ports: router.Ports, process: subprocess.Popen[bytes]) -> str:
    """``show info`` once the HAProxy at ``ports`` answers its runtime API."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return router.admin_direct(ports.admin, "show info")
        except router.RouterError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise
            time.sleep(0.05)


def get(port: int, path: str) -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        answer = b"".join(iter(lambda: sock.recv(65536), b"")).decode(errors="replace")
    head, _, body = answer.partition("\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy binary not on this machine")
def test_a_running_haproxy_reports_the_structure_it_loaded(
    staging: config.Environment, tmp_path: Path
) -> None:
    ports = running_ports(staging)
    path = tmp_path / "haproxy.cfg"
    path.write_text(router.render(staging, ports, {"api": "blue", "web": "blue"}))
    process = subprocess.Popen(["haproxy", "-db", "-f", str(path)], stderr=subprocess.PIPE)
    try:
        info = wait_for_admin(ports, process)
        assert router.loaded_structure(info) == router.structure(staging, ports)
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy binary not on this machine")
def test_without_a_service_at_the_root_only_unrouted_paths_answer_no_route(
    staging: config.Environment, tmp_path: Path
) -> None:
    web = dataclasses.replace(staging.services["web"], route="/ui")
    env = dataclasses.replace(staging, services={**staging.services, "web": web})
    ports = running_ports(env)
    path = tmp_path / "haproxy.cfg"
    path.write_text(router.render(env, ports, {"api": "blue", "web": "blue"}))
    process = subprocess.Popen(["haproxy", "-db", "-f", str(path)], stderr=subprocess.PIPE)
    try:
        wait_for_admin(ports, process)
        # Nothing listens on the api's port: its backend answers 503, the router 404.
        assert get(ports.public, "/api/version")[0] == 503
        assert get(ports.public, "/ui/")[0] == 503
        assert get(ports.public, "/") == (404, "no route\n")
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_switch_readies_the_new_color_before_disabling_the_old() -> None:
    assert router.switch_commands(["api", "web"], "green") == (
        "set weight api_live/green 100; set server api_live/green state ready; "
        "set server api_live/blue state maint; set weight api_live/blue 100; "
        "set weight web_live/green 100; set server web_live/green state ready; "
        "set server web_live/blue state maint; set weight web_live/blue 100"
    )
    assert router.park_commands(["api"]) == (
        "set server api_preview/blue state maint; set server api_preview/green state maint"
    )


STAT = """# pxname,svname,qcur,status,weight
public,FRONTEND,,OPEN,
api_live,blue,0,MAINT,1
api_live,green,0,no check,1
api_live,BACKEND,0,UP,1
web_live,blue,0,MAINT,1
web_live,green,0,MAINT,1
api_preview,blue,0,no check,1
"""


def test_live_colors_come_from_show_stat() -> None:
    assert router.parse_live_colors(STAT, ["api", "web"]) == {"api": "green", "web": None}


def test_a_refused_command_is_an_error() -> None:
    with pytest.raises(router.RouterError, match="No such server"):
        router._checked("No such server.\n", "set server api_live/purple state ready")


def test_the_listening_check_finds_only_sockets_its_processes_hold() -> None:
    """What the replacement asks a new router container: do processes I can see listen on
    every port? Run here, it sees this test's processes: a listener on IPv4 and one on IPv6
    count; a port only bound, not listening, does not, nor do the listeners once closed."""

    def listens(*ports: int) -> bool:
        argv = ["python3", "-S", "-c", router.EXEC_LISTENS, *map(str, ports)]
        return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode == 0

    with socket.socket() as v4, socket.socket(socket.AF_INET6) as v6, socket.socket() as gone:
        v4.bind(("127.0.0.1", 0))
        v4.listen()
        v6.bind(("::1", 0))
        v6.listen()
        gone.bind(("127.0.0.1", 0))
        closed = gone.getsockname()[1]
        ports = (v4.getsockname()[1], v6.getsockname()[1])
        assert listens(*ports)
        assert not listens(*ports, closed)
    assert not listens(*ports)
