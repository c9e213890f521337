"""Web console logins are in the audit chain: success (written before the session cookie is issued: no audit
record, no session) and failure with the user name tried and why — never the password."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection
from tests.conftest import Api

from teleops.server.session import SESSION_COOKIE
from teleops.store.audit import AuditEvent, iter_events

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

PASSWORD = "correct horse battery"
WRONG = "wrong-password-canary-5f1c"


async def _login(client: httpx.AsyncClient, user: str, password: str) -> httpx.Response:
    page = await client.get("/ui/login")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, "the login page has no CSRF field"
    return await client.post("/ui/login", data={"username": user, "password": password, "csrf_token": match.group(1)})


async def _events(api: Api) -> list[AuditEvent]:
    def read(conn: Connection) -> list[AuditEvent]:
        return [e for e in iter_events(conn) if e.action.startswith("login.")]

    return await api.services.db.run_in_transaction(read)


async def test_success_and_failures_are_audited_without_the_password(api: Api) -> None:
    assert await api.services.users.set_password("alice", PASSWORD)
    assert (await _login(api.client, "alice", WRONG)).status_code == 401
    assert (await _login(api.client, "mallory", WRONG)).status_code == 401
    ok = await _login(api.client, "alice", PASSWORD)
    assert ok.status_code == 303
    assert SESSION_COOKIE in ok.cookies
    found = await _events(api)
    assert [(e.actor, e.action, e.subject) for e in found] == [
        ("alice", "login.failed", "user:alice"),
        ("mallory", "login.failed", "user:mallory"),
        ("alice", "login.succeeded", "user:alice"),
    ]
    assert found[0].data["reason"] == "wrong user name or password"
    assert found[2].data["via"] == "web"
    for event in found:
        assert WRONG not in repr(event.to_json())
        assert PASSWORD not in repr(event.to_json())


async def test_no_audit_record_means_no_session(api: Api) -> None:
    assert await api.services.users.set_password("alice", PASSWORD)

    def break_audit(conn: Connection) -> tuple[int, str]:
        head = conn.execute(text("SELECT seq, hash FROM audit_head WHERE id = 1")).one()
        conn.execute(text("DELETE FROM audit_head"))
        return int(head.seq), str(head.hash)

    def repair_audit(conn: Connection) -> None:  # so the shutdown checkpoint has a head to anchor
        conn.execute(
            text("INSERT INTO audit_head (id, seq, hash) VALUES (1, :seq, :hash)"), {"seq": seq, "hash": hash_}
        )

    seq, hash_ = await api.services.db.run_in_transaction(break_audit)
    refused = await _login(api.client, "alice", PASSWORD)
    assert refused.status_code == 503
    assert "audit log could not record the login" in refused.text
    assert SESSION_COOKIE not in refused.cookies
    assert (await api.client.get("/ui/", follow_redirects=False)).status_code in (302, 303, 307)
    await api.services.db.run_in_transaction(repair_audit)
    assert await _events(api) == []
