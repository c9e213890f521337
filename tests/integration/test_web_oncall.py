"""The On call page in a real Chromium against a real `teleops serve` (issue #24, part 4).

A rotation of two people: the page names who is on call; an admin's override for the other person makes the page
and the console's `/oncall` (the real conversation pipeline) name them, and removing it restores the schedule; both
changes are in the audit log. The server refuses an override from someone outside the rotation and a form without its
CSRF token; an iCal feed made on the page parses as RFC 5545 with the rotation's people, and answers 404 once
revoked. Screenshots: oncall.png (desktop) and oncall-phone.png (390 px).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.integration.servers import TeleopsServer
from tests.integration.test_web_signin import browser, context, password_of, playwright, shots, submit_password
from tests.integration.test_web_ui import PHONE, WAIT_MS

__all__ = ["browser", "context", "playwright", "shots"]  # the shared browser fixtures

MEMBERS = ("alice", "bob")
CONFIG: dict[str, Any] = {
    "twofactor": {"web_signin": "enrolled"},
    "users": [{"name": "alice", "role": "operator"}, {"name": "bob", "role": "operator"}, {"name": "olga", "role": "operator"}],
    "oncall": {
        "rotations": [{"name": "primary", "members": list(MEMBERS), "shift": "1d", "handoff": "09:00"}],
        "escalation": [{"after": "0m", "notify": "rotation:primary"}, {"after": "5m", "notify": "user:olga"}],
    },
}  # fmt: skip


def sign_in(page: Page, server: TeleopsServer, user: str) -> None:
    submit_password(page, server, user, password_of(server, user))
    expect(page).to_have_url(f"{server.url}/ui/")


def ask_oncall(page: Page, server: TeleopsServer, expected: re.Pattern[str]) -> None:
    """Type /oncall in the console and wait for an answer matching `expected` (the newest bot message)."""
    page.goto(f"{server.url}/ui/console")
    expect(page.locator("#console")).to_have_attribute("data-connected", "true")
    before = page.locator(".message.bot").count()
    page.get_by_label("Message").fill("/oncall")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".message.bot")).to_have_count(before + 1)
    expect(page.locator(".message.bot").last).to_contain_text(expected)


def test_an_override_changes_who_the_page_and_oncall_name_and_removing_it_restores(
    teleops_server: Callable[..., TeleopsServer], context: BrowserContext, shots: Path
) -> None:
    server = teleops_server(config=CONFIG)
    page = context.new_page()
    sign_in(page, server, "admin")
    page.locator(".topbar nav").get_by_role("link", name="On call").click()
    expect(page).to_have_url(f"{server.url}/ui/oncall")
    rotation = page.locator("section.rotation[data-rotation='primary']")
    now = rotation.locator(".oncall-now strong")
    expect(now).to_have_text(re.compile("^(alice|bob)$"))
    first = now.inner_text()
    other = MEMBERS[1 - MEMBERS.index(first)]
    expect(rotation.locator(".oncall-next")).to_contain_text(other)
    expect(rotation.locator(".week li")).to_have_count(7)
    expect(rotation.locator(".chain")).to_contain_text(
        f"1. at once: page the on-call of primary (now {first}) → 2. after 5m: page olga"
    )

    # The form starts now and ends at the next handoff: the other person covers the rest of this shift.
    rotation.get_by_label("Who covers").select_option(other)
    rotation.get_by_role("button", name="Add override").click()
    expect(page.locator("#oncall-notice")).to_contain_text(f"{other} now covers primary")
    expect(now).to_have_text(other)
    expect(rotation.locator(".oncall-now .badge.override")).to_have_text("override")
    expect(rotation.locator(".week .cover.overridden").first).to_contain_text(other)
    expect(rotation.locator(".override-item")).to_have_count(1)
    page.screenshot(path=str(shots / "oncall.png"), full_page=True)
    ask_oncall(page, server, re.compile(rf"primary: {other} \(override\) until"))

    page.goto(f"{server.url}/ui/oncall")
    rotation.get_by_role("button", name=re.compile(f"Remove override of {other}")).click()
    expect(page.locator("#oncall-notice")).to_contain_text("Override removed")
    expect(now).to_have_text(first)
    expect(rotation.locator(".override-item")).to_have_count(0)
    ask_oncall(page, server, re.compile(rf"primary: {first} until .*, then {other}"))

    page.goto(f"{server.url}/ui/audit?action=oncall.")
    rows = page.locator("table.audit tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("oncall.override_removed")
    expect(rows.nth(1)).to_contain_text("oncall.override_created")
    for row in (rows.nth(0), rows.nth(1)):
        expect(row).to_contain_text("admin")
        expect(row).to_contain_text("rotation:primary")
        expect(row).to_contain_text(f"user={other}")


def test_the_server_refuses_overrides_from_outsiders_and_forms_without_csrf(
    teleops_server: Callable[..., TeleopsServer], context: BrowserContext
) -> None:
    server = teleops_server(config=CONFIG)
    page = context.new_page()
    sign_in(page, server, "olga")  # not in the rotation, not an admin
    page.goto(f"{server.url}/ui/oncall")
    expect(page.locator("section.rotation .oncall-now strong")).to_have_text(re.compile("^(alice|bob)$"))
    expect(page.get_by_role("button", name="Add override")).to_have_count(0)
    token = page.locator("form.logout input[name='csrf_token']").input_value()
    window = {"start": "2030-01-01T09:00", "end": "2030-01-02T09:00"}
    refused = page.request.post(
        f"{server.url}/ui/oncall/primary/overrides", form={"csrf_token": token, "user": "olga", **window}
    )
    assert refused.status == 403, refused.text()
    assert "may not add this override" in refused.text()

    member = context.browser.new_context() if context.browser else None
    assert member is not None
    try:
        alice = member.new_page()
        alice.set_default_timeout(WAIT_MS)
        sign_in(alice, server, "alice")
        alice.goto(f"{server.url}/ui/oncall")
        alice_token = alice.locator("form.logout input[name='csrf_token']").input_value()
        url = f"{server.url}/ui/oncall/primary/overrides"
        for_bob = alice.request.post(url, form={"csrf_token": alice_token, "user": "bob", **window})
        assert for_bob.status == 403, "a member covers the rotation themselves only"
        no_csrf = alice.request.post(url, form={"user": "alice", **window})
        assert no_csrf.status == 403
        assert "reload the page" in no_csrf.text()
        backwards = alice.request.post(
            url, form={"csrf_token": alice_token, "user": "alice", "start": window["end"], "end": window["start"]}
        )
        assert backwards.status == 400
        assert "ends before it starts" in backwards.text()
        alice.goto(f"{server.url}/ui/oncall")
        expect(alice.locator(".override-item")).to_have_count(0)  # nothing refused was stored

        # Her own cover, through the page's form: allowed.
        alice.get_by_label("From (UTC)").fill(window["start"])
        alice.get_by_label("Until (UTC)").fill(window["end"])
        alice.get_by_role("button", name="Add override").click()
        expect(alice.locator(".override-item")).to_have_count(1)
        expect(alice.locator(".override-item")).to_contain_text("alice")
    finally:
        member.close()
    audit = server.cli("audit", "verify", check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def unfold(text: str) -> list[str]:
    """RFC 5545 §3.1: every line ends in CRLF and is at most 75 octets; a line starting with a space continues."""
    assert text.endswith("\r\n")
    raw = text[:-2].split("\r\n")
    assert all(len(line.encode()) <= 75 for line in raw), [line for line in raw if len(line.encode()) > 75]
    lines: list[str] = []
    for line in raw:
        if line.startswith(" "):
            lines[-1] += line[1:]
        else:
            lines.append(line)
    return lines


def events_of(lines: list[str]) -> list[dict[str, str]]:
    events: list[dict[str, str]] = []
    for line in lines:
        if line == "BEGIN:VEVENT":
            events.append({})
        elif events and line != "END:VEVENT" and ":" in line and line != "END:VCALENDAR":
            name, _, value = line.partition(":")
            events[-1].setdefault(name, value)
    return events


def test_an_ical_feed_parses_names_the_rotation_people_and_is_gone_once_revoked(
    teleops_server: Callable[..., TeleopsServer], browser: Browser, shots: Path
) -> None:
    server = teleops_server(config=CONFIG)
    phone = browser.new_context(viewport=PHONE, is_mobile=True)
    phone.set_default_timeout(WAIT_MS)
    try:
        page = phone.new_page()
        sign_in(page, server, "admin")
        page.goto(f"{server.url}/ui/oncall")
        page.get_by_label("Feed of").select_option("rotation:primary")
        page.get_by_role("button", name="Make feed").click()
        expect(page.locator("#oncall-notice")).to_contain_text("shown only once")
        url = page.locator("#feed-url").input_value()
        assert re.fullmatch(rf"{re.escape(server.url)}/ical/rotation/primary\.ics\?token=tlo_cal_\S+", url), url
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the On call page is {width}px wide on a {PHONE['width']}px phone"
        page.screenshot(path=str(shots / "oncall-phone.png"), full_page=True)

        feed = httpx.get(url, timeout=10)
        assert feed.status_code == 200, feed.text
        assert feed.headers["content-type"].startswith("text/calendar")
        lines = unfold(feed.text)
        assert lines[0] == "BEGIN:VCALENDAR"
        assert lines[-1] == "END:VCALENDAR"
        assert "VERSION:2.0" in lines
        events = events_of(lines)
        assert len(events) >= 7 * 9, "a 1-day rotation over the past week and the next 8 weeks"
        assert {e["SUMMARY"] for e in events} == {f"On call: {m} (primary)" for m in MEMBERS}
        assert len({e["UID"] for e in events}) == len(events)
        for event in events:
            assert re.fullmatch(r"\d{8}T\d{6}Z", event["DTSTART"])
            assert event["DTSTART"] < event["DTEND"]
        again = unfold(httpx.get(url, timeout=10).text)
        assert [e["UID"] for e in events_of(again)] == [e["UID"] for e in events], "UIDs are stable"

        wrong = httpx.get(url.rsplit("=", 1)[0] + "=tlo_cal_wrong", timeout=10)
        other_feed = httpx.get(url.replace("/rotation/primary.ics", "/user/alice.ics"), timeout=10)
        assert (wrong.status_code, other_feed.status_code) == (404, 404)

        page.goto(f"{server.url}/ui/oncall")
        page.get_by_role("button", name="Revoke feed of rotation primary").click()
        expect(page.locator("#oncall-notice")).to_contain_text("revoked")
        gone = httpx.get(url, timeout=10)
        assert gone.status_code == 404
        assert gone.text == wrong.text, "a revoked feed answers exactly like a wrong token"
    finally:
        phone.close()
