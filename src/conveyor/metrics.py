"""DORA metrics from an environment's release ledger: pure functions of its records.

Definitions (the report prints them too):

- **Deployment frequency**: successful deploys and promotions per day over the ledger's span
  (first start to last end, at least one day). Rollbacks are not deployments.
- **Change failure rate**: of the deploys and promotions that finished, the share that failed
  (automatic rollback, or interrupted) or that a later rollback undid.
- **Time to restore**: for each failure that reached users, from the moment the bad release
  took traffic to the moment the good one served again. An automatic rollback after the switch
  counts from the switch (start plus the phases before it) to the record's end; a manual
  rollback from the bad release going live to the rollback's end. Failures before the switch
  never reached users and are not incidents.
- **Lead time**: from the commit's time (the build's ``SOURCE_DATE_EPOCH``) to live (the
  successful record's end).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from conveyor import terms
from conveyor.ledger import ReleaseRecord

DAY = 86400.0
WEEKLY_AFTER_DAYS = 90  # longer ledgers are bucketed by ISO week


@dataclass(frozen=True)
class Incident:
    record: str
    version: str
    how: str  # "automatic rollback" or "rollback <id>"
    began: float
    restored: float

    @property
    def seconds(self) -> float:
        return max(0.0, self.restored - self.began)


@dataclass(frozen=True)
class LeadTime:
    record: str
    version: str
    seconds: float


@dataclass
class Bucket:
    label: str
    start: float
    succeeded: int = 0
    failed: int = 0
    rollbacks: int = 0

    @property
    def success_rate(self) -> float | None:
        finished = self.succeeded + self.failed
        return None if finished == 0 else self.succeeded / finished


@dataclass(frozen=True)
class PhaseStats:
    phase: str
    count: int
    median: float
    p90: float


@dataclass
class Metrics:
    environment: str
    start: float | None
    end: float | None
    days: float
    deployments: int
    finished: int
    failed_changes: list[str]
    rollbacks: int
    incidents: list[Incident]
    lead_times: list[LeadTime]
    buckets: list[Bucket]
    bucket_unit: str
    phases: list[PhaseStats]
    releases: list[ReleaseRecord] = field(default_factory=list)

    @property
    def frequency_per_day(self) -> float | None:
        return None if self.start is None else self.deployments / self.days

    @property
    def change_failure_rate(self) -> float | None:
        return None if self.finished == 0 else len(self.failed_changes) / self.finished

    @property
    def restore_median(self) -> float | None:
        return _median([i.seconds for i in self.incidents])

    @property
    def lead_time_median(self) -> float | None:
        return _median([lt.seconds for lt in self.lead_times])

    @property
    def success_rate(self) -> float | None:
        if self.finished == 0:
            return None
        failed = sum(1 for r in self.releases if _is_attempt(r) and r.outcome != "succeeded")
        return (self.finished - failed) / self.finished


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: a value that occurred, never an interpolation."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5 - 1e-9)))
    return ordered[rank - 1]


def _is_attempt(record: ReleaseRecord) -> bool:
    return record.kind in terms.DEPLOY_KINDS and record.outcome != terms.RUNNING


def bucket_label(epoch: float, unit: str) -> tuple[str, float]:
    """(label, bucket start) of the UTC day or ISO week containing ``epoch``."""
    day_start = epoch - (epoch % DAY)
    if unit == "day":
        return time.strftime("%Y-%m-%d", time.gmtime(day_start)), day_start
    week_start = day_start - time.gmtime(day_start).tm_wday * DAY
    return time.strftime("%G-W%V", time.gmtime(week_start)), week_start


def compute(environment: str, records: Iterable[ReleaseRecord]) -> Metrics:
    records = sorted(records, key=lambda r: (r.started, r.id))
    attempts = [r for r in records if _is_attempt(r)]
    rollbacks = [r for r in records if r.kind == terms.ROLLBACK and r.outcome == terms.SUCCEEDED]
    undone = {r.rollback_of for r in rollbacks if r.rollback_of}
    failed_changes = [r.id for r in attempts if r.outcome != terms.SUCCEEDED or r.id in undone]
    incidents = _incidents(attempts, rollbacks, {r.id: r for r in records})
    deployments = [r for r in attempts if r.outcome == terms.SUCCEEDED]
    lead_times = [
        LeadTime(r.id, r.version, r.ended - r.commit_time)
        for r in deployments
        if r.commit_time is not None and r.ended is not None and r.ended >= r.commit_time
    ]
    start = records[0].started if records else None
    end = max((r.ended or r.started for r in records), default=None)
    span_days = 0.0 if start is None or end is None else (end - start) / DAY
    days = max(1.0, span_days)
    unit = "day" if span_days <= WEEKLY_AFTER_DAYS else "week"
    buckets = _buckets(records, start, end, unit)
    phases = _phase_stats(deployments)
    return Metrics(
        environment=environment,
        start=start,
        end=end,
        days=days,
        deployments=len(deployments),
        finished=len(attempts),
        failed_changes=failed_changes,
        rollbacks=len(rollbacks),
        incidents=incidents,
        lead_times=lead_times,
        buckets=buckets,
        bucket_unit=unit,
        phases=phases,
        releases=records,
    )


def _incidents(
    attempts: list[ReleaseRecord],
    rollbacks: list[ReleaseRecord],
    by_id: dict[str, ReleaseRecord],
) -> list[Incident]:
    """Each time users were on a bad release: an automatic rollback after the switch, or a
    manual rollback of a release (from its end to the rollback's end)."""
    incidents: list[Incident] = []
    for r in attempts:
        if r.outcome == terms.FAILED and r.failed_phase not in (*terms.BEFORE_SWITCH, None):
            if r.ended is None:
                continue
            took_traffic = r.started + sum(r.phases.get(p, 0.0) for p in terms.BEFORE_SWITCH)
            incidents.append(Incident(r.id, r.version, "automatic rollback", took_traffic, r.ended))
    for rb in rollbacks:
        bad = by_id.get(rb.rollback_of or "")
        if bad is not None and bad.ended is not None and rb.ended is not None:
            incidents.append(
                Incident(bad.id, bad.version, f"rollback {rb.id}", bad.ended, rb.ended)
            )
    return sorted(incidents, key=lambda i: i.began)


def _buckets(
    records: list[ReleaseRecord], start: float | None, end: float | None, unit: str
) -> list[Bucket]:
    """Finished records per day or week, every bucket of the span included, the empty too."""
    buckets: dict[str, Bucket] = {}
    if start is not None and end is not None:
        cursor = bucket_label(start, unit)[1]
        while cursor <= end:
            label, bucket_start = bucket_label(cursor, unit)
            buckets.setdefault(label, Bucket(label, bucket_start))
            cursor += DAY if unit == "day" else 7 * DAY
    for r in records:
        if r.outcome == terms.RUNNING:
            continue
        label, bucket_start = bucket_label(r.started, unit)
        bucket = buckets.setdefault(label, Bucket(label, bucket_start))
        if r.kind == terms.ROLLBACK:
            bucket.rollbacks += r.outcome == terms.SUCCEEDED
        elif r.outcome == terms.SUCCEEDED:
            bucket.succeeded += 1
        else:
            bucket.failed += 1
    return sorted(buckets.values(), key=lambda b: b.start)


def _phase_stats(deployments: list[ReleaseRecord]) -> list[PhaseStats]:
    """Median and p90 of each phase over successful deployments, in deploy order."""
    samples: dict[str, list[float]] = {}
    for r in deployments:
        for phase, seconds in r.phases.items():
            samples.setdefault(phase, []).append(float(seconds))
    known = [p for p in terms.PHASES if p in samples] + sorted(set(samples) - set(terms.PHASES))
    return [
        PhaseStats(p, len(samples[p]), statistics.median(samples[p]), percentile(samples[p], 0.9))
        for p in known
    ]
