"""The deployment report: one self-contained HTML page of DORA metrics with inline SVG charts.

``invoke report --env E`` reads the environment's ledger (or a ``history --json`` file) and
writes ``reports/deploy/index.html``. The page loads nothing from anywhere — no fonts, scripts
or stylesheets from outside, enforced by its Content-Security-Policy — so it reads the same
offline, as a CI artifact or from a mail attachment. Each number is also in a ``data-value``
attribute, so tests (and scripts) read exactly what a person sees.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conveyor import metrics as metrics_mod
from conveyor import terms
from conveyor.config import Config
from conveyor.errors import UsageError
from conveyor.ledger import ReleaseRecord
from conveyor.metrics import Metrics

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 16, 44
PALETTE = {"succeeded": "#2e7d32", "failed": "#c62828", "rollbacks": "#ef8f00", "line": "#1565c0"}
PHASE_COLORS = (
    "#90a4ae",
    "#5c6bc0",
    "#26a69a",
    "#66bb6a",
    "#d4e157",
    "#ffa726",
    "#ef5350",
    "#8d6e63",
    "#ab47bc",
)
RECENT = 40  # releases shown in the phase chart and table


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def duration(seconds: float | None) -> str:
    """Seconds in the largest unit that keeps the number readable."""
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _utc(epoch: float | None) -> str:
    return "—" if epoch is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


def _nice_max(value: float) -> float:
    """A round axis top at or above ``value``."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1) if value >= 1 else 0.1
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)


def _axes(y_max: float, fmt: Any, label: str) -> list[str]:
    parts = []
    plot_h = HEIGHT - TOP - BOTTOM
    for i in range(5):
        value = y_max * i / 4
        y = HEIGHT - BOTTOM - plot_h * i / 4
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_e(fmt(value))}</text>"
        )
    parts.append(
        f'<text class="axis-label" x="12" y="{TOP + plot_h / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {TOP + plot_h / 2:.0f})">{_e(label)}</text>'
    )
    return parts


def _x_labels(labels: Sequence[str], xs: Sequence[float]) -> list[str]:
    every = max(1, len(labels) // 8)
    return [
        f'<text class="tick" x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
        f"{_e(label)}</text>"
        for i, (label, x) in enumerate(zip(labels, xs, strict=True))
        if i % every == 0 or i == len(labels) - 1
    ]


def _svg(chart_id: str, title: str, body: list[str], legend: Sequence[tuple[str, str]]) -> str:
    items = "".join(
        f'<span class="key"><i style="background:{color}"></i>{_e(name)}</span>'
        for name, color in legend
    )
    return (
        f'<figure class="chart" id="{chart_id}"><figcaption>{_e(title)}</figcaption>'
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{_e(title)}">'
        + "".join(body)
        + f"</svg><div class='legend'>{items}</div></figure>"
    )


def empty_chart(chart_id: str, title: str, why: str) -> str:
    return (
        f'<figure class="chart empty" id="{chart_id}"><figcaption>{_e(title)}</figcaption>'
        f'<p class="none">{_e(why)}</p></figure>'
    )


def bar_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[float]]],
    *,
    y_label: str,
    fmt: Any = lambda v: f"{v:g}",
    value_fmt: Any = None,
) -> str:
    """Stacked vertical bars: one per label, one colored segment per series."""
    if not labels:
        return empty_chart(chart_id, title, "nothing to show yet")
    value_fmt = value_fmt or fmt
    totals = [sum(s[2][i] for s in series) for i in range(len(labels))]
    y_max = _nice_max(max(totals))
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    slot = plot_w / len(labels)
    bar_w = max(2.0, min(48.0, slot * 0.7))
    body = _axes(y_max, fmt, y_label)
    xs = []
    for i, label in enumerate(labels):
        x = LEFT + slot * i + (slot - bar_w) / 2
        xs.append(x + bar_w / 2)
        base = float(HEIGHT - BOTTOM)
        for name, color, values in series:
            value = values[i]
            if value <= 0:
                continue
            h = plot_h * value / y_max
            base -= h
            body.append(
                f'<rect class="bar" data-series="{_e(name)}" data-value="{value:g}" '
                f'x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{color}"><title>{_e(label)}: {_e(name)} {_e(value_fmt(value))}</title>'
                f"</rect>"
            )
    body += _x_labels(labels, xs)
    legend = [(name, color) for name, color, _ in series]
    return _svg(chart_id, title, body, legend if len(series) > 1 else [])


