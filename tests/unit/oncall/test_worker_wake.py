"""The escalation loop wakes after an ingest only when the ingest started an escalation."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.settings import settings_with

from teleops.oncall.directory import OnCallDirectory
from teleops.oncall.worker import EscalationWorker
from teleops.sources.alertmanager.parse import parse_alertmanager
from teleops.store.database import Database
from teleops.store.ingest import IncidentChange, Outcome

from ..sources.fixture_bodies import fixture_body

ALERT = parse_alertmanager(fixture_body("alertmanager", "firing"))[0]
ONCALL = {
    "rotations": [{"name": "primary", "members": ["alice"], "shift": "1d", "handoff": "09:00"}],
    "escalation": [{"after": "0s", "notify": "rotation:primary"}],
}


def _worker(**sections: object) -> EscalationWorker:
    directory = OnCallDirectory(settings_with(users=[{"name": "alice"}], **sections))
    return EscalationWorker(Database("sqlite+aiosqlite://"), directory, clock=lambda: datetime.now(UTC))


def test_a_new_incident_with_an_escalation_policy_wakes_the_loop() -> None:
    assert _worker(oncall=ONCALL).escalates([IncidentChange(1, Outcome.CREATED, ALERT)])


def test_updates_resolutions_and_incidents_without_a_policy_do_not() -> None:
    assert not _worker(oncall=ONCALL).escalates(
        [IncidentChange(1, Outcome.UPDATED, ALERT), IncidentChange(2, Outcome.RESOLVED, ALERT)]
    )
    assert not _worker().escalates([IncidentChange(1, Outcome.CREATED, ALERT)])
