"""Bad input and storage faults on POST /api/v1/alerts/{source}: 4xx/503 answers that change no row.

Runs in-process through the `api` fixture (on SQLite and on PostgreSQL), except the socket-level
size-cap check, which needs a real `teleops serve`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select

from teleops.config import Settings
from teleops.domain.incident import TimelineKind
from teleops.sources.registry import SOURCES
from teleops.store.schema import timeline
from tests.integration import db_state
from tests.integration.servers import TeleopsServer

if TYPE_CHECKING:
    from tests.conftest import Api

FIRING = (SOURCES[0].folder / "fixtures" / "firing.json").read_bytes()
MiB = 1024 * 1024
BUSY_TIMEOUT_MS = 300


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A short SQLite busy timeout, so a locked database answers 503 quickly instead of after 5 s."""
    database = settings.database.model_copy(update={"busy_timeout_ms": BUSY_TIMEOUT_MS})
    return settings.model_copy(update={"database": database})


async def row_counts(api: Api) -> dict[str, int]:
    """Rows in every table: the whole state a rejected request must leave alone."""
    return await db_state.row_counts(api.services.db)


async def timeline_kinds(api: Api) -> list[str]:
    async with api.services.db.engine.connect() as conn:
        return list((await conn.execute(select(timeline.c.kind).order_by(timeline.c.id))).scalars())


def sqlite_file(settings: Settings) -> Path:
    return Path(settings.database.url.removeprefix("sqlite+aiosqlite:///"))


