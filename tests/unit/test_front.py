"""The front load balancer's config: every host's router, checked per service, retried safely."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from tests.unit.test_plan import STAGING

from conveyor import front
from conveyor.config import Host

SERVERS = [front.Server("n1", "192.0.2.1", 8080), front.Server("n2", "192.0.2.2", 8080)]


def test_every_host_is_a_server_checked_through_its_router_for_every_service() -> None:
    text = front.render(STAGING, SERVERS, "*:80")
    assert "    server n1 192.0.2.1:8080\n    server n2 192.0.2.2:8080" in text
    for service in STAGING.services.values():
        assert (
            f"http-check send meth GET uri {service.health.path} ver HTTP/1.1 "
            f"hdr Host conveyor-front hdr X-Conveyor-Service {service.name}\n"
            "    http-check expect status 200"
        ) in text
    assert text.count("http-check connect") == len(STAGING.services)
    assert "default-server check inter 1s fall 2 rise 2" in text


def test_a_503_is_retried_on_another_host_only_for_safe_methods() -> None:
    text = front.render(STAGING, SERVERS, "127.0.0.1:9000")
    assert "    bind 127.0.0.1:9000\n" in text
    assert "retry-on conn-failure empty-response 503" in text
    assert "option redispatch 1" in text
    assert "http-request disable-l7-retry unless { method GET HEAD OPTIONS }" in text


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy binary not on this machine")
def test_haproxy_accepts_the_front_config(tmp_path: Path) -> None:
    path = tmp_path / "front.cfg"
    path.write_text(front.render(STAGING, SERVERS, "127.0.0.1:9000"))
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("docker", "node", "address"),
    [
        ("ssh://deploy@n1.example.com", {"address": "192.0.2.7"}, "192.0.2.7"),
        ("ssh://deploy@n1.example.com", None, "n1.example.com"),
        ("tcp://n2.example.com:2376", None, "n2.example.com"),
        ("unix:///run/conveyor-swarm/docker.sock", {"address": ""}, "127.0.0.1"),
        ("local", None, "127.0.0.1"),
    ],
)
def test_a_host_is_reached_at_its_nodes_address_or_its_engines_host_name(
    docker: str, node: dict[str, str] | None, address: str
) -> None:
    assert front.host_address(Host(name="h", docker=docker), node) == address
