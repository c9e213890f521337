"""The live incident list in a real Chromium against a real `teleops serve` (issue #24, incidents).

An alert posted to the ingest API appears in the open list without a reload, and a status change shows the same
way, also after the controller restarts; filters by severity, host and text find what they should and leave out
the rest, with the counts per status; bulk Acknowledge works without JavaScript and is recorded as the person;
a bulk post without its CSRF token, or with too many incidents, changes nothing; the list fits a 390 px phone.
Screenshots go to $TELEOPS_SCREENSHOTS when set (`incidents.png`, `incidents-filtered.png` in docs/web-ui.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import httpx
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.integration.servers import TeleopsServer, stop_process
from tests.integration.test_agent_e2e import restart_controller
from tests.integration.test_web_signin import (
    browser,
    context,
    password_of,
    playwright,
    shots,
    submit_password,
)
from tests.integration.test_web_ui import DESKTOP, PHONE, WAIT_MS

__all__ = ["browser", "context", "playwright", "shots"]  # the shared browser fixtures

# The admin keeps the test fixtures' policy (no code before a change) and is not forced to enrol.
CONFIG = {"twofactor": {"web_signin": "enrolled"}}


def fire(server: TeleopsServer, check: str, host: str, severity: str, summary: str) -> int:
    """POST one alert to the generic ingest endpoint as a monitoring system would; the incident's id."""
    body = {"check": check, "host": host, "severity": severity, "summary": summary}
    response = httpx.post(f"{server.url}/api/v1/alerts/generic", json=body, headers=server.ingest_headers, timeout=10)
    assert response.status_code == 200, response.text
    return int(response.json()["results"][0]["incident_id"])


def act(server: TeleopsServer, incident_id: int, action: str) -> None:
    """Ack or resolve through the REST API (as the API token's user, admin): a change made outside this page."""
    url = f"{server.url}/api/v1/incidents/{incident_id}/{action}"
    httpx.post(url, headers=server.api_headers, timeout=10).raise_for_status()


def signed_in(server: TeleopsServer, page: Page) -> None:
    submit_password(page, server, "admin", password_of(server, "admin"))
    expect(page).to_have_url(f"{server.url}/ui/")


def test_new_and_changed_incidents_appear_without_reload_and_filters_narrow_the_list(
    teleops_server: Callable[..., TeleopsServer], context: BrowserContext, shots: Path
) -> None:
    server = teleops_server(config=CONFIG)
    page = context.new_page()
    signed_in(server, page)
    expect(page.locator(".empty")).to_contain_text("No incidents")
    page.evaluate("window.notReloaded = true")  # gone if the page were loaded again

    disk = fire(server, "DiskFull", "db-1", "critical", "Disk / is 97% full")
    load = fire(server, "HighLoad", "web-1", "warning", "Load average 12 on 4 CPUs")
    rows = page.locator("table.incidents tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator(f"#incident-{disk} .badge.status")).to_have_text("open")
    act(server, disk, "ack")
    expect(page.locator(f"#incident-{disk} .badge.status")).to_have_text("acknowledged")
    expect(page.locator("#counts")).to_contain_text("open 1")
    expect(page.locator("#counts")).to_contain_text("acknowledged 1")
    expect(page.locator("#shown")).to_have_text("Showing 2 of 2 matching.")
    expect(page.locator("#live-list")).to_have_attribute("data-live", "ok")
    assert page.evaluate("window.notReloaded") is True

    page.get_by_label("Severity").select_option("critical")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"severity=critical"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("DiskFull")

    page.goto(f"{server.url}/ui/")
    page.get_by_label("Text").fill("load average")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("HighLoad")
    expect(page.locator("table.incidents")).not_to_contain_text("DiskFull")

    page.goto(f"{server.url}/ui/")
    page.get_by_label("Host").fill("web-*")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"[?&]host=web-\*(&|$)"))
    expect(rows).to_have_count(1)
    # Live updates keep the filter: a new web host appears, a new db host does not.
    page.evaluate("window.notReloaded = true")
    fire(server, "DiskFull", "db-2", "critical", "Disk /var is 99% full")
    web2 = fire(server, "HighLoad", "web-2", "critical", "Load average 30 on 4 CPUs")
    expect(page.locator(f"#incident-{web2}")).to_be_visible()
    expect(rows).to_have_count(2)
    expect(page.locator("table.incidents")).not_to_contain_text("db-2")
    expect(page.locator("#counts")).to_contain_text("open 2")
    expect(page.locator("#shown")).to_have_text("Showing 2 of 2 matching.")
    assert page.evaluate("window.notReloaded") is True
    assert load in [int(i) for i in rows.evaluate_all("rs => rs.map(r => r.id.split('-')[1])")]
    page.screenshot(path=str(shots / "incidents-filtered.png"), full_page=True)

    # On a 390 px phone neither the filtered list nor the whole one (with a long host name) scrolls sideways.
    fire(server, "DiskFull", "db-primary-eu-west-1a-with-a-long-name", "critical", "Disk /var is 99% full " * 4)
    page.set_viewport_size(PHONE)
    for url in ("/ui/?status=unresolved&severity=critical&host=web-*&q=load", "/ui/"):
        page.goto(f"{server.url}{url}")
        expect(page.get_by_role("button", name="Resolve selected")).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{url} is {width}px wide on a {PHONE['width']}px phone"
    expect(rows).to_have_count(5)


