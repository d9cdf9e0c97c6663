"""The router config and runtime-API commands, checked without a running HAProxy."""

from __future__ import annotations

import shutil
import subprocess
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


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy binary not on this machine")
def test_haproxy_accepts_the_rendered_config(staging: config.Environment, tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(router.render(staging, router.Ports.of(staging, 0), {"api": None, "web": None}))
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


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
