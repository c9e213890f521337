"""The incident (scenario) state machine: open -> acknowledged -> resolved, plus snoozed."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "TIMELINE_TITLES",
    "IncidentAction",
    "IncidentNotFound",
    "IncidentRecord",
    "IncidentStatus",
    "InvalidTransition",
    "TimelineEvent",
    "TimelineKind",
    "next_status",
]


class IncidentStatus(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    SNOOZED = "snoozed"
    RESOLVED = "resolved"


class IncidentAction(enum.StrEnum):
    ACK = "ack"
    RESOLVE = "resolve"
    SNOOZE = "snooze"
    UNSNOOZE = "unsnooze"


class TimelineKind(enum.StrEnum):
    """What can happen to an incident; each timeline event carries one of these."""

    ALERT_FIRED = "alert.fired"
    ALERT_UPDATED = "alert.updated"
    ALERT_RESOLVED = "alert.resolved"
    ACKNOWLEDGED = "incident.acknowledged"
    RESOLVED = "incident.resolved"
    SNOOZED = "incident.snoozed"
    UNSNOOZED = "incident.unsnoozed"
    REOPENED_AS = "incident.recurred"
    NOTIFIED = "notified"
    ESCALATED = "escalated"
    NOTE = "note"
    COMMAND_REQUESTED = "command.requested"
    COMMAND_DENIED = "command.denied"
    COMMAND_APPROVED = "command.approved"
    COMMAND_FINISHED = "command.finished"
    HANDED_OVER = "handed_over"


# What a person reads for each timeline kind, on the incident page and in the postmortem export (one list, so the
# two cannot drift apart). Kinds not listed are shown as they are.
TIMELINE_TITLES: dict[str, str] = {
    "alert.fired": "Alert fired",
    "alert.updated": "Alert updated",
    "alert.resolved": "Alert resolved by its sender",
    "incident.acknowledged": "Acknowledged",
    "incident.resolved": "Resolved",
    "incident.snoozed": "Snoozed",
    "incident.unsnoozed": "Snooze ended",
    "incident.recurred": "Fired again as a new incident",
    "notified": "Notified",
    "escalated": "Escalated",
    "page.delivered": "Page delivered",
    "page.sent": "Page sent",
    "page.failed": "Page failed",
    "reminded": "Reminded",
    "note": "Note",
    "command.requested": "Command requested",
    "command.denied": "Command denied",
    "command.approved": "Command approved",
    "command.finished": "Command finished",
    "handed_over": "Handed over",
}


class InvalidTransition(Exception):
    """The action is not possible in the incident's current status."""

    def __init__(self, status: IncidentStatus, action: IncidentAction) -> None:
        super().__init__(f"cannot {action.value} an incident that is {status.value}")
        self.status = status
        self.action = action


_TRANSITIONS: dict[tuple[IncidentStatus, IncidentAction], IncidentStatus] = {
    (IncidentStatus.OPEN, IncidentAction.ACK): IncidentStatus.ACKNOWLEDGED,
    (IncidentStatus.OPEN, IncidentAction.RESOLVE): IncidentStatus.RESOLVED,
    (IncidentStatus.OPEN, IncidentAction.SNOOZE): IncidentStatus.SNOOZED,
    (IncidentStatus.ACKNOWLEDGED, IncidentAction.RESOLVE): IncidentStatus.RESOLVED,
    (IncidentStatus.ACKNOWLEDGED, IncidentAction.SNOOZE): IncidentStatus.SNOOZED,
    (IncidentStatus.SNOOZED, IncidentAction.ACK): IncidentStatus.ACKNOWLEDGED,
    (IncidentStatus.SNOOZED, IncidentAction.RESOLVE): IncidentStatus.RESOLVED,
    (IncidentStatus.SNOOZED, IncidentAction.SNOOZE): IncidentStatus.SNOOZED,
    (IncidentStatus.SNOOZED, IncidentAction.UNSNOOZE): IncidentStatus.OPEN,
}


def next_status(status: IncidentStatus, action: IncidentAction) -> IncidentStatus:
    """The status after `action`; raises InvalidTransition (e.g. acking a resolved incident).

    Acknowledging an acknowledged incident is not a transition: callers treat it as "already done".
    """
    try:
        return _TRANSITIONS[(status, action)]
    except KeyError:
        raise InvalidTransition(status, action) from None


class IncidentNotFound(LookupError):
    def __init__(self, incident_id: int) -> None:
        super().__init__(f"incident {incident_id} does not exist; list them with GET /api/v1/incidents")
        self.incident_id = incident_id


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    id: int
    at: datetime
    kind: str
    actor: str | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    id: int
    source: str
    fingerprint: str
    status: str
    name: str
    severity: str
    host: str | None
    summary: str
    description: str
    labels: dict[str, str]
    annotations: dict[str, str]
    url: str | None
    count: int
    starts_at: datetime | None
    created_at: datetime
    last_seen_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    snoozed_until: datetime | None
    resolved_at: datetime | None
    resolved_by: str | None
    predecessor_id: int | None
    timeline: tuple[TimelineEvent, ...] = ()
