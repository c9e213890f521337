"""Scenario search on SQLite (FTS5) and PostgreSQL (tsvector): what is indexed, ranking, paging, hostile queries.

Rows are written through the real write paths (ingest over HTTP, notes, the command store); the search
index is fed by the migration's triggers, so these tests also prove those paths reach it.
"""

from __future__ import annotations

from typing import Any

import pytest

from teleops.domain.command import CommandStatus, Finish
from teleops.store.commands import create_command, finish_command
from teleops.store.incidents import add_note
from tests.conftest import Api


async def open_incident(api: Api, name: str, host: str, summary: str) -> int:
    body = {"check": name, "host": host, "summary": summary, "dedup_key": f"{name}-{host}"}
    response = await api.client.post("/api/v1/alerts/generic", json=body, headers=api.ingest_headers)
    assert response.status_code == 200, response.text
    return int(response.json()["results"][0]["incident_id"])


async def ran(api: Api, incident_id: int | None, argv: list[str], output: str) -> None:
    db, now = api.services.db, api.services.clock()
    record = await create_command(
        db,
        requester="alice",
        host="web-1",
        agent_name="web-1",
        argv=argv,
        timeout_s=10,
        now=now,
        incident_id=incident_id,
    )
    await finish_command(db, record.id, Finish(CommandStatus.SUCCEEDED, exit_code=0, output=output), now=now)


async def search(api: Api, q: str, **params: Any) -> dict[str, Any]:
    response = await api.client.get("/api/v1/scenarios", params={"q": q, **params}, headers=api.api_headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def ids(result: dict[str, Any]) -> list[int]:
    return [item["incident_id"] for item in result["items"]]


async def test_finds_a_scenario_by_a_word_from_its_command_output(api: Api) -> None:
    disk = await open_incident(api, "DiskFull", "db-1", "Disk / is 97% full")
    await open_incident(api, "HighLoad", "web-1", "load 12")
    await ran(api, disk, ["journalctl", "--vacuum-size=500M"], "Vacuuming done, freed 1.2G of archived journals")
    await ran(api, None, ["echo", "archived"], "archived")  # a command on no incident belongs to no scenario
    found = await search(api, "archived journals")
    assert ids(found) == [disk]
    assert "archived" in found["items"][0]["snippet"].lower()
    assert found["items"][0]["name"] == "DiskFull"


async def test_every_kind_of_text_is_searchable(api: Api) -> None:
    incident = await open_incident(api, "NginxDown", "edge-7", "upstream timed out")
    await add_note(
        api.services.db, incident, actor="bob", text="rolled back the canary", now=api.services.clock(), via="test"
    )
    await ran(api, incident, ["systemctl", "restart", "nginx"], "")
    for word in ("nginxdown", "edge", "upstream", "canary", "systemctl"):
        assert ids(await search(api, word)) == [incident], word


async def test_more_mentions_rank_first_and_all_words_must_match(api: Api) -> None:
    once = await open_incident(api, "HighLoad", "web-2", "load is high")
    await ran(api, once, ["uptime"], "ok " * 60 + "nginx")
    often = await open_incident(api, "NginxDown", "web-3", "nginx is down")
    await ran(api, often, ["systemctl", "restart", "nginx"], "restarted nginx")
    await add_note(api.services.db, often, actor="alice", text="nginx again", now=api.services.clock(), via="test")
    assert ids(await search(api, "nginx")) == [often, once]
    assert ids(await search(api, "nginx restarted")) == [often]
    assert ids(await search(api, "nginx nowhere")) == []


async def test_results_are_paged(api: Api) -> None:
    made = [await open_incident(api, f"Flaky{n}", f"host-{n}", "flaky probe") for n in range(5)]
    first = await search(api, "flaky", limit=2)
    second = await search(api, "flaky", limit=2, offset=first["next_offset"])
    last = await search(api, "flaky", limit=2, offset=second["next_offset"])
    assert first["next_offset"] == 2
    assert second["next_offset"] == 4
    assert last["next_offset"] is None
    assert sorted(ids(first) + ids(second) + ids(last)) == sorted(made)
    assert len(set(ids(first) + ids(second) + ids(last))) == 5


@pytest.mark.parametrize(
    "q", ['"', "nginx OR", "NEAR(nginx)", "nginx*", "col:nginx", "'; DROP TABLE incidents; --", "!!!", "&|"]
)
async def test_query_syntax_is_never_interpreted(api: Api, q: str) -> None:
    incident = await open_incident(api, "NginxDown", "web-1", "nginx is down")
    result = await search(api, q)
    assert ids(result) in ([], [incident])
    assert ids(await search(api, "nginx")) == [incident]  # and the table is still there


async def test_search_needs_a_token_and_a_query(api: Api) -> None:
    assert (await api.client.get("/api/v1/scenarios", params={"q": "x"})).status_code == 401
    assert (await api.client.get("/api/v1/scenarios", headers=api.api_headers)).status_code == 422
