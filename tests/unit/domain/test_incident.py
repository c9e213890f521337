from __future__ import annotations

import pytest

from teleops.domain.incident import IncidentAction, IncidentStatus, InvalidTransition, next_status

S = IncidentStatus
A = IncidentAction


@pytest.mark.parametrize(
    ("status", "action", "after"),
    [
        (S.OPEN, A.ACK, S.ACKNOWLEDGED),
        (S.OPEN, A.RESOLVE, S.RESOLVED),
        (S.OPEN, A.SNOOZE, S.SNOOZED),
        (S.ACKNOWLEDGED, A.RESOLVE, S.RESOLVED),
        (S.ACKNOWLEDGED, A.SNOOZE, S.SNOOZED),
        (S.SNOOZED, A.ACK, S.ACKNOWLEDGED),
        (S.SNOOZED, A.UNSNOOZE, S.OPEN),
        (S.SNOOZED, A.SNOOZE, S.SNOOZED),
    ],
)
def test_allowed_transitions(status: IncidentStatus, action: IncidentAction, after: IncidentStatus) -> None:
    assert next_status(status, action) is after


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (S.RESOLVED, A.ACK),
        (S.RESOLVED, A.RESOLVE),
        (S.RESOLVED, A.SNOOZE),
        (S.OPEN, A.UNSNOOZE),
        (S.ACKNOWLEDGED, A.ACK),
        (S.ACKNOWLEDGED, A.UNSNOOZE),
    ],
)
def test_refused_transitions_say_what_was_tried(status: IncidentStatus, action: IncidentAction) -> None:
    with pytest.raises(InvalidTransition) as caught:
        next_status(status, action)
    assert str(caught.value) == f"cannot {action.value} an incident that is {status.value}"
