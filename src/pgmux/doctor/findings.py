"""What the doctor reports: findings, their severities, the diagnosis and the thresholds the
rules judge by (plain data, shared by every rule module and the reports)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["info", "warning", "critical"]
Status = Literal["ok", "warning", "critical"]

SEVERITY_RANK: Mapping[Severity, int] = {"info": 0, "warning": 1, "critical": 2}
EXIT_CODES: Mapping[Status, int] = {"ok": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True)
class Thresholds:
    """What the rules call too many or too long; the doctor's flags set them."""

    idle: float = 300.0  # seconds idle before a connection counts as a likely leak
    # NOTE: a session idle in transaction holds its locks and a slot at any age: it is reported
    # from `idle_in_transaction_floor` on (info), a warning from `idle_in_transaction`, critical
    # from `idle_in_transaction_critical`.
    idle_in_transaction: float = 30.0
    idle_in_transaction_critical: float = 300.0
    idle_in_transaction_floor: float = 1.0
    long_query: float = 60.0  # seconds a query may run before it is reported
    near_limit: float = 0.80  # share of a limit in use that earns a warning
    at_limit: float = 0.95  # ... and a critical
    idle_group_warning: int = 5  # idle sessions in one group that make it a warning, not info
    many_per_client: int = 10  # sessions from one client address that suggest no pool there
    # NOTE: a pool whose pinned servers are more than this share of its servers warns: pins
    # keep a server from everyone else until the client lets its session state go.
    pinned_share: float = 0.5


@dataclass(frozen=True)
class Finding:
    """One thing the doctor noticed; `evidence` is plain JSON-able data."""

    code: str
    severity: Severity
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "evidence": dict(self.evidence),
        }


@dataclass(frozen=True)
class Diagnosis:
    """Findings, the advice drawn from them, and the overall status."""

    findings: tuple[Finding, ...]
    advice: tuple[str, ...]

    @property
    def status(self) -> Status:
        worst = max((SEVERITY_RANK[f.severity] for f in self.findings), default=0)
        statuses: tuple[Status, ...] = ("ok", "warning", "critical")
        return statuses[worst]

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def to_json(self) -> dict[str, Any]:
        return {
            "findings": [f.to_json() for f in self.findings],
            "advice": list(self.advice),
            "status": self.status,
        }
