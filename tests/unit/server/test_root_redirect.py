"""`GET /` leads to the web UI: the login page for a stranger, the incident list for someone logged in."""

from __future__ import annotations

import re

import pytest
from tests.conftest import Api

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

PASSWORD = "correct horse battery"


async def test_root_redirects_to_the_web_ui(api: Api) -> None:
    response = await api.client.get("/")
    assert response.status_code in (303, 307)
    assert response.headers["location"] == "/ui/"


async def test_root_ends_at_the_login_page_when_logged_out(api: Api) -> None:
    response = await api.client.get("/", follow_redirects=True)
    assert response.status_code == 200
    assert response.url.path == "/ui/login"
    assert [r.headers["location"] for r in response.history] == ["/ui/", "/ui/login?next=/ui/"]
    assert 'name="password"' in response.text


async def test_root_ends_at_the_incident_list_when_logged_in(api: Api) -> None:
    assert await api.services.users.set_password("alice", PASSWORD)
    form = (await api.client.get("/ui/login")).text
    match = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert match, "the login page has no CSRF field"
    login = await api.client.post(
        "/ui/login", data={"username": "alice", "password": PASSWORD, "csrf_token": match.group(1)}
    )
    assert login.status_code == 303
    response = await api.client.get("/", follow_redirects=True)
    assert response.status_code == 200
    assert response.url.path == "/ui/"
    assert [r.status_code for r in response.history] == [303]
    assert "alice" in response.text


async def test_root_is_not_in_the_api_schema(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    assert "/" not in schema["paths"]
    assert "/docs" not in schema["paths"]
