"""The incident (scenario) state machine: open -> acknowledged -> resolved, plus snoozed."""

from __future__ import annotations

import enum

__all__ = ["TIMELINE_TITLES", "IncidentAction", "IncidentStatus", "InvalidTransition", "TimelineKind", "next_status"]


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
