"""A web console session ends when it ends (issue #18): a cookie from before a logout, a password change or a role
change opens nothing, nor one idle too long or older than its lifetime; on every replica at once. Driven through
the real app over HTTP on SQLite and PostgreSQL, with the FakeClock for expiry."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from teleops.config import Settings
from teleops.server.app import create_app
from teleops.server.routes.ui_console import CLOSE_SESSION_ENDED
from teleops.server.services import Services
from teleops.server.session import SESSION_COOKIE
from teleops.store.audit import AuditEvent, iter_events
from teleops.store.schema import web_sessions
from tests.conftest import Api, FakeClock
from tests.settings import settings_with

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a whole new password"


def _form_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF field"
    return match.group(1)


async def _login(client: httpx.AsyncClient, user: str = "alice", password: str = PASSWORD) -> httpx.Response:
    page = await client.get("/ui/login")
    response = await client.post(
        "/ui/login", data={"username": user, "password": password, "csrf_token": _form_token(page.text)}
    )
    assert response.status_code == 303, response.text
    assert SESSION_COOKIE in response.cookies
    return response


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    """The root `settings`, except that an admin signs in without enrolling TOTP first (these tests are about
    sessions; web sign-in with 2FA has its own: tests/integration/test_web_signin.py)."""
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
        twofactor={"web_signin": "enrolled"},
    )


async def _log_out(client: httpx.AsyncClient) -> None:
    token = _form_token((await client.get("/ui/")).text)
    response = await client.post("/ui/logout", data={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login"


async def _opens(client: httpx.AsyncClient, cookie: str) -> bool:
    """Whether `cookie` alone opens the UI and the REST API; asserts both agree (no half-dead session)."""
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, cookie)
    page = await client.get("/ui/")
    api = await client.get("/api/v1/incidents")
    if page.status_code == 200:
        assert api.status_code == 200, api.text
        return True
    assert page.status_code == 303
    assert page.headers["location"].startswith("/ui/login?next=")
    assert api.status_code == 401
    return False


async def _session_events(services: Services) -> list[AuditEvent]:
    def read(conn: Connection) -> list[AuditEvent]:
        return [e for e in iter_events(conn) if e.action in ("login.succeeded", "logout", "session.revoked")]

    return await services.db.run_in_transaction(read)


@pytest.fixture
async def alice(api: Api) -> Api:
    assert await api.services.users.set_password("alice", PASSWORD)
    return api


async def test_a_cookie_from_before_logout_is_refused(alice: Api) -> None:
    cookie = (await _login(alice.client)).cookies[SESSION_COOKIE]
    assert await _opens(alice.client, cookie)
    await _log_out(alice.client)
    assert not await _opens(alice.client, cookie)
    events = await _session_events(alice.services)
    assert [(e.actor, e.action, e.subject) for e in events] == [
        ("alice", "login.succeeded", "user:alice"),
        ("alice", "logout", "user:alice"),
    ]
    assert events[1].data["via"] == "web"


async def test_logout_ends_only_that_session(alice: Api) -> None:
    other_browser = (await _login(alice.client)).cookies[SESSION_COOKIE]
    alice.client.cookies.clear()
    this_browser = (await _login(alice.client)).cookies[SESSION_COOKIE]
    await _log_out(alice.client)
    assert not await _opens(alice.client, this_browser)
    assert await _opens(alice.client, other_browser)


async def test_a_password_change_ends_every_session_of_that_user(alice: Api) -> None:
    first = (await _login(alice.client)).cookies[SESSION_COOKIE]
    alice.client.cookies.clear()
    second = (await _login(alice.client)).cookies[SESSION_COOKIE]
    assert await alice.services.users.set_password("alice", NEW_PASSWORD, now=alice.services.clock())
    assert not await _opens(alice.client, first)
    assert not await _opens(alice.client, second)
    revoked = [e for e in await _session_events(alice.services) if e.action == "session.revoked"]
    assert [(e.subject, e.data["reason"], e.data["sessions"]) for e in revoked] == [
        ("user:alice", "password changed", 2)
    ]
    alice.client.cookies.clear()
    assert await _opens(alice.client, (await _login(alice.client, password=NEW_PASSWORD)).cookies[SESSION_COOKIE])


async def test_a_password_change_leaves_other_users_logged_in(alice: Api) -> None:
    await alice.services.users.ensure("bob", "operator", now=alice.services.clock())
    assert await alice.services.users.set_password("bob", PASSWORD)
    bob = (await _login(alice.client, "bob")).cookies[SESSION_COOKIE]
    assert await alice.services.users.set_password("alice", NEW_PASSWORD)
    assert await _opens(alice.client, bob)


async def test_a_role_change_ends_the_session(alice: Api) -> None:
    cookie = (await _login(alice.client)).cookies[SESSION_COOKIE]
    # What a controller does at startup when the config gives alice another role (bootstrap.sync_configured_users).
    await alice.services.users.ensure("alice", "admin", now=alice.services.clock())
    assert not await _opens(alice.client, cookie)
    revoked = [e for e in await _session_events(alice.services) if e.action == "session.revoked"]
    assert [(e.actor, e.data["reason"], e.data["from"], e.data["to"]) for e in revoked] == [
        ("system", "role changed", "operator", "admin")
    ]
    # The same role again changes nothing and ends nothing.
    alice.client.cookies.clear()
    fresh = (await _login(alice.client)).cookies[SESSION_COOKIE]
    await alice.services.users.ensure("alice", "admin", now=alice.services.clock())
    assert await _opens(alice.client, fresh)


async def test_a_session_idle_longer_than_session_idle_ends(alice: Api, clock: FakeClock) -> None:
    cookie = (await _login(alice.client)).cookies[SESSION_COOKIE]
    for _ in range(4):  # two hours of requests 29 minutes apart: activity keeps it open
        clock.advance(minutes=29)
        assert await _opens(alice.client, cookie)
    clock.advance(minutes=30, seconds=1)
    assert not await _opens(alice.client, cookie)
    clock.advance(seconds=1)
    assert not await _opens(alice.client, cookie)  # and it stays ended


async def test_requests_within_a_minute_do_not_move_last_seen(alice: Api, clock: FakeClock) -> None:
    """last_seen is written at most once a minute: a burst of requests does not stretch the idle window."""
    cookie = (await _login(alice.client)).cookies[SESSION_COOKIE]
    clock.advance(seconds=30)
    assert await _opens(alice.client, cookie)  # 30 s after the last write: not written
    clock.advance(minutes=29, seconds=45)  # 30 min 15 s after login and the last write
    assert not await _opens(alice.client, cookie)


async def test_an_active_session_ends_at_its_absolute_lifetime(alice: Api, clock: FakeClock) -> None:
    cookie = (await _login(alice.client)).cookies[SESSION_COOKIE]
    for _ in range(36):  # a request every 20 minutes for 12 hours
        clock.advance(minutes=20)
        assert await _opens(alice.client, cookie)
    clock.advance(seconds=1)
    assert not await _opens(alice.client, cookie)
    alice.client.cookies.clear()
    await _login(alice.client)
    assert await _session_rows(alice.services) == 1  # a login clears out the rows of sessions past their lifetime


async def _session_rows(services: Services) -> int:
    def count(conn: Connection) -> int:
        return int(conn.execute(select(func.count()).select_from(web_sessions)).scalar_one())

    return await services.db.run_in_transaction(count)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_session_lifetimes_come_from_the_server_settings(tmp_path: Path, db_url: str, clock: FakeClock) -> None:
    settings = settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
        server={"session_idle": "10m", "session_lifetime": "1h"},
    )
    async with _replica(settings, clock) as (client, services):
        await services.users.ensure("alice", "operator", now=clock())
        assert await services.users.set_password("alice", PASSWORD)
        login = await _login(client)
        assert "Max-Age=3600" in _session_set_cookie(login)
        cookie = login.cookies[SESSION_COOKIE]
        clock.advance(minutes=9)
        assert await _opens(client, cookie)
        clock.advance(minutes=10, seconds=1)
        assert not await _opens(client, cookie)
        client.cookies.clear()
        cookie = (await _login(client)).cookies[SESSION_COOKIE]
        for _ in range(6):
            clock.advance(minutes=10)
            assert await _opens(client, cookie)
        clock.advance(seconds=1)
        assert not await _opens(client, cookie)


def _session_set_cookie(response: httpx.Response) -> str:
    return next(c for c in response.headers.get_list("set-cookie") if c.startswith(f"{SESSION_COOKIE}="))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_session_cookie_is_httponly_strict_and_expires(alice: Api) -> None:
    header = _session_set_cookie(await _login(alice.client)).lower()
    assert "httponly" in header
    assert "samesite=strict" in header
    assert "path=/;" in header + ";"
    assert "max-age=43200" in header
    assert "secure" not in header  # served over http to http://teleops.test: a Secure cookie would never return
    await _log_out_keeping_response(alice.client)


async def _log_out_keeping_response(client: httpx.AsyncClient) -> None:
    token = _form_token((await client.get("/ui/")).text)
    response = await client.post("/ui/logout", data={"csrf_token": token})
    cleared = _session_set_cookie(response).lower()
    assert "max-age=0" in cleared
    assert "httponly" in cleared
    assert "samesite=strict" in cleared


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("public_url", "base_url"),
    [("https://teleops.example", "http://teleops.test"), ("", "https://teleops.test")],
    ids=["public-url-https", "request-over-https"],
)
async def test_session_cookie_is_secure_when_served_over_https(
    tmp_path: Path, db_url: str, clock: FakeClock, public_url: str, base_url: str
) -> None:
    settings = settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
        server={"public_url": public_url},
    )
    async with _replica(settings, clock, base_url=base_url) as (client, services):
        await services.users.ensure("alice", "operator", now=clock())
        assert await services.users.set_password("alice", PASSWORD)
        page = await client.get("/ui/login")
        login_nonce = next(c for c in page.headers.get_list("set-cookie") if c.startswith("teleops_login="))
        assert "secure" in login_nonce.lower()
        if base_url.startswith("https://"):  # httpx returns Secure cookies over https only
            header = _session_set_cookie(await _login(client)).lower()
        else:
            # httpx keeps a Secure cookie from an http page to itself, as a browser would: hand the nonce over.
            client.cookies.set("teleops_login", login_nonce.split(";")[0].partition("=")[2])
            response = await client.post(
                "/ui/login",
                data={"username": "alice", "password": PASSWORD, "csrf_token": _form_token(page.text)},
            )
            header = _session_set_cookie(response).lower()
        assert "secure" in header
        assert "httponly" in header
        assert "samesite=strict" in header


@asynccontextmanager
async def _replica(
    settings: Settings, clock: FakeClock, *, base_url: str = "http://teleops.test"
) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    app = create_app(settings, clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        yield client, app.state.services


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_two_replicas_on_one_database_refuse_a_revoked_cookie_at_once(
    tmp_path: Path, db_url: str, clock: FakeClock
) -> None:
    def replica_settings(name: str) -> Settings:
        return settings_with(data_dir=tmp_path / name, database={"url": db_url}, local_agent={"enabled": False})

    async with AsyncExitStack() as stack:
        one, one_services = await stack.enter_async_context(_replica(replica_settings("one"), clock))
        two, two_services = await stack.enter_async_context(_replica(replica_settings("two"), clock))
        await one_services.users.ensure("alice", "operator", now=clock())
        assert await one_services.users.set_password("alice", PASSWORD)

        cookie = (await _login(one)).cookies[SESSION_COOKIE]
        assert await _opens(two, cookie)  # the session is in the database, not in replica one
        await _log_out(one)
        assert not await _opens(two, cookie)  # no cache window: the very next request on replica two

        one.cookies.clear()
        cookie = (await _login(one)).cookies[SESSION_COOKIE]
        assert await _opens(two, cookie)
        assert await two_services.users.set_password("alice", NEW_PASSWORD)
        assert not await _opens(one, cookie)

        one.cookies.clear()
        cookie = (await _login(one, password=NEW_PASSWORD)).cookies[SESSION_COOKIE]
        assert await _opens(two, cookie)
        await two_services.users.ensure("alice", "admin", now=clock())
        assert not await _opens(one, cookie)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_open_console_socket_is_closed_at_its_next_message_after_logout(settings: Settings) -> None:
    app = create_app(settings)
    with TestClient(app, base_url="http://testserver") as client:
        assert client.portal is not None
        client.portal.call(app.state.services.users.set_password, "admin", PASSWORD)
        page = client.get("/ui/login")
        login = client.post(
            "/ui/login",
            data={"username": "admin", "password": PASSWORD, "csrf_token": _form_token(page.text)},
            follow_redirects=False,
        )
        assert login.status_code == 303
        cookie = login.cookies[SESSION_COOKIE]
        with client.websocket_connect("/ui/console/ws", headers={"origin": "http://testserver"}) as ws:
            assert ws.receive_json()["type"] == "history"
            token = _form_token(client.get("/ui/").text)
            assert client.post("/ui/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
            ws.send_json({"type": "text", "text": "uptime"})
            with pytest.raises(WebSocketDisconnect) as ended:
                ws.receive_json()
            assert ended.value.code == CLOSE_SESSION_ENDED
        client.cookies.set(SESSION_COOKIE, cookie)
        with (
            pytest.raises(WebSocketDisconnect),
            client.websocket_connect("/ui/console/ws", headers={"origin": "http://testserver"}) as ws,
        ):
            ws.receive_json()
