"""Print a benchmark's table and write its JSON next to the other reports."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

OUT = Path("reports/bench")


def table(title: str, columns: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in columns]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = [title]
    for index, row in enumerate(cells):
        lines.append(
            "  "
            + "  ".join(
                cell.rjust(w) if index else cell.ljust(w)
                for cell, w in zip(row, widths, strict=True)
            )
        )
        if index == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return str(value)


def write(name: str, data: dict[str, Any]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    payload = {
        "benchmark": name,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": _cpus(), "python": platform.python_version(), "node": platform.node()},
        **data,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def _cpus() -> int:
    import os  # noqa: PLC0415

    return os.cpu_count() or 0
