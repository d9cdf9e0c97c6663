"""Debian's docker-registry (CNCF distribution) for the tests: one config, wherever it runs."""

from __future__ import annotations

from pathlib import Path


def write_config(folder: Path, address: str) -> Path:
    """A plain-HTTP registry on ``address`` (HOST:PORT), its storage under ``folder``."""
    config = folder / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {folder / 'data'}}}}}\n"
        f"http: {{addr: {address}}}\n",
        encoding="utf-8",
    )
    return config
