"""Web UI login, CSRF on forms and on the REST API, and the login throttle, through the real app."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from tests.conftest import Api, FakeClock
from tests.settings import settings_with

from teleops.config import Settings
from teleops.store.incidents import get_incident

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

PASSWORD = "correct horse battery"
ALERT = {
    "version": "4",
    "status": "firing",
    "receiver": "teleops",
    "groupKey": '{}:{alertname="DiskFull"}',
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "DiskFull", "instance": "web-1:9100", "severity": "critical"},
            "annotations": {"summary": "<script>alert(1)</script> / is 97% full"},
            "startsAt": "2026-11-25T08:59:00Z",
            "fingerprint": "f00d",
        }
    ],
}


def _form_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF field"
    return match.group(1)


async def _login(client: httpx.AsyncClient, user: str = "alice", password: str = PASSWORD) -> httpx.Response:
    page = await client.get("/ui/login")
    return await client.post(
        "/ui/login", data={"username": user, "password": password, "csrf_token": _form_token(page.text)}
    )


async def _incident(api: Api) -> int:
    response = await api.client.post("/api/v1/alerts/alertmanager", json=ALERT, headers=api.ingest_headers)
    assert response.status_code < 300, response.text
    items = (await api.client.get("/api/v1/incidents", headers=api.api_headers)).json()["items"]
    return int(items[0]["id"])


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    """The root `settings` with the per-user lockout (twofactor.lockout_after) above the per-address throttle, so
    the throttle can be seen; the lockout has its own browser test (tests/integration/test_web_signin.py)."""
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
        twofactor={"lockout_after": 20},
    )


@pytest.fixture
async def alice(api: Api) -> Api:
    assert await api.services.users.set_password("alice", PASSWORD)
    return api


async def test_pages_redirect_to_login_when_logged_out(api: Api) -> None:
    for path in ("/ui/", "/ui/console", "/ui/incidents/1"):
        response = await api.client.get(path)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/ui/login?next=")


async def test_login_sets_a_strict_httponly_session_cookie(alice: Api) -> None:
    response = await _login(alice.client)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/"
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("teleops_session="))
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # public_url is plain http here
    page = await alice.client.get("/ui/")
    assert page.status_code == 200
    assert "alice" in page.text


async def test_wrong_password_is_refused_with_a_way_forward(alice: Api) -> None:
    response = await _login(alice.client, password="nope")
    assert response.status_code == 401
    assert "Wrong user name or password" in response.text
    assert "teleops user set-password" in response.text
    assert "teleops_session" not in alice.client.cookies


async def test_login_without_the_form_token_is_refused(alice: Api) -> None:
    response = await alice.client.post("/ui/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 403
    assert "teleops_session" not in alice.client.cookies


async def test_eleventh_failed_login_in_a_minute_gets_429_even_with_the_right_password(
    alice: Api, clock: FakeClock
) -> None:
    for _ in range(10):
        assert (await _login(alice.client, password="wrong")).status_code == 401
    blocked = await _login(alice.client)
    assert blocked.status_code == 429
    assert "Too many failed logins" in blocked.text
    assert "Wait" in blocked.text
    clock.advance(seconds=61)
    assert (await _login(alice.client)).status_code == 303


async def test_next_parameter_cannot_leave_the_site(alice: Api) -> None:
    page = await alice.client.get("/ui/login", params={"next": "//evil.example/x"})
    response = await alice.client.post(
        "/ui/login",
        data={
            "username": "alice",
            "password": PASSWORD,
            "csrf_token": _form_token(page.text),
            "next": "//evil.example",
        },
    )
    assert response.headers["location"] == "/ui/"


async def test_ack_form_without_csrf_token_changes_nothing(alice: Api) -> None:
    incident_id = await _incident(alice)
    await _login(alice.client)
    response = await alice.client.post(f"/ui/incidents/{incident_id}/ack", data={})
    assert response.status_code == 403
    assert (await get_incident(alice.services.db, incident_id)).status == "open"
    forged = await alice.client.post(f"/ui/incidents/{incident_id}/ack", data={"csrf_token": "forged"})
    assert forged.status_code == 403
    assert (await get_incident(alice.services.db, incident_id)).status == "open"


async def test_ack_form_with_the_session_token_acknowledges(alice: Api) -> None:
    incident_id = await _incident(alice)
    await _login(alice.client)
    page = await alice.client.get(f"/ui/incidents/{incident_id}")
    response = await alice.client.post(f"/ui/incidents/{incident_id}/ack", data={"csrf_token": _form_token(page.text)})
    assert response.status_code == 303
    record = await get_incident(alice.services.db, incident_id)
    assert record.status == "acknowledged"
    assert record.acknowledged_by == "alice"
    assert record.timeline[-1].data["via"] == "web"


async def test_alert_text_is_escaped_on_every_page(alice: Api) -> None:
    incident_id = await _incident(alice)
    await _login(alice.client)
    for path in ("/ui/", f"/ui/incidents/{incident_id}"):
        html = (await alice.client.get(path)).text
        assert "<script>alert(1)</script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_rest_api_accepts_the_session_for_reads_and_demands_csrf_for_writes(alice: Api) -> None:
    incident_id = await _incident(alice)
    await _login(alice.client)
    listed = await alice.client.get("/api/v1/incidents")
    assert listed.status_code == 200
    assert listed.json()["items"][0]["id"] == incident_id
    refused = await alice.client.post(f"/api/v1/incidents/{incident_id}/ack")
    assert refused.status_code == 403
    assert "X-CSRF-Token" in refused.json()["detail"]
    assert (await get_incident(alice.services.db, incident_id)).status == "open"
    token = _form_token((await alice.client.get(f"/ui/incidents/{incident_id}")).text)
    done = await alice.client.post(f"/api/v1/incidents/{incident_id}/ack", headers={"X-CSRF-Token": token})
    assert done.status_code == 200
    assert done.json()["acknowledged_by"] == "alice"


async def test_logout_ends_the_session(alice: Api) -> None:
    await _login(alice.client)
    token = _form_token((await alice.client.get("/ui/")).text)
    response = await alice.client.post("/ui/logout", data={"csrf_token": token})
    assert response.status_code == 303
    assert (await alice.client.get("/ui/")).status_code == 303


async def test_a_forged_session_cookie_is_not_a_login(alice: Api) -> None:
    alice.client.cookies.set("teleops_session", "v1.eyJ1IjogImFkbWluIn0.AAAA")
    assert (await alice.client.get("/ui/")).status_code == 303
    assert (await alice.client.get("/api/v1/incidents")).status_code == 401
