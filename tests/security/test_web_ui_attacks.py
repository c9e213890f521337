"""An attacker's review of the web UI pages (issue #24), through real clients against one real `teleops serve`.

One server (with its local agent `localhost`) for the module; people sign in over real HTTP with httpx:
admin and ada (admins), olga (operator: echo and uptime anywhere) and otto (outsider: his policy covers only web-*,
so he may read no command on `localhost`). Each test attacks one class of hole:

- every POST route under /ui/ (enumerated from the app's own routes) refuses a form without this session's CSRF
  token, or with another session's, and changes nothing;
- every admin route (enumerated by its dependency) answers 403 to a non-admin, and no route under an admin prefix
  forgot the dependency;
- the read rule wherever a command's line or output could appear (list, page, live endpoint, cancel, fleet,
  incident page and its Run-again, list text search and its live rows, the iCal feed, the bulk message);
- crafted links: `next=` never leaves the site, and a message in the query (`error=`, `done=`) is shown only when
  this server signed it for this session (routes/ui_notice.py), always escaped;
- iCal feed tokens: every wrong answer is the same 404, and the secret reaches neither the log nor the audit;
  text in the feed cannot start a new iCalendar line;
- the live endpoints are `no-store`, and one reader's ETag does not earn another reader a 304 for other content;
- step-up codes on the admin pages: a code used for one action is refused for another, and wrong codes lock.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pyotp
import pytest
from fastapi.routing import APIRoute
from tests.integration.servers import TeleopsServer, eventually, start_teleops, stop_process
from tests.settings import settings_with

from teleops.oncall.calendar_feed import calendar_text
from teleops.server.app import create_app
from teleops.server.csrf import admin_form_user
from teleops.server.routes.ui_common import require_ui_admin

POLICY: dict[str, Any] = {
    "roles": {
        "admin": [{"hosts": ["*"], "commands": ["*"], "require_2fa": False}],
        "operator": [{"hosts": ["*"], "commands": ["uptime", "echo *", "sleep *"]}],
        "outsider": [{"hosts": ["web-*"], "commands": ["uptime"]}],
    }
}
CONFIG: dict[str, Any] = {
    "twofactor": {"web_signin": "enrolled", "lockout_after": 3},
    "policy": POLICY,
    "users": [
        {"name": "olga", "role": "operator"},
        {"name": "otto", "role": "outsider"},
        {"name": "ada", "role": "admin"},
    ],
    "oncall": {
        "rotations": [{"name": "primary", "members": ["olga", "otto"], "shift": "1d", "handoff": "09:00"}],
        "escalation": [{"after": "0m", "notify": "rotation:primary"}],
    },
}
MARK = "attackmark7q"  # in the command line and its output: wherever it shows, the command was shown
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
REFUSED_CSRF = "this form is stale or came from another site"
LURE = "Your session expired. Sign in again at https://evil.example/login"
# Where the admin pages live: every route under these must be behind require_ui_admin / admin_form_user.
ADMIN_PREFIXES = ("/ui/people", "/ui/tokens", "/ui/invites", "/ui/audit", "/ui/incidents/test-alert")
# The two POSTs that have no session yet: they carry the login form's nonce-bound token instead.
SESSIONLESS = {"/ui/login", "/ui/login/code"}
PATH_VALUES = {
    "incident_id": "1",
    "command_id": "1",
    "action": "ack",
    "rotation": "primary",
    "override_id": "1",
    "feed_id": "1",
    "invite_id": "1",
    "name": "olga",
}
# Every field any /ui/ form reads, with a value the handler would act on if the CSRF check let it through.
FORM = {
    "host": "localhost",
    "command": f"echo {MARK}",
    "action": "resolve",
    "incident": "1",
    "duration": "1h",
    "user": "olga",
    "start": "2030-01-01T09:00",
    "end": "2030-01-02T09:00",
    "feed": "user:olga",
    "kind": "api",
    "name": "sneaky",
    "person": "olga",
    "role": "admin",
    "code": "123456",
    "nonce": "n" * 24,
    "platform": "telegram",
    "external_id": "1",
}


@dataclass
class Person:
    name: str
    client: httpx.Client
    csrf: str

    def post(self, path: str, data: dict[str, str], *, csrf: str | None = None) -> httpx.Response:
        body = dict(data) if csrf is None else {**data, "csrf_token": csrf}
        return self.client.post(path, data=body)


@dataclass
class World:
    server: TeleopsServer
    people: dict[str, Person]
    totp: dict[str, pyotp.TOTP]
    passwords: dict[str, str]


def _password(server: TeleopsServer, name: str) -> str:
    return server.cli("user", "set-password", name, "--generate").stdout.strip().splitlines()[-1]


def sign_in(server: TeleopsServer, name: str, password: str) -> Person:
    client = httpx.Client(base_url=server.url, timeout=40, follow_redirects=False)
    form = client.get("/ui/login")
    token = CSRF.search(form.text)
    assert token, form.text
    answer = client.post("/ui/login", data={"username": name, "password": password, "csrf_token": token.group(1)})
    assert answer.status_code == 303, answer.text
    home = client.get("/ui/")
    mine = CSRF.search(home.text)
    assert home.status_code == 200, home.text
    assert mine, home.text
    return Person(name, client, mine.group(1))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    server = start_teleops(tmp_path_factory.mktemp("attacks"), local_agent=True, config=CONFIG)
    try:
        # A password change ends the person's sessions: set each once, keep it for later sign-ins.
        passwords = {name: _password(server, name) for name in ("admin", "ada", "olga", "otto")}
        people = {name: sign_in(server, name, password) for name, password in passwords.items()}
        # Enrolled after signing in, so their sessions stand and only the step-up forms ask for codes.
        totp = {
            name: pyotp.TOTP(
                pyotp.parse_uri(server.cli("user", "2fa-enroll", name).stdout.strip().splitlines()[-1]).secret
            )
            for name in ("admin", "ada")
        }
        eventually(lambda: _agent_online(server), what="the local agent online")
        yield World(server, people, totp, passwords)
        for person in people.values():
            person.client.close()
    finally:
        stop_process(server.process)


def _agent_online(server: TeleopsServer) -> bool:
    items = httpx.get(f"{server.url}/api/v1/agents", headers=server.api_headers, timeout=10).json()["items"]
    return any(item["online"] for item in items)


def state_of(server: TeleopsServer) -> dict[str, Any]:
    """What a refused request must not change: row counts of everything people act on, and those rows' states."""
    with sqlite3.connect(server.sqlite_path) as db:
        counts = {
            table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608 (fixed names)
            for table in (
                "audit_events", "incidents", "timeline_events", "users", "tokens", "commands", "web_sessions",
                "identities", "link_codes", "calendar_feeds", "oncall_overrides", "two_factor", "alerts",
            )
        }  # fmt: skip
        rows = {
            "incidents": db.execute("SELECT id, status FROM incidents ORDER BY id").fetchall(),
            "users": db.execute("SELECT name, role FROM users ORDER BY name").fetchall(),
            "tokens": db.execute("SELECT kind, name, revoked_at FROM tokens ORDER BY kind, name").fetchall(),
            "feeds": db.execute("SELECT id, revoked_at FROM calendar_feeds ORDER BY id").fetchall(),
            "commands": db.execute("SELECT id, status FROM commands ORDER BY id").fetchall(),
        }
    return {"counts": counts, "rows": rows}