def line_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    values: Sequence[float | None],
    *,
    y_max: float,
    y_label: str,
    fmt: Any,
) -> str:
    """A line through the known points; a bucket without data leaves a gap."""
    if not any(v is not None for v in values):
        return empty_chart(chart_id, title, "no finished deploys yet")
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    slot = plot_w / len(labels)
    xs = [LEFT + slot * (i + 0.5) for i in range(len(labels))]
    body = _axes(y_max, fmt, y_label)
    segment: list[str] = []
    segments: list[list[str]] = []
    points = []
    for x, label, value in zip(xs, labels, values, strict=True):
        if value is None:
            if segment:
                segments.append(segment)
            segment = []
            continue
        y = HEIGHT - BOTTOM - plot_h * value / y_max
        segment.append(f"{x:.1f},{y:.1f}")
        points.append(
            f'<circle class="point" data-value="{value:.4f}" cx="{x:.1f}" cy="{y:.1f}" r="4" '
            f'fill="{PALETTE["line"]}"><title>{_e(label)}: {_e(fmt(value))}</title></circle>'
        )
    if segment:
        segments.append(segment)
    for seg in segments:
        if len(seg) > 1:
            body.append(
                f'<polyline class="line" fill="none" stroke="{PALETTE["line"]}" '
                f'stroke-width="2" points="{" ".join(seg)}"/>'
            )
    body += points + _x_labels(labels, xs)
    return _svg(chart_id, title, body, [])


