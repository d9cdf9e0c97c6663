"""DORA metrics and the HTML report, from a ledger whose every number is known."""

from __future__ import annotations

import html.parser
import re
from typing import Any

import pytest

from conveyor import metrics, report
from conveyor.ledger import ReleaseRecord

DAY0 = 1767225600.0  # 2026-01-01 00:00 UTC
H = 3600.0
PHASES = {
    "lock": 0.1,
    "prepare": 0.4,
    "start": 1.0,
    "ready": 3.0,
    "smoke": 0.5,
    "switch": 0.1,
    "verify": 5.0,
    "drain": 2.0,
}  # 12.1 s in all; 5.0 s before the switch


def rec(
    id: str, kind: str, version: str, started: float, outcome: str, **extra: Any
) -> ReleaseRecord:
    phases = extra.pop("phases", PHASES if outcome == "succeeded" else {})
    ended = extra.pop("ended", started + sum(phases.values()))
    return ReleaseRecord(
        id=id,
        environment="production",
        kind=kind,
        version=version,
        commit="c" * 40,
        services={"api": {"image_id": "sha256:" + id[-1] * 64}},
        who="bob",
        started=started,
        ended=ended,
        phases=dict(phases),
        outcome=outcome,
        **extra,
    )


def known_ledger() -> list[ReleaseRecord]:
    r1 = DAY0 + 1 * H
    r4 = DAY0 + 26 * H
    r6 = DAY0 + 72 * H
    return [
        rec("r0001", "deploy", "1.0.0", r1, "succeeded", commit_time=int(r1 - H)),
        rec(
            "r0002",
            "deploy",
            "1.1.0",
            DAY0 + 5 * H,
            "failed",
            failed_phase="ready",
            ended=DAY0 + 5 * H + 30,
        ),
        rec(
            "r0003",
            "deploy",
            "1.2.0",
            DAY0 + 25 * H,
            "failed",
            failed_phase="verify",
            phases={k: v for k, v in PHASES.items() if k not in {"verify", "drain"}}
            | {"verify": 2.0},
            ended=DAY0 + 25 * H + 20,
        ),
        rec("r0004", "deploy", "1.3.0", r4, "succeeded", commit_time=int(r4 - 2 * H)),
        rec(
            "r0005",
            "rollback",
            "1.0.0",
            DAY0 + 48 * H,
            "succeeded",
            rollback_of="r0004",
            phases={},
            ended=DAY0 + 48 * H + 3,
        ),
        rec("r0006", "promote", "1.4.0", r6, "succeeded", commit_time=int(r6 - 3 * H)),
        rec("r0007", "deploy", "1.5.0", r6 + 60, "running", ended=None),
    ]


def test_the_dora_numbers_of_a_known_ledger() -> None:
    m = metrics.compute("production", known_ledger())
    span_days = (DAY0 + 72 * H + 60 - (DAY0 + 1 * H)) / 86400  # to r0007's start
    assert m.deployments == 3  # r0001, r0004, r0006: rollbacks are not deployments
    assert m.frequency_per_day == pytest.approx(3 / span_days)
    assert m.finished == 5  # the running r0007 is not counted yet
    assert m.failed_changes == ["r0002", "r0003", "r0004"]  # r0004 was rolled back
    assert m.change_failure_rate == pytest.approx(0.6)
    assert [(i.record, i.how) for i in m.incidents] == [
        ("r0003", "automatic rollback"),
        ("r0004", "rollback r0005"),
    ]
    assert m.incidents[0].seconds == pytest.approx(15.0)  # 20 s record, 5 s before the switch
    assert m.incidents[1].seconds == pytest.approx(22 * H + 3 - 12.1)
    assert m.restore_median == pytest.approx((15.0 + 22 * H + 3 - 12.1) / 2)
    assert [round(lt.seconds, 1) for lt in m.lead_times] == [3612.1, 7212.1, 10812.1]
    assert m.lead_time_median == pytest.approx(7212.1)
    assert m.success_rate == pytest.approx(0.6)
    assert m.rollbacks == 1


def test_buckets_cover_every_day_including_empty_ones() -> None:
    m = metrics.compute("production", known_ledger())
    assert m.bucket_unit == "day"
    assert [(b.label, b.succeeded, b.failed, b.rollbacks) for b in m.buckets] == [
        ("2026-01-01", 1, 1, 0),
        ("2026-01-02", 1, 1, 0),
        ("2026-01-03", 0, 0, 1),
        ("2026-01-04", 1, 0, 0),
    ]
    assert [b.success_rate for b in m.buckets] == [0.5, 0.5, None, 1.0]


