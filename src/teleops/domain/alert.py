"""The normalised alert every source parser produces."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["Alert", "AlertStatus", "Severity", "host_from_labels"]


class AlertStatus(enum.StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"
    # Only senders with their own acknowledge verb (PagerDuty Events v2) produce this.
    ACKNOWLEDGED = "acknowledged"


class Severity(enum.StrEnum):
    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    UNKNOWN = "unknown"

    @classmethod
    def from_text(cls, text: str | None) -> Severity:
        """Map the many spellings senders use onto our five levels; unknown words give UNKNOWN."""
        if not text:
            return cls.UNKNOWN
        return _SEVERITY_WORDS.get(text.strip().lower(), cls.UNKNOWN)


_SEVERITY_WORDS: dict[str, Severity] = {
    "critical": Severity.CRITICAL,
    "crit": Severity.CRITICAL,
    "disaster": Severity.CRITICAL,
    "fatal": Severity.CRITICAL,
    "page": Severity.CRITICAL,
    "p1": Severity.CRITICAL,
    "emergency": Severity.CRITICAL,
    "high": Severity.ERROR,
    "error": Severity.ERROR,
    "err": Severity.ERROR,
    "major": Severity.ERROR,
    "p2": Severity.ERROR,
    "average": Severity.ERROR,
    "warning": Severity.WARNING,
    "warn": Severity.WARNING,
    "minor": Severity.WARNING,
    "p3": Severity.WARNING,
    "info": Severity.INFO,
    "information": Severity.INFO,
    "informational": Severity.INFO,
    "notice": Severity.INFO,
    "low": Severity.INFO,
    "ok": Severity.INFO,
    "p4": Severity.INFO,
    "p5": Severity.INFO,
    "not classified": Severity.UNKNOWN,
}

# Labels that name the machine an alert is about, most specific first.
_HOST_LABELS = ("teleops_host", "host", "hostname", "nodename", "node", "instance")


def host_from_labels(labels: Mapping[str, str]) -> str | None:
    """The host an alert is about, from its labels; `instance` loses its `:port`.

    Returns None when no label names a host. The result is untrusted text: callers map it to an
    agent through the inventory, never into a command.
    """
    for key in _HOST_LABELS:
        value = labels.get(key, "").strip()
        if value:
            return _strip_port(value)
    return None


def _strip_port(value: str) -> str:
    if value.startswith("["):  # [::1]:9100
        end = value.find("]")
        return value[1:end] if end > 0 else value
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        if port.isdigit():
            return host
    return value


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert as a sender reported it, normalised. Labels and text are untrusted data."""

    source: str
    fingerprint: str
    status: AlertStatus
    name: str
    severity: Severity = Severity.UNKNOWN
    host: str | None = None
    summary: str = ""
    description: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    url: str | None = None

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict with stable key order (used by the reviewed `*.expected.json` fixtures)."""
        return {
            "source": self.source,
            "fingerprint": self.fingerprint,
            "status": self.status.value,
            "name": self.name,
            "severity": self.severity.value,
            "host": self.host,
            "summary": self.summary,
            "description": self.description,
            "labels": dict(sorted(self.labels.items())),
            "annotations": dict(sorted(self.annotations.items())),
            "starts_at": self.starts_at.isoformat() if self.starts_at else None,
            "ends_at": self.ends_at.isoformat() if self.ends_at else None,
            "url": self.url,
        }