def phase_chart(chart_id: str, title: str, releases: Sequence[ReleaseRecord]) -> str:
    """One horizontal bar per release, a colored segment per phase, in phase order."""
    rows = [r for r in releases if r.phases][-RECENT:]
    if not rows:
        return empty_chart(chart_id, title, "no phase timings recorded yet")
    phases: list[str] = [p for p in terms.PHASES if any(p in r.phases for r in rows)]
    phases += sorted({p for r in rows for p in r.phases} - set(phases))
    colors = {p: PHASE_COLORS[i % len(PHASE_COLORS)] for i, p in enumerate(phases)}
    row_h = 16
    height = TOP + BOTTOM + row_h * len(rows)
    left = 110
    plot_w = WIDTH - left - RIGHT
    longest = max(sum(r.phases.values()) for r in rows)
    x_max = _nice_max(longest)
    body = []
    for i in range(5):
        x = left + plot_w * i / 4
        body.append(
            f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{height - BOTTOM}"/>'
            f'<text class="tick" x="{x:.1f}" y="{height - BOTTOM + 16}" text-anchor="middle">'
            f"{_e(duration(x_max * i / 4))}</text>"
        )
    for n, record in enumerate(rows):
        y = TOP + n * row_h + 2
        body.append(
            f'<text class="tick" x="{left - 6}" y="{y + 11}" text-anchor="end">'
            f"{_e(record.id)} {_e(record.version[:10])}</text>"
        )
        x = float(left)
        for phase in phases:
            seconds = float(record.phases.get(phase, 0.0))
            if seconds <= 0:
                continue
            w = plot_w * seconds / x_max
            body.append(
                f'<rect class="bar" data-series="{_e(phase)}" data-value="{seconds:g}" '
                f'x="{x:.1f}" y="{y}" width="{max(w, 0.5):.1f}" height="{row_h - 4}" '
                f'fill="{colors[phase]}"><title>{_e(record.id)} {_e(phase)}: '
                f"{_e(duration(seconds))}</title></rect>"
            )
            x += w
    items = "".join(
        f'<span class="key"><i style="background:{colors[p]}"></i>{_e(p)}</span>' for p in phases
    )
    return (
        f'<figure class="chart" id="{chart_id}"><figcaption>{_e(title)}</figcaption>'
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" aria-label="{_e(title)}">'
        + "".join(body)
        + f"</svg><div class='legend'>{items}</div></figure>"
    )


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;
max-width:1360px;padding:0 16px;color:#1f2328;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#57606a;margin:0 0 16px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:12px}
.metric{border:1px solid #d0d7de;border-radius:8px;padding:12px}
.metric .label{color:#57606a;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.metric .value{font-size:26px;font-weight:600;margin:4px 0}
.metric .hint{color:#57606a;font-size:12px}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(660px,1fr));gap:16px}
figure{margin:0;border:1px solid #d0d7de;border-radius:8px;padding:12px;overflow-x:auto}
figcaption{font-weight:600;margin-bottom:6px}
svg .grid{stroke:#eaeef2}svg .tick{font-size:11px;fill:#57606a}
svg .axis-label{font-size:11px;fill:#57606a}
.legend{font-size:12px;color:#57606a}.key{margin-right:12px;white-space:nowrap}
.key i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
.none{color:#57606a}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #eaeef2;padding:4px 8px;text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.succeeded{color:#2e7d32}.failed,.interrupted{color:#c62828}.running{color:#57606a}
dl.defs dt{font-weight:600}dl.defs dd{margin:0 0 8px 0;color:#57606a}
"""

# Proof that the charts were laid out: a browser fills #render-check with each chart's size
# and how many of its marks have a non-empty box. Inline, so it runs offline.
RENDER_CHECK = """
const out = {};
for (const fig of document.querySelectorAll('figure.chart')) {
  const svg = fig.querySelector('svg');
  if (!svg) { out[fig.id] = null; continue; }
  const box = svg.getBoundingClientRect();
  let marks = 0;
  for (const m of svg.querySelectorAll('rect,circle,polyline')) {
    const b = m.getBBox();
    if (b.width > 0 || b.height > 0) marks += 1;
  }
  out[fig.id] = {width: Math.round(box.width), height: Math.round(box.height), marks: marks};
}
document.getElementById('render-check').textContent = JSON.stringify(out);
"""


def _unit(seconds: Sequence[float]) -> tuple[str, float]:
    """The axis unit that keeps the largest value between 1 and ~100."""
    top = max(seconds, default=0.0)
    if top < 120:
        return "seconds", 1.0
    if top < 7200:
        return "minutes", 60.0
    if top < 4 * 86400:
        return "hours", 3600.0
    return "days", 86400.0


def _card(metric_id: str, label: str, shown: str, value: float | None, hint: str) -> str:
    data = "" if value is None else f"{value:.6g}"
    return (
        f'<div class="metric" id="{metric_id}" data-value="{data}">'
        f'<div class="label">{_e(label)}</div><div class="value">{_e(shown)}</div>'
        f'<div class="hint">{_e(hint)}</div></div>'
    )


def render(
    m: Metrics,
    *,
    generated: float | None = None,
    flag_changes: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The whole page for one environment's metrics (and its flag changes, from the audit
    trail, shown beside the deploys)."""
    generated = time.time() if generated is None else generated
    return _page(
        m,
        generated,
        cards="".join(_cards(m)),
        charts="".join(_charts(m)),
        phase_rows="".join(_phase_row(p) for p in m.phases),
        incidents="".join(_incident_row(i) for i in m.incidents),
        release_rows="".join(_release_row(r) for r in reversed(m.releases[-RECENT * 2 :])),
        flag_rows="".join(_flag_row(e) for e in reversed(list(flag_changes)[-RECENT * 2 :])),
    )


FLAG_EVENTS = ("flag-set", "flag-killed")


def _flag_row(event: Mapping[str, Any]) -> str:
    """A flag change: when, which flag, the share before and after, who, with which release."""
    killed = event.get("kind") == "flag-killed"
    raw = event.get("verdict")
    verdict: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    change = (
        f"killed at {verdict.get('percent')}%"
        if killed
        else f"{event.get('old')}% → {event.get('new')}%"
    )
    why = str(
        verdict.get("reason")
        or event.get("why")
        or ("ramp " + str(event["ramp"]) if event.get("ramp") else "")
    )
    return (
        f'<tr class="{"failed" if killed else ""}"><td>{_e(_utc(event.get("at")))}</td>'
        f"<td>{_e(event.get('flag'))}</td><td>{_e(change)}</td><td>{_e(event.get('who'))}</td>"
        f"<td>{_e(event.get('record') or '')}</td><td>{_e(why[:160])}</td></tr>"
    )


def _cards(m: Metrics) -> list[str]:
    """The five headline numbers."""
    freq = m.frequency_per_day
    return [
        _card(
            "metric-frequency",
            "Deployment frequency",
            "—" if freq is None else f"{freq:.2f} / day",
            freq,
            f"{m.deployments} successful deploys in {m.days:.1f} days"
            + ("" if freq is None else f" ({freq * 7:.1f} / week)"),
        ),
        _card(
            "metric-change-failure-rate",
            "Change failure rate",
            _pct(m.change_failure_rate),
            m.change_failure_rate,
            f"{len(m.failed_changes)} of {m.finished} changes failed or were rolled back",
        ),
        _card(
            "metric-time-to-restore",
            "Time to restore (median)",
            duration(m.restore_median),
            m.restore_median,
            f"{len(m.incidents)} incidents that reached users",
        ),
        _card(
            "metric-lead-time",
            "Lead time (median)",
            duration(m.lead_time_median),
            m.lead_time_median,
            f"commit to live, {len(m.lead_times)} deploys",
        ),
        _card(
            "metric-success-rate",
            "Success rate",
            _pct(m.success_rate),
            m.success_rate,
            f"{m.rollbacks} rollbacks",
        ),
    ]


def _charts(m: Metrics) -> list[str]:
    """Deploys and success rate per bucket, lead times, restore times and phase durations."""
    unit = m.bucket_unit
    # Day buckets drop the year on the axis (the page header has the span).
    labels = [b.label[5:] if unit == "day" else b.label for b in m.buckets]
    lead_unit, lead_div = _unit([lt.seconds for lt in m.lead_times])
    ttr_unit, ttr_div = _unit([i.seconds for i in m.incidents])
    return [
        bar_chart(
            "chart-deployments",
            f"Deploys per {unit}",
            labels,
            [
                ("succeeded", PALETTE["succeeded"], [b.succeeded for b in m.buckets]),
                ("failed", PALETTE["failed"], [b.failed for b in m.buckets]),
                ("rollbacks", PALETTE["rollbacks"], [b.rollbacks for b in m.buckets]),
            ],
            y_label="deploys",
        ),
        line_chart(
            "chart-success-rate",
            f"Success rate per {unit}",
            labels,
            [None if b.success_rate is None else b.success_rate * 100 for b in m.buckets],
            y_max=100,
            y_label="%",
            fmt=lambda v: f"{v:.0f}%",
        ),
        bar_chart(
            "chart-lead-time",
            "Lead time per deploy (commit → live)",
            [lt.record for lt in m.lead_times],
            [("lead time", PALETTE["line"], [lt.seconds / lead_div for lt in m.lead_times])],
            y_label=lead_unit,
            fmt=lambda v: f"{v:.3g}",
            value_fmt=lambda v: f"{v:.3g} {lead_unit}",
        ),
        bar_chart(
            "chart-time-to-restore",
            "Time to restore per incident",
            [i.record for i in m.incidents],
            [("time to restore", PALETTE["failed"], [i.seconds / ttr_div for i in m.incidents])],
            y_label=ttr_unit,
            fmt=lambda v: f"{v:.3g}",
            value_fmt=lambda v: f"{v:.3g} {ttr_unit}",
        ),
        phase_chart(
            "chart-phases",
            "Phase durations per release",
            [r for r in m.releases if r.kind in terms.DEPLOY_KINDS | {terms.ROLLBACK}],
        ),
    ]


def _phase_row(p: metrics_mod.PhaseStats) -> str:
    return (
        f'<tr data-phase="{_e(p.phase)}"><td>{_e(p.phase)}</td><td class="num">{p.count}</td>'
        f'<td class="num" data-value="{p.median:.6g}">{_e(duration(p.median))}</td>'
        f'<td class="num" data-value="{p.p90:.6g}">{_e(duration(p.p90))}</td></tr>'
    )


def _incident_row(i: metrics_mod.Incident) -> str:
    return (
        f"<tr><td>{_e(i.record)}</td><td>{_e(i.version)}</td><td>{_e(i.how)}</td>"
        f"<td>{_e(_utc(i.began))}</td>"
        f'<td class="num" data-value="{i.seconds:.6g}">{_e(duration(i.seconds))}</td></tr>'
    )


def _page(
    m: Metrics,
    generated: float,
    *,
    cards: str,
    charts: str,
    phase_rows: str,
    incidents: str,
    release_rows: str,
    flag_rows: str = "",
) -> str:
    """The HTML document around the rendered parts."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Deployments — {_e(m.environment)}</title><style>{STYLE}</style></head>
<body data-environment="{_e(m.environment)}">
<h1>Deployments to {_e(m.environment)}</h1>
<p class="sub">{_e(_utc(m.start))} to {_e(_utc(m.end))} · {len(m.releases)} ledger records ·
generated {_e(_utc(generated))}</p>
<section class="cards">{cards}</section>
<h2>Charts</h2>
<section class="charts">{charts}</section>
<h2>Phases (successful deploys)</h2>
<table id="phases"><thead><tr><th>phase</th><th class="num">deploys</th>
<th class="num">median</th><th class="num">p90</th></tr></thead><tbody>{phase_rows}</tbody></table>
<h2>Incidents</h2>
<table id="incidents"><thead><tr><th>release</th><th>version</th><th>restored by</th>
<th>began</th><th class="num">time to restore</th></tr></thead><tbody>{incidents}</tbody></table>
<h2>Releases</h2>
<table id="releases"><thead><tr><th>id</th><th>kind</th><th>version</th><th>outcome</th>
<th>by</th><th>approved by</th><th>started</th><th class="num">took</th><th>schema</th>
<th>canary steps</th><th>detail</th></tr>
</thead><tbody>{release_rows}</tbody></table>
<h2>Flag changes</h2>
<table id="flags"><thead><tr><th>when</th><th>flag</th><th>change</th><th>by</th>
<th>live release</th><th>why</th></tr></thead><tbody>{flag_rows}</tbody></table>
<h2>How these are measured</h2>
<dl class="defs">{_definitions()}</dl>
<pre id="render-check" hidden></pre>
<script>{RENDER_CHECK}</script>
</body></html>
"""


def _release_row(r: ReleaseRecord) -> str:
    approver = (r.approval or {}).get("approver") or ""
    detail = ""
    if r.failed_phase:
        detail = f"failed in {r.failed_phase}: {r.reason or ''}"
    elif r.rollback_of:
        detail = f"rollback of {r.rollback_of}"
    took = duration(r.duration) if r.duration is not None else "—"
    return (
        f'<tr data-id="{_e(r.id)}"><td>{_e(r.id)}</td><td>{_e(r.kind)}</td>'
        f'<td>{_e(r.version)}</td><td class="{_e(r.outcome)}">{_e(r.outcome)}</td>'
        f"<td>{_e(r.who)}</td><td>{_e(approver)}</td><td>{_e(_utc(r.started))}</td>"
        f'<td class="num">{_e(took)}</td><td class="schema">{_e(r.migration_summary())}</td>'
        f'<td class="canary">{_e(r.canary_summary())}</td><td>{_e(detail[:160])}</td></tr>'
    )


def _definitions() -> str:
    doc = metrics_mod.__doc__ or ""
    items = []
    for block in doc.split("\n- ")[1:]:
        text = " ".join(block.split())
        name, _, rest = text.partition("**:")
        items.append(f"<dt>{_e(name.strip('* '))}</dt><dd>{_e(rest.strip())}</dd>")
    return "".join(items)


def load_records(path: Path) -> list[ReleaseRecord]:
    """Records from ``history --json`` output."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read a ledger export ({exc})") from None
    if not isinstance(data, list):
        raise UsageError(f"{path}: expected the JSON list `invoke history --json` prints")
    try:
        return [ReleaseRecord.from_dict(item) for item in data if isinstance(item, dict)]
    except ValueError as exc:
        raise UsageError(f"{path}: not a ledger export ({exc})") from None


def flag_events(config: Config, env_name: str) -> list[dict[str, Any]]:
    """The environment's flag changes and kills, oldest first, from its audit trail."""
    from conveyor.session import Session  # noqa: PLC0415 (reads an engine)

    events = Session(config, env_name).ledger.audit_events()
    return [e for e in events if e.get("kind") in FLAG_EVENTS]


def write(
    config: Config,
    env_name: str,
    *,
    output: Path = Path("reports/deploy"),
    ledger_json: str | None = None,
) -> Path:
    """Write ``output/index.html`` for ``env_name`` and return its path."""
    config.environment(env_name)
    if ledger_json:
        records = load_records(Path(ledger_json))
    else:
        # Only this path reads an engine; rendering stays docker-free (test_core_imports).
        from conveyor.operations import history  # noqa: PLC0415

        records = history(config, env_name)
    changes = [] if ledger_json else flag_events(config, env_name)
    page = render(metrics_mod.compute(env_name, records), flag_changes=changes)
    if not output.is_absolute():
        output = config.root / output
    output.mkdir(parents=True, exist_ok=True)
    target = output / "index.html"
    target.write_text(page, encoding="utf-8")
    return target