def api(server: TeleopsServer, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, f"{server.url}{path}", headers=server.api_headers, timeout=40, **kwargs)
    assert response.status_code < 300, response.text
    return response.json()


def fire(server: TeleopsServer, check: str) -> int:
    """An alert on `localhost`; the id of its (open) incident."""
    body = {"summary": f"{check} on localhost", "host": "localhost", "check": check, "severity": "critical"}
    answer = httpx.post(f"{server.url}/api/v1/alerts/generic", json=body, headers=server.ingest_headers, timeout=10)
    assert answer.status_code < 300, answer.text
    found = [i["id"] for i in server.incidents(status="open") if check in json.dumps(i)]
    assert len(found) == 1, found
    return int(found[0])


def ui_routes() -> list[tuple[str, APIRoute]]:
    """(the path it is served at, the route) for the app's own routes under /ui/, as `teleops serve` builds them,
    walking included routers however this FastAPI version keeps them."""
    app = create_app(settings_with(local_agent={"enabled": False}))

    def walk(routes: list[Any], prefix: str) -> Iterator[tuple[str, APIRoute]]:
        for route in routes:
            if isinstance(route, APIRoute):
                yield prefix + route.path, route
            elif (included := getattr(route, "original_router", None)) is not None:
                yield from walk(included.routes, prefix + getattr(route.include_context, "prefix", ""))

    return [(path, route) for path, route in walk(list(app.routes), "") if path.startswith("/ui/")]