def test_long_ledgers_are_bucketed_by_iso_week() -> None:
    records = [
        rec(f"r{i:04d}", "deploy", "1", DAY0 + i * 10 * 86400, "succeeded") for i in range(1, 12)
    ]
    m = metrics.compute("production", records)
    assert m.bucket_unit == "week"
    assert m.buckets[0].label == "2026-W02" and m.buckets[0].succeeded == 1
    assert sum(b.succeeded for b in m.buckets) == 11
    assert len(m.buckets) == 16  # 2026-W02 to W17: every week, deploys or not


def test_phase_statistics_use_successful_deploys_only() -> None:
    m = metrics.compute("production", known_ledger())
    stats = {p.phase: p for p in m.phases}
    assert list(stats) == list(PHASES)
    assert stats["verify"].count == 3 and stats["verify"].median == 5.0  # not r0003's 2.0
    assert metrics.percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9) == 9
    assert metrics.percentile([4.0], 0.9) == 4.0


def test_an_empty_ledger_has_no_numbers_rather_than_zeros() -> None:
    m = metrics.compute("production", [])
    assert m.frequency_per_day is None and m.change_failure_rate is None
    assert m.restore_median is None and m.lead_time_median is None
    page = report.render(m, generated=DAY0)
    assert 'id="metric-frequency" data-value=""' in page
    assert page.count("<svg") == 0 and "nothing to show yet" in page


class Marks(html.parser.HTMLParser):
    """Counts SVG marks per chart and collects the metric cards' values."""

    def __init__(self) -> None:
        super().__init__()
        self.chart: str | None = None
        self.marks: dict[str, list[str]] = {}
        self.values: dict[str, str] = {}
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "figure":
            self.chart = a.get("id")
            self.marks[self.chart or "?"] = []
        if tag in {"rect", "circle", "polyline"} and self.chart:
            self.marks[self.chart].append(tag)
        if "metric" in (a.get("class") or "").split():
            self.values[a["id"] or "?"] = a.get("data-value") or ""
        for key in ("src", "href"):
            if a.get(key):
                self.external.append(a[key] or "")


def test_the_report_page_has_the_numbers_and_a_mark_per_data_point() -> None:
    page = report.render(metrics.compute("production", known_ledger()), generated=DAY0)
    parsed = Marks()
    parsed.feed(page)
    assert parsed.external == [], "the page must not load anything"
    assert float(parsed.values["metric-change-failure-rate"]) == pytest.approx(0.6)
    assert float(parsed.values["metric-lead-time"]) == pytest.approx(7212.1)
    assert float(parsed.values["metric-frequency"]) == pytest.approx(1.0138, rel=1e-3)
    assert parsed.marks["chart-deployments"] == ["rect"] * 6  # 2 + 2 + 1 rollback + 1
    assert parsed.marks["chart-success-rate"].count("circle") == 3  # the empty day is a gap
    assert parsed.marks["chart-success-rate"].count("polyline") == 1  # D3 stands alone
    assert parsed.marks["chart-lead-time"] == ["rect"] * 3
    assert parsed.marks["chart-time-to-restore"] == ["rect"] * 2
    # one segment per recorded phase of each release with timings (r0001, r0003, r0004, r0006)
    assert len(parsed.marks["chart-phases"]) == 8 + 7 + 8 + 8
    assert "60.0%" in page and "2.0 h" in page  # CFR and median lead time as people read them
    assert re.search(r"Content-Security-Policy\"\s+content=\"default-src 'none'", page)


def test_text_from_the_ledger_is_escaped() -> None:
    evil = rec(
        "r0001",
        "deploy",
        "<script>alert(1)</script>",
        DAY0,
        "failed",
        failed_phase="ready",
        reason="<b>x</b>",
    )
    page = report.render(metrics.compute("production", [evil]), generated=DAY0)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    assert "<b>x</b>" not in page


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "—"), (5.25, "5.2 s"), (600, "10.0 min"), (7200, "2.0 h"), (3 * 86400, "3.0 d")],
)
def test_durations_read_naturally(seconds: float | None, shown: str) -> None:
    assert report.duration(seconds) == shown
