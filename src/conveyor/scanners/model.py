"""One model for every scanner: a finding record and the status of each scanner run.

Every tool's output is turned into :class:`Finding` records with a normalised severity, and
every run ends in exactly one :class:`Status`. ``unavailable`` and ``error`` carry the reason: a
scanner that could not run, or crashed, is never reported as "no findings".
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal, get_args

# What a scan gates: a proposal (``pr``), what lands (``main``) or what is released
# (``production``). The policy's ``[unavailable]`` table says which fail closed.
GateContext = Literal["pr", "main", "production"]
CONTEXTS: tuple[GateContext, ...] = get_args(GateContext)

SEVERITIES = ("critical", "high", "medium", "low", "info")
_ALIASES = {
    "critical": "critical",
    "high": "high",
    "error": "high",
    "medium": "medium",
    "moderate": "medium",
    "warning": "medium",
    "low": "low",
    "info": "info",
    "informational": "info",
    "note": "info",
    "none": "info",
}


def normalize_severity(raw: object, *, unknown: str = "medium") -> str:
    """Map a tool's severity word onto critical/high/medium/low/info.

    A word we do not know becomes ``unknown`` (medium by default): an unrated finding must not
    slip under the gate just because its tool has no severity scale.
    """
    return _ALIASES.get(str(raw).strip().lower(), unknown)


def severity_rank(severity: str) -> int:
    """Higher is worse: critical 4 … info 0."""
    return len(SEVERITIES) - 1 - SEVERITIES.index(severity)


def at_least(severity: str, threshold: str) -> bool:
    return severity_rank(severity) >= severity_rank(threshold)


class Status(StrEnum):
    OK = "ok"
    FINDINGS = "findings"
    UNAVAILABLE = "unavailable"
    ERROR = "error"


@dataclass(frozen=True)
class Finding:
    """One problem reported by one scanner, in the same shape whatever the tool."""

    scanner: str
    rule: str
    severity: str
    location: str
    message: str
    fix: str = ""
    path: str | None = None
    line: int | None = None
    aliases: tuple[str, ...] = ()
    help_uri: str = ""
    title: str = ""
    # What the finding belongs to when a scanner looks at several things: an image name, a
    # requirements target. Empty for plain source findings.
    component: str = ""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} is not one of {', '.join(SEVERITIES)}")

    @property
    def fingerprint(self) -> str:
        """Stable across runs: scanner, rule and where (not the wording of the message)."""
        key = "\x1f".join((self.scanner, self.rule, self.location))
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.rule, *self.aliases)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["aliases"] = list(self.aliases)
        data["fingerprint"] = self.fingerprint
        return data


@dataclass
class ScannerRun:
    """What one scanner did: its status, why (for unavailable/error/notes) and its findings."""

    scanner: str
    status: Status
    reason: str = ""
    findings: list[Finding] = field(default_factory=list)
    tool: str = ""
    version: str = ""
    duration: float = 0.0
    notes: list[str] = field(default_factory=list)
    # Parts the tool could not analyse although it ran: the gate shows them as warnings.
    warnings: list[str] = field(default_factory=list)
    required: bool = True
    # Scanner-specific facts for the steps after the gate (e.g. per-image scan details).
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def completed(
        cls, scanner: str, findings: list[Finding], *, notes: list[str] | None = None
    ) -> ScannerRun:
        unique = list({f.fingerprint: f for f in findings}.values())
        unique.sort(key=lambda f: (-severity_rank(f.severity), f.location, f.rule))
        return cls(
            scanner=scanner,
            status=Status.FINDINGS if unique else Status.OK,
            findings=unique,
            notes=list(notes or []),
        )

    @classmethod
    def unavailable(cls, scanner: str, reason: str) -> ScannerRun:
        return cls(scanner=scanner, status=Status.UNAVAILABLE, reason=reason)

    @classmethod
    def error(cls, scanner: str, reason: str) -> ScannerRun:
        return cls(scanner=scanner, status=Status.ERROR, reason=reason)

    @property
    def ran(self) -> bool:
        return self.status in (Status.OK, Status.FINDINGS)

    @property
    def label(self) -> str:
        """``ok``, ``findings``, ``unavailable (why)``, ``error (why)``."""
        return f"{self.status.value} ({self.reason})" if self.reason else self.status.value

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(SEVERITIES, 0)
        for finding in self.findings:
            counts[finding.severity] += 1
        return counts