def concrete(path: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in PATH_VALUES, f"a new path parameter {{{name}}} in {path}: give it a value in PATH_VALUES"
        return PATH_VALUES[name]

    return re.sub(r"\{(\w+)\}", value, path)


def admin_only(route: APIRoute) -> bool:
    """Whether the route's dependencies include the admin check (directly or through admin_form_user)."""
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        if dependant.call in (require_ui_admin, admin_form_user):
            return True
        pending.extend(dependant.dependencies)
    return False


# --- CSRF --------------------------------------------------------------------------------------------------------


def test_every_ui_post_route_refuses_a_form_without_its_csrf_token_and_changes_nothing(world: World) -> None:
    server, admin, olga = world.server, world.people["admin"], world.people["olga"]
    incident = fire(server, "CsrfProbe")
    posts = [p for p, r in ui_routes() if "POST" in (r.methods or ()) and p not in SESSIONLESS]
    assert len(posts) >= 15, posts  # the enumeration really found the forms
    before = state_of(server)
    for route_path in posts:
        path = concrete(route_path).replace("/incidents/1/", f"/incidents/{incident}/")
        for csrf, why in ((None, "no token"), ("", "an empty token"), (olga.csrf, "olga's token")):
            answer = admin.post(path, {**FORM, "incident": str(incident)}, csrf=csrf)
            assert answer.status_code == 403, f"POST {path} with {why}: {answer.status_code} {answer.text[:300]}"
            assert REFUSED_CSRF in answer.text, (path, answer.text[:300])
    assert state_of(server) == before, "a POST refused for its CSRF token changed something"
    # The admin's session is still the admin's, and their own token still works (the refusals broke nothing).
    assert admin.client.get("/ui/").status_code == 200


def test_the_login_forms_refuse_a_post_without_the_login_token(world: World) -> None:
    server = world.server
    with httpx.Client(base_url=server.url, timeout=20, follow_redirects=False) as stranger:
        stranger.get("/ui/login")  # the nonce cookie, but the token is left out of the form
        answer = stranger.post("/ui/login", data={"username": "olga", "password": world.passwords["olga"]})
        assert answer.status_code != 303
        assert "teleops_session" not in answer.headers.get("set-cookie", "")
        code = stranger.post("/ui/login/code", data={"ticket": "x.y", "code": "123456"})
        assert code.status_code != 303
        assert stranger.get("/ui/").status_code == 303  # still signed out


# --- admin pages ---------------------------------------------------------------------------------------------------


def test_every_admin_route_answers_403_to_a_non_admin(world: World) -> None:
    olga, admin = world.people["olga"], world.people["admin"]
    routes = ui_routes()
    guarded = [(p, r) for p, r in routes if admin_only(r)]
    forgot = [p for p, r in routes if p.startswith(ADMIN_PREFIXES) and not admin_only(r)]
    assert not forgot, f"routes under an admin prefix without require_ui_admin/admin_form_user: {forgot}"
    assert {"/ui/people", "/ui/tokens", "/ui/audit", "/ui/people/{name}/role"} <= {p for p, _ in guarded}
    before = state_of(world.server)
    for route_path, route in guarded:
        path = concrete(route_path)
        for method in route.methods or ():
            answer = olga.client.get(path) if method == "GET" else olga.post(path, FORM, csrf=olga.csrf)
            assert answer.status_code == 403, f"{method} {path} as olga: {answer.status_code} {answer.text[:200]}"
            assert "olga is not an admin" in answer.text
            if method == "GET":
                assert admin.client.get(path).status_code in (200, 404), path  # the admin does get it
    assert state_of(world.server) == before


# --- the read rule -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def marked(world: World) -> dict[str, int]:
    """admin's `echo MARK` on localhost for an incident, which resolves and fires again: its Run again is offered."""
    server = world.server
    first = fire(server, "ReadRuleProbe")
    created = api(server, "POST", "/api/v1/commands", json={"host": "localhost", "command": f"echo {MARK}",
                                                             "incident_id": first})  # fmt: skip
    done = api(server, "GET", f"/api/v1/commands/{created['id']}", params={"wait": 30})
    assert done["status"] == "succeeded", done
    assert MARK in done["output"], done
    api(server, "POST", f"/api/v1/incidents/{first}/resolve")
    again = fire(server, "ReadRuleProbe")
    assert again != first
    return {"command": int(created["id"]), "first": first, "again": again}


def test_otto_reads_no_trace_of_a_command_he_may_not_read(world: World, marked: dict[str, int]) -> None:
    otto, admin = world.people["otto"], world.people["admin"]
    command, again = marked["command"], marked["again"]
    # Sanity: the admin sees it everywhere we look, so "not in otto's page" means something.
    assert MARK in admin.client.get("/ui/commands").text
    assert MARK in admin.client.get(f"/ui/commands/{command}").text
    assert f"/run-again/{command}" in admin.client.get(f"/ui/incidents/{again}").text

    for path in ("/ui/commands", "/ui/commands?host=localhost", "/ui/fleet", f"/ui/incidents/{again}",
                 f"/ui/incidents/{marked['first']}", "/ui/", "/ui/oncall"):  # fmt: skip
        page = otto.client.get(path)
        assert page.status_code == 200, (path, page.status_code)
        assert MARK not in page.text, f"otto read the command on {path}"
    assert f"/run-again/{command}" not in otto.client.get(f"/ui/incidents/{again}").text

    # His answers for this command are those for a command that does not exist: a number confirms nothing.
    missing = 10**9
    for suffix in ("", "/live"):
        real, fake = (
            otto.client.get(f"/ui/commands/{command}{suffix}"),
            otto.client.get(f"/ui/commands/{missing}{suffix}"),
        )
        assert real.status_code == fake.status_code == 404
        assert _without_number(real.text, command) == _without_number(fake.text, missing)
        assert MARK not in real.text
    before = state_of(world.server)
    cancel = otto.post(f"/ui/commands/{command}/cancel", {}, csrf=otto.csrf)
    assert cancel.status_code == 404
    assert MARK not in cancel.text
    preview = otto.client.get(f"/ui/incidents/{again}/run-again/{command}")
    assert preview.status_code == 404
    assert MARK not in preview.text
    run = otto.post(f"/ui/incidents/{again}/run-again/{command}", {"nonce": "o" * 24}, csrf=otto.csrf)
    assert run.status_code == 404
    assert MARK not in run.text
    assert state_of(world.server) == before, "otto's cancel or run-again changed something"


def _without_number(text: str, number: int) -> str:
    return re.sub(rf"(Command |/commands/){number}\b", r"\1N", text)


def test_text_search_finds_incidents_by_command_only_for_who_reads_every_command(
    world: World, marked: dict[str, int]
) -> None:
    otto, admin = world.people["otto"], world.people["admin"]
    mine = admin.client.get("/ui/", params={"q": MARK, "status": "resolved"})
    assert f"incident-{marked['first']}" in mine.text  # found through its command's line
    theirs = otto.client.get("/ui/", params={"q": MARK, "status": "resolved"})
    assert theirs.status_code == 200
    assert f"incident-{marked['first']}" not in theirs.text
    assert "you may not read every command" in theirs.text
    # The live rows: no-store, and the admin's ETag for these filters earns otto no 304 (the content differs).
    rows = admin.client.get("/ui/incidents/rows", params={"q": MARK, "status": "resolved"})
    assert rows.headers["cache-control"] == "no-store"
    assert f"incident-{marked['first']}" in rows.text
    etag = rows.headers["etag"]
    assert admin.client.get("/ui/incidents/rows", params={"q": MARK, "status": "resolved"},
                            headers={"If-None-Match": etag}).status_code == 304  # fmt: skip
    other = otto.client.get(
        "/ui/incidents/rows", params={"q": MARK, "status": "resolved"}, headers={"If-None-Match": etag}
    )
    assert other.status_code == 200
    assert f"incident-{marked['first']}" not in other.text
    assert other.headers["cache-control"] == "no-store"


def test_the_command_live_endpoint_is_no_store(world: World, marked: dict[str, int]) -> None:
    answer = world.people["admin"].client.get(f"/ui/commands/{marked['command']}/live")
    assert answer.status_code == 200
    assert MARK in answer.json()["output"]
    assert answer.headers["cache-control"] == "no-store"
    assert world.people["otto"].client.get(f"/ui/commands/{marked['command']}/live").headers.get(
        "cache-control", "no-store"
    ) in ("no-store",)


def test_a_run_again_preview_confirms_once_and_its_nonce_is_no_key_for_someone_else(
    world: World, marked: dict[str, int]
) -> None:
    olga, otto = world.people["olga"], world.people["otto"]
    path = f"/ui/incidents/{marked['again']}/run-again/{marked['command']}"
    preview = olga.client.get(path)
    assert preview.status_code == 200
    assert f"echo {MARK}" in preview.text
    nonce = re.search(r'name="nonce" value="([^"]+)"', preview.text)
    assert nonce
    before = len(state_of(world.server)["rows"]["commands"])
    ran = olga.post(path, {"nonce": nonce.group(1)}, csrf=olga.csrf)
    assert ran.status_code == 303, ran.text
    assert len(state_of(world.server)["rows"]["commands"]) == before + 1
    assert olga.post(path, {"nonce": nonce.group(1)}, csrf=olga.csrf).status_code == 409
    stolen = otto.post(path, {"nonce": nonce.group(1)}, csrf=otto.csrf)  # he may not read it: nothing runs
    assert stolen.status_code == 404
    assert MARK not in stolen.text
    assert len(state_of(world.server)["rows"]["commands"]) == before + 1


def test_the_bulk_message_carries_only_ids_and_fixed_words(world: World) -> None:
    admin = world.people["admin"]
    incident = fire(world.server, "BulkProbe")
    done = admin.post("/ui/incidents/bulk", {"action": "ack", "incident": str(incident)}, csrf=admin.csrf)
    assert done.status_code == 303
    assert admin.client.get(done.headers["location"]).text.count(f"Acknowledged 1: #{incident}.") == 1
    forged = admin.client.get("/ui/", params={"done": "ack", "changed": f"1,{quote(LURE)}", "bulk_error": LURE})
    assert LURE not in forged.text
    assert "evil.example" not in forged.text


# --- crafted links -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    ["//evil.example/", "https://evil.example/", "/\\evil.example", "/ui\\..\\evil", "http:/evil.example",
     "/%2F%2Fevil.example", "javascript:alert(1)"],
)  # fmt: skip
def test_next_never_leaves_the_site(world: World, target: str) -> None:
    server = world.server
    with httpx.Client(base_url=server.url, timeout=20, follow_redirects=False) as client:
        form = client.get("/ui/login", params={"next": target})
        token = CSRF.search(form.text)
        assert token
        answer = client.post("/ui/login", data={"username": "olga", "password": world.passwords["olga"],
                                                "csrf_token": token.group(1), "next": target})  # fmt: skip
        assert answer.status_code == 303
        location = answer.headers["location"]
        assert location == "/ui/", location


