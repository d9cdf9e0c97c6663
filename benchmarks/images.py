"""Our multi-stage image against a naive single-stage one, built in the same run.

Naive: ``FROM base``, ``COPY . .``, ``pip install .`` on the backend. Measured: the size each
adds over the base image, and the rebuild time after a one-line change to backend code, in a
clone of HEAD so the working tree is never touched. Goals: ours at most 60% of the naive
added size, and an app-only rebuild at least 3x faster.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import report
from conveyor import artifacts, config, engine, images
from conveyor.console import Console

ROOT = Path(__file__).resolve().parent.parent
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")

NAIVE = """ARG BASE_IMAGE
FROM ${BASE_IMAGE}
WORKDIR /app
COPY host-ca.crt /etc/ssl/certs/host-ca.crt
ENV PIP_CERT=/etc/ssl/certs/host-ca.crt SETUPTOOLS_SCM_PRETEND_VERSION=0.0.0
COPY . .
RUN python3 -m venv /venv && /venv/bin/pip install .
CMD ["/venv/bin/python", "-m", "refapi"]
"""


def build_naive(client: Any, clone: Path, base: str, tag: str) -> float:
    """The naive build; the host's CA bundle goes in so pip can reach PyPI through a proxy."""
    context = clone / "backend"
    (context / "Dockerfile.naive").write_text(NAIVE)
    shutil.copy2(HOST_CA, context / "host-ca.crt")
    began = time.monotonic()
    for chunk in client.api.build(
        path=str(context),
        dockerfile="Dockerfile.naive",
        tag=tag,
        buildargs={"BASE_IMAGE": base},
        network_mode="host",
        rm=True,
        decode=True,
    ):
        if "error" in chunk:
            raise RuntimeError(chunk["error"])
    return time.monotonic() - began


def build_ours(client: Any, cfg: config.Config) -> tuple[float, float, Any]:
    """(wheel build seconds, image build seconds, image entry) for the api only."""
    quiet = Console(quiet=True)
    began = time.monotonic()
    folder = artifacts.build(cfg, only="backend", say=lambda line: None)
    built = time.monotonic()
    entry = images.build_images(
        cfg, client, folder, push_to_registry=False, only=["api"], out=quiet
    )["api"]
    return built - began, time.monotonic() - built, entry


def one_line_change(clone: Path, n: int) -> None:
    """A change no earlier run made: reproducible builds plus Docker's cache would otherwise
    turn a rerun of this benchmark into a cache hit and measure nothing."""
    target = clone / "backend" / "src" / "refapi" / "__init__.py"
    target.write_text(target.read_text() + f"# benchmark change {n} {secrets.token_hex(8)}\n")


def main() -> None:
    client = engine.connect()
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-images-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        cfg = config.load(clone / "deploy.toml")
        base = images.resolve_base_image(client, cfg)
        base_size = client.images.get(base).attrs["Size"]

        naive_cold = build_naive(client, clone, base, "conveyor-bench/naive:1")
        wheel_cold, image_cold, ours = build_ours(client, cfg)
        one_line_change(clone, 1)
        naive_warm = build_naive(client, clone, base, "conveyor-bench/naive:2")
        wheel_warm, image_warm, ours = build_ours(client, cfg)

        naive_size = client.images.get("conveyor-bench/naive:2").attrs["Size"]
        ours_size = ours["size"]
        for tag in ("conveyor-bench/naive:1", "conveyor-bench/naive:2"):
            client.images.remove(tag, force=True)

    ours_added = ours_size - base_size
    naive_added = naive_size - base_size
    ours_rebuild = wheel_warm + image_warm
    rows = [
        ["naive (COPY . . ; pip install .)", naive_added / 1e6, naive_cold, naive_warm, "-"],
        [
            "conveyor (multi-stage, wheelhouse)",
            ours_added / 1e6,
            wheel_cold + image_cold,
            ours_rebuild,
            image_warm,
        ],
    ]
    size_ratio = ours_added / naive_added
    speedup = naive_warm / ours_rebuild
    print(
        report.table(
            f"Images on {base} (base {base_size / 1e6:.0f} MB)",
            [
                "image",
                "added MB",
                "cold build s",
                "rebuild after 1-line change s",
                "of which docker build s",
            ],
            rows,
        )
    )
    print(
        f"  size: ours adds {size_ratio:.0%} of what naive adds (goal ≤ 60%): "
        + ("met" if size_ratio <= 0.6 else "NOT met")
    )
    print(
        f"  rebuild: ours is {speedup:.1f}x faster than naive (goal ≥ 3x): "
        + ("met" if speedup >= 3 else "NOT met")
    )
    path = report.write(
        "images",
        {
            "base": base,
            "base_bytes": base_size,
            "naive": {"added_bytes": naive_added, "cold_s": naive_cold, "rebuild_s": naive_warm},
            "ours": {
                "added_bytes": ours_added,
                "cold_s": wheel_cold + image_cold,
                "rebuild_s": ours_rebuild,
                "rebuild_wheel_s": wheel_warm,
                "rebuild_image_s": image_warm,
            },
            "size_ratio": size_ratio,
            "rebuild_speedup": speedup,
            "goals": {"size_ratio_max": 0.6, "rebuild_speedup_min": 3.0},
        },
    )
    print(f"  wrote {path}")