# --- storage faults -------------------------------------------------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_locked_database_answers_503_then_the_retry_stores_once(api: Api, settings: Settings) -> None:
    before = await row_counts(api)
    holder = sqlite3.connect(sqlite_file(settings), isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock past our busy timeout
        refused = await api.client.post("/api/v1/alerts/alertmanager", content=FIRING, headers=api.ingest_headers)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"]
        assert "nothing was stored" in refused.json()["detail"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert await row_counts(api) == before, "a 503 must leave nothing half-written"

    retried = await api.client.post("/api/v1/alerts/alertmanager", content=FIRING, headers=api.ingest_headers)
    assert retried.status_code == 200, retried.text
    assert [r["outcome"] for r in retried.json()["results"]] == ["created"]
    again = await api.client.post("/api/v1/alerts/alertmanager", content=FIRING, headers=api.ingest_headers)
    assert [r["outcome"] for r in again.json()["results"]] == ["duplicate"]
    after = await row_counts(api)
    assert after["incidents"] == before["incidents"] + 1
    assert after["timeline_events"] == before["timeline_events"] + 1


async def test_fifty_concurrent_copies_of_one_delivery_make_one_incident(api: Api) -> None:
    responses = await asyncio.gather(
        *(api.client.post("/api/v1/alerts/alertmanager", content=FIRING, headers=api.ingest_headers) for _ in range(50))
    )
    assert [r.status_code for r in responses] == [200] * 50
    outcomes = sorted(r.json()["results"][0]["outcome"] for r in responses)
    assert outcomes == ["created"] + ["duplicate"] * 49
    assert len({r.json()["results"][0]["incident_id"] for r in responses}) == 1
    counts = await row_counts(api)
    assert counts["incidents"] == 1
    assert await timeline_kinds(api) == [TimelineKind.ALERT_FIRED.value]

    listed = await api.client.get("/api/v1/incidents", headers=api.api_headers)
    [incident] = listed.json()["items"]
    assert incident["count"] == 50


# --- the size cap ---------------------------------------------------------------------------------


@dataclass
class CountingBody:
    """A streamed request body that records how much of it the server pulled."""

    total: int
    chunk: int = 64 * 1024
    sent: int = field(default=0)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            self.sent += self.chunk
            yield b" " * self.chunk


async def test_body_over_the_cap_is_413_without_reading_it_all(api: Api) -> None:
    before = await row_counts(api)
    url = "/api/v1/alerts/alertmanager"
    over = b"[" + b" " * MiB + b"]"

    honest = await api.client.post(url, content=over, headers=api.ingest_headers)
    assert honest.status_code == 413, honest.text
    assert "max_body_bytes" in honest.json()["detail"]

    # Declares a small body, sends a big one: the cap counts the bytes, not the header.
    lying = await api.client.post(url, content=over, headers={**api.ingest_headers, "Content-Length": "100"})
    assert lying.status_code == 413

    # No Content-Length at all (chunked): stops reading soon after the cap, long before the end.
    stream = CountingBody(total=64 * MiB)
    chunked = await api.client.post(url, content=stream, headers=api.ingest_headers)
    assert chunked.status_code == 413
    assert stream.sent <= MiB + 2 * stream.chunk, f"read {stream.sent} bytes of a body refused at 1 MiB"

    assert await row_counts(api) == before


def test_declared_length_over_the_cap_is_refused_before_the_body_is_sent(
    teleops_server: Callable[..., TeleopsServer],
) -> None:
    """On a real socket: the 413 arrives while the client has sent only headers (50 MiB declared)."""
    server = teleops_server()
    port = int(server.url.rsplit(":", 1)[1])
    head = (
        "POST /api/v1/alerts/alertmanager HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {server.ingest_token}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {50 * MiB}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            assert chunk, f"connection closed without an answer: {answer!r}"
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert server.incidents() == []


# --- requests that must be refused and change nothing ---------------------------------------------


@dataclass(frozen=True)
class Bad:
    name: str
    status: int
    body: bytes = FIRING
    headers: tuple[tuple[str, str], ...] | None = None  # None: the valid ingest token
    path: str | None = None  # None: the source's endpoint


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def corpus() -> list[Bad]:
    """Bodies and headers a sender might get wrong, or an attacker might try. Same answer for every source."""
    return [
        Bad("no token", 401, headers=()),
        Bad("wrong token", 401, headers=(("Authorization", "Bearer tlo_in_not-a-real-token"),)),
        Bad("not bearer", 401, headers=(("Authorization", "Token whatever"),)),
        Bad("empty bearer", 401, headers=(("Authorization", "Bearer "),)),
        Bad("bad basic", 401, headers=(("Authorization", "Basic !!!not-base64"),)),
        Bad("api token for ingest", 401, headers=(("Authorization", "API"),)),  # filled in by the test
        Bad("two authorization headers", 401, headers=(("Authorization", "VALID"), ("Authorization", "VALID"))),
        Bad("very long token", 401, headers=(("Authorization", "Bearer " + "x" * 10_000),)),
        Bad("unknown source", 404, path="/api/v1/alerts/nagios-classic"),
        Bad("empty body", 400, body=b""),
        Bad("truncated JSON", 400, body=FIRING[: len(FIRING) // 2]),
        Bad("trailing garbage", 400, body=b'{"alerts": []} x'),
        Bad("duplicate keys", 400, body=b'{"alerts": [], "alerts": []}'),
        Bad("NaN", 400, body=b'{"alerts": [], "n": NaN}'),
        Bad("Infinity", 400, body=b'{"alerts": [], "n": Infinity}'),
        Bad("-Infinity", 400, body=b'{"alerts": [], "n": -Infinity}'),
        Bad("10^400", 400, body=b'{"alerts": [], "n": 1' + b"0" * 400 + b"}"),
        Bad("1e400", 400, body=b'{"alerts": [], "n": 1e400}'),
        Bad("nesting 10000 deep", 400, body=b'{"alerts": [], "n": ' + _deep(10_000) + b"}"),
        Bad("nesting 10000 deep, bare", 400, body=_deep(10_000)),
        Bad("invalid UTF-8", 400, body=b'{"alerts": [], "n": "\xff\xfe"}'),
        Bad("UTF-16", 400, body='{"alerts": []}'.encode("utf-16")),
        Bad("lone surrogate escape is fine JSON but not an object", 422, body=b'"\\ud800"'),
        Bad("top-level array", 422, body=b"[]"),
        Bad("top-level string", 422, body=b'"firing"'),
        Bad("top-level number", 422, body=b"42"),
        Bad("top-level null", 422, body=b"null"),
        Bad("top-level true", 422, body=b"true"),
    ]


def _headers(bad: Bad, api: Api) -> list[tuple[str, str]]:
    if bad.headers is None:
        return [("Authorization", f"Bearer {api.ingest_token}"), ("Content-Type", "application/json")]
    out = [("Content-Type", "application/json")]
    for name, value in bad.headers:
        if value == "VALID":
            value = f"Bearer {api.ingest_token}"
        elif value == "API":
            value = f"Bearer {api.api_token}"
        out.append((name, value))
    return out


@pytest.mark.parametrize("source", [s.name for s in SOURCES])
async def test_rejected_requests_change_no_row(api: Api, source: str) -> None:
    # Some state first, so "unchanged" covers updates to existing rows as well as inserts.
    seeded = await api.client.post("/api/v1/alerts/alertmanager", content=FIRING, headers=api.ingest_headers)
    assert seeded.status_code == 200
    # Let the seed's notification deliveries finish, so any change below comes from a refused request.
    before = await db_state.settled_row_counts(api.services.db)
    wrong: list[str] = []
    for bad in corpus():
        response = await api.client.post(
            bad.path or f"/api/v1/alerts/{source}", content=bad.body, headers=_headers(bad, api)
        )
        if response.status_code != bad.status:
            wrong.append(f"{bad.name}: {response.status_code} (expected {bad.status}) {response.text[:200]}")
            continue
        detail = response.json().get("detail")
        if not isinstance(detail, str) or len(detail) < 10:
            wrong.append(f"{bad.name}: no explanation in the answer: {response.text[:200]}")
        if bad.status == 422 and not response.json().get("field"):
            wrong.append(f"{bad.name}: a 422 must name the field: {response.text[:200]}")
    assert wrong == [], "\n".join(wrong)
    assert await row_counts(api) == before, "a rejected request changed the database"
    # Nothing was stored, and the one incident is exactly as the first delivery left it.
    listed = (await api.client.get("/api/v1/incidents", headers=api.api_headers)).json()["items"]
    assert [i["count"] for i in listed] == [1]


async def test_schema_errors_name_the_field_path(api: Api) -> None:
    """Wrong types deep inside an Alertmanager body: 422 whose `field` is the path to the bad value."""
    valid: dict[str, Any] = json.loads(FIRING)
    cases: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
        ("alerts", lambda body: body.__setitem__("alerts", "not a list")),
        ("alerts[0]", lambda body: body["alerts"].__setitem__(0, 7)),
        ("alerts[0].status", lambda body: body["alerts"][0].__setitem__("status", "burning")),
        ("alerts[0].labels", lambda body: body["alerts"][0].__setitem__("labels", ["a"])),
        ("alerts[0].labels.alertname", lambda body: body["alerts"][0]["labels"].pop("alertname")),
        ("alerts[0].startsAt", lambda body: body["alerts"][0].__setitem__("startsAt", "yesterday")),
        ("version", lambda body: body.__setitem__("version", "3")),
    ]
    before = await row_counts(api)
    for expected_field, damage in cases:
        body = json.loads(json.dumps(valid))
        damage(body)
        response = await api.client.post("/api/v1/alerts/alertmanager", json=body, headers=api.ingest_headers)
        assert response.status_code == 422, (expected_field, response.text)
        assert response.json()["field"] == expected_field, response.text
    assert await row_counts(api) == before