def test_a_crafted_link_cannot_put_words_in_the_servers_mouth(world: World, marked: dict[str, int]) -> None:
    olga = world.people["olga"]
    for path, field in ((f"/ui/incidents/{marked['again']}", "error"), (f"/ui/commands/{marked['command']}", "error"),
                        ("/ui/oncall", "done")):  # fmt: skip
        page = olga.client.get(path, params={field: LURE})
        assert page.status_code == 200, path
        assert LURE not in page.text, path
        forged = olga.client.get(path, params={field: LURE, "sig": "0" * 32})
        assert LURE not in forged.text, path
        # A message the server signed for admin's session says nothing in olga's.
        admin = world.people["admin"]
        admin_sig = re.search(r"sig=([0-9a-f]+)", _signed_redirect(world, admin, marked))
        assert admin_sig
        assert LURE not in olga.client.get(path, params={field: LURE, "sig": admin_sig.group(1)}).text
        assert olga.client.get(path, params={field: LURE, "sig": "é" * 8}).status_code in (200, 422)
    # Query text that is shown (filters) is escaped, never markup.
    page = olga.client.get("/ui/", params={"q": "<script>alert(1)</script>"})
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;" in page.text


def _signed_redirect(world: World, person: Person, marked: dict[str, int]) -> str:
    """A real signed message: acknowledging a resolved incident is refused, and the redirect says why."""
    answer = person.post(f"/ui/incidents/{marked['first']}/ack", {}, csrf=person.csrf)
    assert answer.status_code == 303
    return str(answer.headers["location"])