def test_the_list_says_when_the_controller_is_gone_and_picks_up_again_after_it_restarts(
    teleops_server: Callable[..., TeleopsServer], context: BrowserContext
) -> None:
    server = teleops_server(config=CONFIG)
    page = context.new_page()
    signed_in(server, page)
    live = page.locator("#live-list")
    expect(live).to_have_attribute("data-live", "ok")
    page.evaluate("window.notReloaded = true")
    stop_process(server.process)  # SIGTERM by PID
    expect(live).to_have_attribute("data-live", "retrying")
    expect(page.locator("#live-state")).to_contain_text("Live updates paused: TeleOps cannot be reached")
    restart_controller(server)  # the same port, config and database
    incident = fire(server, "DiskFull", "db-1", "critical", "Disk / is 97% full")
    expect(page.locator(f"#incident-{incident}")).to_be_visible(timeout=WAIT_MS)
    expect(live).to_have_attribute("data-live", "ok")
    expect(page.locator("#live-state")).to_contain_text("Live:")
    assert page.evaluate("window.notReloaded") is True


def test_bulk_acknowledge_without_javascript_acts_as_the_person_and_reports_each_incident(
    teleops_server: Callable[..., TeleopsServer], browser: Browser, shots: Path
) -> None:
    server = teleops_server(config=CONFIG)
    disk = fire(server, "DiskFull", "db-1", "critical", "Disk / is 97% full")
    load = fire(server, "HighLoad", "web-1", "warning", "Load average 12 on 4 CPUs")
    cert = fire(server, "CertExpiry", "lb-1", "info", "certificate expires in 6 days")
    act(server, cert, "resolve")
    context = browser.new_context(viewport=DESKTOP, java_script_enabled=False)
    context.set_default_timeout(WAIT_MS)
    try:
        page = context.new_page()
        signed_in(server, page)
        page.goto(f"{server.url}/ui/?source=generic")
        for incident in (disk, load, cert):
            page.get_by_label(re.compile(rf"^Select #{incident} ")).check()
        page.get_by_role("button", name="Acknowledge selected").click()
        expect(page).to_have_url(re.compile(r"/ui/\?source=generic&done=ack&"))  # back to the same filtered list
        expect(page.locator("#bulk-result")).to_have_text(
            f"Acknowledged 2: #{load}, #{disk}. Left as they were: 1 already resolved (#{cert})."
        )
        expect(page.locator(f"#incident-{disk} .badge.status")).to_have_text("acknowledged")
        expect(page.locator(f"#incident-{load} .badge.status")).to_have_text("acknowledged")
        expect(page.locator(f"#incident-{cert} .badge.status")).to_have_text("resolved")
        page.screenshot(path=str(shots / "incidents.png"), full_page=True)
        for incident in (disk, load):
            acked = [e for e in server.incident(incident)["timeline"] if e["kind"] == "incident.acknowledged"]
            assert [(e["actor"], e["data"]["via"]) for e in acked] == [("admin", "web")]
        page.get_by_role("link", name=f"#{disk} DiskFull").click()
        expect(page.locator(".timeline")).to_contain_text("Acknowledged")
        expect(page.locator(".timeline")).to_contain_text("by admin")

        # Without the form's CSRF token the server refuses, and nothing changes.
        page.goto(f"{server.url}/ui/")
        refused = page.request.post(
            f"{server.url}/ui/incidents/bulk", form={"action": "resolve", "incident": str(disk)}, max_redirects=0
        )
        assert refused.status == 403
        assert "reload the page" in refused.text()
        # More than 200 at once: refused with the reason, and nothing changes either.
        token = page.locator("#bulk input[name='csrf_token']").input_value()
        many = [("csrf_token", token), ("action", "resolve")] + [("incident", str(i)) for i in range(1, 202)]
        sent_back = page.request.post(
            f"{server.url}/ui/incidents/bulk",
            data=urlencode(many),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            max_redirects=0,
        )
        assert sent_back.status == 303
        page.goto(server.url + sent_back.headers["location"])
        expect(page.locator("#bulk-result")).to_contain_text("201 incidents were selected; at most 200")
        assert {i["id"]: i["status"] for i in server.incidents()} == {
            disk: "acknowledged",
            load: "acknowledged",
            cert: "resolved",
        }
    finally:
        context.close()
