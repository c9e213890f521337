"""The audit page in a real Chromium against a real `teleops serve` (issue #24, part 5).

It shows the chain intact, then, after a record is edited in the database behind TeleOps' back, broken (after
"Verify now", the same check as `teleops audit verify`); it searches and pages newest first; and only admins
reach it: the server answers 403 to anyone else, whatever the menu shows.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
from playwright.sync_api import BrowserContext, expect

from tests.integration.servers import TeleopsServer
from tests.integration.test_web_signin import (
    OPERATOR,
    browser,
    context,
    password_of,
    playwright,
    shots,
    submit_password,
)

__all__ = ["browser", "context", "playwright", "shots"]  # the shared browser fixtures

# Admins keep the test fixtures' policy (no code before a change) and nobody is forced to enrol.
NO_FORCED_ENROLMENT = {"twofactor": {"web_signin": "enrolled"}, "users": [{"name": OPERATOR, "role": "operator"}]}


def test_the_audit_page_shows_the_chain_intact_then_a_tampered_chain_as_broken(
    teleops_server: Callable[..., TeleopsServer], context: BrowserContext, shots: Path
) -> None:
    server = teleops_server(config=NO_FORCED_ENROLMENT)
    page = context.new_page()
    password = password_of(server, "admin")
    for _ in range(3):  # some records to search: failed and successful logins
        submit_password(page, server, "admin", "wrong")
    submit_password(page, server, "admin", password)
    expect(page).to_have_url(f"{server.url}/ui/")
    page.get_by_role("link", name="Audit").click()
    expect(page).to_have_url(f"{server.url}/ui/audit")
    chain = page.locator("#chain")
    expect(chain.locator(".chain-state")).to_have_text("intact")
    expect(chain).to_contain_text(re.compile(r"Verified up to record \d+ at"))
    rows = page.locator("table.audit tbody tr")
    first_seq = int(rows.first.locator("td").first.inner_text())
    assert first_seq > int(rows.last.locator("td").first.inner_text()), "newest first"
    page.screenshot(path=str(shots / "audit.png"), full_page=True)

    page.get_by_label("Action").fill("login.failed")
    page.get_by_label("Text").fill("wrong user name")
    page.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("login.failed")
    page.get_by_label("Action").fill("")
    page.get_by_label("Text").fill("")
    page.get_by_label("Actor").fill("nobody-like-this")
    page.get_by_role("button", name="Search").click()
    expect(page.locator(".empty")).to_have_text("No matching records.")

    # Someone with the database file edits an old record (and is careful to leave the head alone).
    with sqlite3.connect(server.sqlite_path) as db:
        db.execute("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
    page.goto(f"{server.url}/ui/audit")
    page.get_by_role("button", name="Verify now").click()
    expect(chain.locator(".chain-state")).to_have_text("broken")
    expect(page.get_by_role("alert")).to_contain_text("edited at record 2")
    page.screenshot(path=str(shots / "audit-broken.png"), full_page=True)
    verify = server.cli("audit", "verify", check=False)
    assert verify.returncode != 0
    assert "record 2" in verify.stdout + verify.stderr


def test_pages_go_older_a_page_at_a_time(teleops_server: Callable[..., TeleopsServer], context: BrowserContext) -> None:
    server = teleops_server(config=NO_FORCED_ENROLMENT)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(55):  # each a `login.failed` record through the real login form: more than a page of 50
            form = client.get("/ui/login").text
            token = re.search(r'name="csrf_token" value="([^"]+)"', form)
            assert token is not None
            refused = client.post("/ui/login", data={"username": "nobody", "password": "x", "csrf_token": token[1]})
            assert refused.status_code in (401, 429)
    page = context.new_page()
    submit_password(page, server, "admin", password_of(server, "admin"))
    page.goto(f"{server.url}/ui/audit")
    rows = page.locator("table.audit tbody tr")
    expect(rows).to_have_count(50)
    last_on_first = int(rows.last.locator("td").first.inner_text())
    page.get_by_role("link", name="Older records").click()
    expect(page).to_have_url(re.compile(rf"before={last_on_first}"))
    assert int(rows.first.locator("td").first.inner_text()) == last_on_first - 1
    page.get_by_role("link", name="Newest").click()
    expect(rows).to_have_count(50)


def test_a_non_admin_cannot_reach_admin_pages(
    teleops_server: Callable[..., TeleopsServer], context: BrowserContext
) -> None:
    server = teleops_server(config=NO_FORCED_ENROLMENT)
    page = context.new_page()
    submit_password(page, server, OPERATOR, password_of(server, OPERATOR))
    expect(page.locator("h1")).to_have_text("Incidents")
    expect(page.locator(".topbar nav").get_by_role("link", name="Audit")).to_have_count(0)
    response = page.goto(f"{server.url}/ui/audit")
    assert response is not None
    assert response.status == 403
    expect(page.locator("body")).to_contain_text("not an admin")
    # With her own valid CSRF token, the admin-only form post is refused too.
    page.goto(f"{server.url}/ui/")
    token = page.locator("form.logout input[name='csrf_token']").input_value()
    refused = page.request.post(f"{server.url}/ui/audit/verify", form={"csrf_token": token}, max_redirects=0)
    assert refused.status == 403