def test_the_servers_own_message_still_shows_after_its_redirect(world: World, marked: dict[str, int]) -> None:
    admin = world.people["admin"]
    location = _signed_redirect(world, admin, marked)
    page = admin.client.get(location)
    assert "Not done:" in page.text
    assert 'role="alert"' in page.text
    tampered = location.replace("Not+done", "Not+dona").replace("Not%20done", "Not%20dona")
    assert "Not don" not in admin.client.get(tampered).text.split("<main", 1)[-1]
    olga = world.people["olga"]
    feed = olga.post("/ui/oncall/feeds", {"feed": "user:olga"}, csrf=olga.csrf)
    feed_id = max(f[0] for f in state_of(world.server)["rows"]["feeds"])
    assert feed.status_code == 200
    revoked = olga.post(f"/ui/oncall/feeds/{feed_id}/revoke", {}, csrf=olga.csrf)
    assert revoked.status_code == 303
    assert "sig=" in revoked.headers["location"]
    assert "revoked: its address now answers 404" in olga.client.get(revoked.headers["location"]).text


# --- iCal feeds ----------------------------------------------------------------------------------------------------


def test_ical_wrong_answers_are_one_404_and_the_secret_stays_out_of_logs_and_audit(world: World) -> None:
    server, olga, admin = world.server, world.people["olga"], world.people["admin"]
    made = olga.post("/ui/oncall/feeds", {"feed": "rotation:primary"}, csrf=olga.csrf)
    url = re.search(r'(http://[^"<\s]+/ical/rotation/primary\.ics\?token=(tlo_cal_[A-Za-z0-9_-]+))', made.text)
    assert made.status_code == 200, made.text
    assert url, made.text
    secret = url.group(2)
    feed = httpx.get(url.group(1), timeout=10)
    assert feed.status_code == 200
    assert feed.text.startswith("BEGIN:VCALENDAR")
    assert MARK not in feed.text
    assert "echo" not in feed.text
    wrong = [
        f"/ical/rotation/primary.ics?token={secret[:-1]}x",
        f"/ical/rotation/primary.ics?token={secret.upper()}",
        "/ical/rotation/primary.ics",
        "/ical/rotation/primary.ics?token=",
        f"/ical/rotation/nosuch.ics?token={secret}",
        f"/ical/user/olga.ics?token={secret}",  # another feed's token
        f"/ical/rotation/primary.ics?token={'x' * 129}",
    ]
    answers = [httpx.get(f"{server.url}{path}", timeout=10) for path in wrong]
    first = answers[0]
    assert first.status_code == 404
    for path, answer in zip(wrong, answers, strict=True):
        assert (answer.status_code, answer.text) == (first.status_code, first.text), path
    feed_id = max(f[0] for f in state_of(server)["rows"]["feeds"])
    assert olga.post(f"/ui/oncall/feeds/{feed_id}/revoke", {}, csrf=olga.csrf).status_code == 303
    gone = httpx.get(url.group(1), timeout=10)
    assert (gone.status_code, gone.text) == (first.status_code, first.text)
    assert secret not in server.log.read_text(errors="replace"), "the feed's secret is in the server's log"
    with sqlite3.connect(server.sqlite_path) as db:
        audit = json.dumps(db.execute("SELECT * FROM audit_events").fetchall(), default=str)
    assert "calendar_feed.created" in audit
    assert secret not in audit
    assert secret not in admin.client.get("/ui/audit").text


