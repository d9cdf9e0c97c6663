"""The deployment report from a known ledger kept on a real engine, opened in headless
Chromium: the charts are laid out and the numbers are the ones the ledger implies."""

from __future__ import annotations

import html.parser
import json
import shutil
import subprocess
import tempfile
from typing import Any

import pytest

from conveyor.ledger import Ledger, ReleaseRecord
from conveyor.state import StateStore

DAY0 = 1767225600.0  # 2026-01-01 00:00 UTC
H = 3600.0
PHASES = {"lock": 0.2, "prepare": 0.8, "start": 1.0, "ready": 3.0, "smoke": 0.5, "switch": 0.1}
PHASES |= {"verify": 4.0, "drain": 0.4}  # 10 s in all, 5.5 s before the switch


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed — run scripts/setup (Debian package chromium)")
    return path


def known_records(env: str) -> list[ReleaseRecord]:
    """Ten days: 8 successful deploys, 1 failed after the switch, 1 rolled back by hand."""
    records = []
    for n in range(1, 11):
        started = DAY0 + (n - 1) * 86400 + 10 * H
        failed = n == 4
        records.append(
            ReleaseRecord(
                id=f"r{n:04d}",
                environment=env,
                kind="promote",
                version=f"1.{n}.0",
                commit=f"{n:040d}",
                services={"api": {"image_id": f"sha256:{n:064d}"}},
                who="bob",
                started=started,
                ended=started + (30.0 if failed else 10.0),
                phases=dict(PHASES),
                outcome="failed" if failed else "succeeded",
                failed_phase="verify" if failed else None,
                reason="error rate 30%" if failed else None,
                commit_time=int(started - 2 * H),
                approval={"approver": "alice", "method": "ledger"},
            )
        )
    rollback_start = DAY0 + 8 * 86400 + 11 * H  # an hour after r0009 went live
    records.append(
        ReleaseRecord(
            id="r0011",
            environment=env,
            kind="rollback",
            version="1.8.0",
            commit=f"{8:040d}",
            services={"api": {"image_id": f"sha256:{8:064d}"}},
            who="bob",
            started=rollback_start,
            ended=rollback_start + 2.0,
            phases={"start": 0.5, "ready": 1.0, "switch": 0.1},
            outcome="succeeded",
            rollback_of="r0009",
        )
    )
    return records


class Page(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.check = ""
        self._in_check = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "metric" in (a.get("class") or "").split():
            self.values[a.get("id") or "?"] = a.get("data-value") or ""
        self._in_check = a.get("id") == "render-check"

    def handle_data(self, data: str) -> None:
        if self._in_check:
            self.check += data

    def handle_endtag(self, tag: str) -> None:
        self._in_check = False


def test_the_report_renders_its_charts_and_numbers_in_chromium(
    make_environment: Any, docker_client: Any, test_releases: Any
) -> None:
    env = make_environment()
    # Write the known ledger straight into the environment's state store on the engine.
    store = StateStore(docker_client, env.name, test_releases.base["api"]["id"])
    ledger = Ledger(store)
    for record in known_records(env.name):
        ledger.write(record)

    result = env.cli("report", "--env", env.name, "--output", "reports/deploy")
    assert result.returncode == 0, result.stdout + result.stderr
    page = env.config_path.parent / "reports" / "deploy" / "index.html"
    assert f"wrote {page}" in result.stdout

    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=5000",
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = Page()
    parsed.feed(dom.stdout)
    rendered = json.loads(parsed.check)  # written by the page's script, in the browser
    assert set(rendered) == {
        "chart-deployments",
        "chart-success-rate",
        "chart-lead-time",
        "chart-time-to-restore",
        "chart-phases",
    }
    for chart, box in rendered.items():
        assert box is not None and box["width"] >= 600 and box["height"] >= 200, (chart, box)
    assert (
        rendered["chart-deployments"]["marks"] == 11
    )  # a bar per day, and the rollback stacked on day 9
    assert rendered["chart-success-rate"]["marks"] >= 10  # 10 points (and their line)
    assert rendered["chart-lead-time"]["marks"] == 9  # one bar per successful deploy
    assert rendered["chart-time-to-restore"]["marks"] == 2  # r0004 automatic, r0009 by hand
    assert rendered["chart-phases"]["marks"] == 10 * 8 + 3

    values = {k: float(v) for k, v in parsed.values.items()}
    span_days = (DAY0 + 9 * 86400 + 10 * H + 10 - (DAY0 + 10 * H)) / 86400
    assert values["metric-frequency"] == pytest.approx(9 / span_days, rel=1e-4)
    assert values["metric-change-failure-rate"] == pytest.approx(0.2)  # r0004 and r0009 of 10
    # r0004: 30 s record, 5.5 s before the switch; r0009: live at +10 s, restored at 1 h + 2 s
    assert values["metric-time-to-restore"] == pytest.approx((24.5 + (H + 2 - 10)) / 2)
    assert values["metric-lead-time"] == pytest.approx(2 * H + 10)
    assert values["metric-success-rate"] == pytest.approx(0.9)
    assert "20.0%" in dom.stdout and "2.0 h" in dom.stdout
