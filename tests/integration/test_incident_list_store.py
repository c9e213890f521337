"""The incident list's query (store/incident_list.py) on SQLite and on PostgreSQL.

Incidents come in through the real ingest API; teams come from the real on-call routing at ingest (an alert with
`service=postgres-*` goes to the `database` team, whose escalation pages the `db` rotation); commands and notes
reach the search index through its triggers. Each test asks one filter and checks exactly which incidents come
back, and that the counts per status ignore the status filter while `matching` does not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from teleops.config import Settings
from teleops.domain.command import CommandStatus, Finish
from teleops.domain.incident import IncidentAction, IncidentStatus
from teleops.server.app import create_app
from teleops.server.incident_filters import ListFilters
from teleops.server.services import Services
from teleops.store.commands import create_command, finish_command
from teleops.store.incident_list import IncidentQuery, query_incidents
from teleops.store.incidents import act_on_incident, add_note
from teleops.store.tokens import TokenKind
from tests.conftest import Api, FakeClock
from tests.settings import settings_with

ONCALL: dict[str, Any] = {
    "rotations": [
        {"name": "primary", "members": ["alice"], "shift": "7d", "handoff": "Mon 09:00", "tz": "UTC"},
        {"name": "db", "members": ["dave"], "shift": "7d", "handoff": "Mon 09:00", "tz": "UTC"},
    ],
    "escalation": [{"after": "0m", "notify": "rotation:primary"}],
    "teams": [{"name": "database", "escalation": [{"after": "0m", "notify": "rotation:db"}]}],
    "routes": [{"team": "database", "labels": {"service": "postgres*"}}],
    "delivery_deadline": "7d",
}


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
        users=[{"name": "alice", "telegram_id": 1001}, {"name": "dave", "telegram_id": 1004}],
        oncall=ONCALL,
    )


@pytest.fixture
async def api(settings: Settings, clock: FakeClock) -> AsyncIterator[Api]:
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        ingest = await services.tokens.create(TokenKind.INGEST, "s", now=clock())
        token = await services.tokens.create(TokenKind.API, "a", now=clock(), user_name="alice")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://teleops.test") as client:
            yield Api(client, services, ingest, token)


async def fire(api: Api, check: str, host: str, severity: str, summary: str, **labels: str) -> int:
    body = {"check": check, "host": host, "severity": severity, "summary": summary, "labels": labels}
    response = await api.client.post("/api/v1/alerts/generic", json=body, headers=api.ingest_headers)
    assert response.status_code == 200, response.text
    return int(response.json()["results"][0]["incident_id"])


async def ids(api: Api, **query: Any) -> list[int]:
    listing = await query_incidents(api.services.db, IncidentQuery(**query))
    return [i.id for i in listing.incidents]


async def test_each_filter_finds_its_incidents_and_excludes_the_others(api: Api) -> None:
    disk = await fire(api, "DiskFull", "web-1", "critical", "Disk / is 97% full")
    load = await fire(api, "HighLoad", "web-2", "warning", "Load 12 on 4 CPUs")
    pg = await fire(api, "ReplicationLag", "DB-1", "critical", "replica 40 s behind", service="postgres-main")
    assert await ids(api) == [pg, load, disk], "newest first"
    assert await ids(api, severity="critical") == [pg, disk]
    assert await ids(api, source="generic") == [pg, load, disk]
    assert await ids(api, source="alertmanager") == []
    assert await ids(api, host="web-1") == [disk]
    assert await ids(api, host="db-1") == [pg], "host names compare case-insensitively"
    assert await ids(api, host="web-*") == [load, disk]
    assert await ids(api, host="web_1") == [], "_ is a literal, not a LIKE wildcard"
    assert await ids(api, teams=("database",)) == [pg]
    assert await ids(api, teams=("default",)) == [load, disk]
    assert await ids(api, teams=()) == []
    assert await ids(api, severity="critical", host="web-*") == [disk]


async def test_a_rotation_filter_lists_the_incidents_of_the_teams_it_is_paged_for(api: Api) -> None:
    web = await fire(api, "DiskFull", "web-1", "critical", "Disk / is 97% full")
    pg = await fire(api, "ReplicationLag", "db-1", "critical", "replica behind", service="postgres-main")
    policies = api.services.oncall.directory.policies
    for rotation, expected in (("db", [pg]), ("primary", [web])):
        query = ListFilters(rotation=rotation).store_query(policies=policies, search_commands=True, limit=50)
        listing = await query_incidents(api.services.db, query)
        assert [i.id for i in listing.incidents] == expected, rotation


async def test_text_search_finds_words_from_the_alert_notes_and_commands_unless_commands_are_withheld(
    api: Api,
) -> None:
    db, now = api.services.db, api.services.clock()
    disk = await fire(api, "DiskFull", "web-1", "critical", "Disk / is 97% full")
    load = await fire(api, "HighLoad", "web-2", "warning", "Load 12 on 4 CPUs")
    await add_note(db, load, actor="alice", text="rolled back the canary", now=now, via="test")
    command = await create_command(
        db, requester="alice", host="web-1", agent_name="web-1", argv=["journalctl"], timeout_s=10, now=now,
        incident_id=disk,
    )  # fmt: skip
    await finish_command(db, command.id, Finish(CommandStatus.SUCCEEDED, exit_code=0, output="vacuumed"), now=now)
    assert await ids(api, text="disk full") == [disk]
    assert await ids(api, text="canary") == [load]
    assert await ids(api, text="vacuumed") == [disk]
    assert await ids(api, text="vacuumed", search_commands=False) == []
    assert await ids(api, text='canary" OR "disk') == [], "every word must match; quotes and OR are only words"
    assert await ids(api, text="canary", severity="critical") == []


async def test_counts_per_status_ignore_the_status_filter_and_matching_counts_what_is_listed(api: Api) -> None:
    db, now = api.services.db, api.services.clock()
    first = await fire(api, "A", "web-1", "critical", "a")
    second = await fire(api, "B", "web-2", "critical", "b")
    third = await fire(api, "C", "web-3", "critical", "c")
    await fire(api, "D", "web-4", "info", "d")
    events = api.services.incident_events
    await act_on_incident(db, first, IncidentAction.ACK, actor="alice", now=now, events=events)
    await act_on_incident(db, second, IncidentAction.RESOLVE, actor="alice", now=now, events=events)
    listing = await query_incidents(db, IncidentQuery(statuses=(IncidentStatus.OPEN,), severity="critical", limit=10))
    assert [i.id for i in listing.incidents] == [third]
    assert listing.matching == 1
    assert listing.by_status == {"open": 1, "acknowledged": 1, "snoozed": 0, "resolved": 1}
    unresolved = (IncidentStatus.OPEN, IncidentStatus.ACKNOWLEDGED, IncidentStatus.SNOOZED)
    limited = await query_incidents(db, IncidentQuery(statuses=unresolved, limit=1))
    assert len(limited.incidents) == 1
    assert limited.matching == 3, "the open D, C and the acknowledged A: more match than are listed"