def test_ical_text_cannot_start_a_new_line() -> None:
    from teleops.oncall.calendar_feed import CalendarEvent

    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    evil = "olga\r\nBEGIN:VEVENT\r\nSUMMARY:pwned\nX-INJECTED:1"
    event = CalendarEvent(uid=evil, start=now, end=now + timedelta(hours=1), summary=evil, description=evil)
    text = calendar_text(evil, [event], now=now)
    lines = text.split("\r\n")
    assert not any(line.startswith(("SUMMARY:pwned", "X-INJECTED")) for line in lines), text
    assert sum(line == "BEGIN:VEVENT" for line in lines) == 1, text
    assert "\n" not in text.replace("\r\n", ""), "a bare line break in the feed"


# --- step-up on the admin pages ------------------------------------------------------------------------------------


def test_a_step_up_code_serves_one_action_and_wrong_codes_lock(world: World) -> None:
    server, admin, ada = world.server, world.people["admin"], world.people["ada"]
    code = world.totp["admin"].now()
    invited = admin.post("/ui/people/olga/invite", {"code": code}, csrf=admin.csrf)
    assert invited.status_code == 200, invited.text[:300]
    assert "invite" in invited.text.lower()
    before = state_of(server)
    replayed = admin.post("/ui/tokens", {"kind": "ingest", "name": "replayed", "code": code}, csrf=admin.csrf)
    assert replayed.status_code == 401, replayed.text[:300]
    assert "Nothing changed" in replayed.text
    again = admin.post("/ui/people/olga/invite", {"code": code}, csrf=admin.csrf)
    assert again.status_code == 401
    after = state_of(server)
    assert after["rows"]["tokens"] == before["rows"]["tokens"]
    assert after["counts"]["link_codes"] == before["counts"]["link_codes"]

    # ada guesses: three wrong codes (lockout_after) lock her, and then even her right code is refused.
    right = world.totp["ada"]
    wrong = str((int(right.now()) + 500_000) % 1_000_000).zfill(6)
    for _ in range(3):
        answer = ada.post("/ui/tokens", {"kind": "ingest", "name": "guessed", "code": wrong}, csrf=ada.csrf)
        assert answer.status_code == 401, answer.text[:300]
    locked = ada.post("/ui/tokens", {"kind": "ingest", "name": "guessed", "code": right.now()}, csrf=ada.csrf)
    assert locked.status_code == 401, locked.text[:400]
    assert "lock" in locked.text.lower(), locked.text[:400]
    with sqlite3.connect(server.sqlite_path) as db:
        assert db.execute("SELECT COUNT(*) FROM tokens WHERE name = 'guessed'").fetchone()[0] == 0
