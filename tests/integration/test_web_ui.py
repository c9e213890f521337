"""The web UI in a real Chromium against a real `teleops serve`: log in, see an alert, ack it, use the console.

Chromium is Debian's /usr/bin/chromium driven by Playwright (never `playwright install`). Every wait is
Playwright's own polling `expect(...)` with a deadline. Screenshots go to the test's temp dir, or to
$TELEOPS_SCREENSHOTS when set (`TELEOPS_SCREENSHOTS=docs/screenshots pytest tests/integration/test_web_ui.py`
refreshes the ones in the docs).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Playwright,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.integration.servers import TeleopsServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 860}
PHONE: ViewportSize = {"width": 390, "height": 844}
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as runner:
        yield runner


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(WAIT_MS)
    yield context
    context.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    target = Path(os.environ.get("TELEOPS_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture
def server(teleops_server: Callable[..., TeleopsServer]) -> TeleopsServer:
    return teleops_server()


def admin_password(server: TeleopsServer) -> str:
    """A fresh admin password through the CLI (the one printed at first start is in the server's log only)."""
    return server.cli("user", "set-password", "admin", "--generate").stdout.strip().splitlines()[-1]


def log_in(page: Page, server: TeleopsServer, password: str, *, then: str = "/ui/") -> None:
    page.goto(f"{server.url}{then}")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    page.get_by_label("User").fill("admin")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{server.url}{then}")


def fire(server: TeleopsServer, **alert: str) -> None:
    body = {"summary": "Disk / is 97% full", "host": "localhost", "check": "DiskFull", "severity": "critical"}
    body.update(alert)
    response = httpx.post(f"{server.url}/api/v1/alerts/generic", json=body, headers=server.ingest_headers, timeout=10)
    assert response.status_code < 300, response.text


def test_wrong_password_shows_the_reason_and_stays_logged_out(server: TeleopsServer, context: BrowserContext) -> None:
    page = context.new_page()
    page.goto(f"{server.url}/ui/")
    page.get_by_label("User").fill("admin")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong user name or password")
    page.goto(f"{server.url}/ui/console")
    expect(page).to_have_url(re.compile(r"/ui/login"))


def test_alert_appears_in_the_list_and_ack_changes_its_state(
    server: TeleopsServer, context: BrowserContext, shots: Path
) -> None:
    page = context.new_page()
    log_in(page, server, admin_password(server))
    expect(page.locator(".empty")).to_contain_text("No")

    fire(server)
    fire(server, summary="Load average 12 on 4 CPUs", check="HighLoad", severity="warning", host="web-1")
    fire(server, summary="<img src=x onerror=alert(1)> certificate expires in 6 days", check="CertExpiry",
         severity="info", host="lb-1")  # fmt: skip
    page.reload()
    rows = page.locator("table.incidents tbody tr")
    expect(rows).to_have_count(3)
    disk = rows.filter(has_text="DiskFull")
    expect(disk).to_contain_text("localhost")
    expect(disk.locator(".badge.sev")).to_have_text("critical")
    expect(disk.locator(".badge.status")).to_have_text("open")
    # Alert text is shown as text, never run: the literal tag is visible and no <img> was created.
    expect(rows.filter(has_text="CertExpiry")).to_contain_text("<img src=x onerror=alert(1)>")
    expect(page.locator("table.incidents img")).to_have_count(0)

    page.locator("table.incidents a", has_text="DiskFull").click()
    expect(page.locator("h1")).to_contain_text("DiskFull")
    expect(page.locator("#incident-status")).to_have_text("open")
    expect(page.locator(".timeline .event").first).to_contain_text("Alert fired")
    page.get_by_role("button", name="Ack").click()
    expect(page.locator("#incident-status")).to_have_text("acknowledged")
    expect(page.locator(".timeline")).to_contain_text("Acknowledged")
    expect(page.locator(".timeline")).to_contain_text("by admin")
    expect(page.get_by_role("button", name="Ack")).to_have_count(0)
    page.screenshot(path=str(shots / "incident.png"), full_page=True)

    # The same state through the REST API: the browser changed the real incident.
    items = server.incidents(status="acknowledged")
    assert [(i["name"], i["acknowledged_by"]) for i in items] == [("DiskFull", "admin")]

    page.goto(f"{server.url}/ui/?status=open")
    expect(rows).to_have_count(2)
    expect(page.locator("table.incidents")).not_to_contain_text("DiskFull")


def test_console_connects_and_shows_typed_messages_after_reload(server: TeleopsServer, context: BrowserContext) -> None:
    page = context.new_page()
    log_in(page, server, admin_password(server), then="/ui/console")
    expect(page.locator("#console")).to_have_attribute("data-connected", "true")
    expect(page.locator("#console-state")).to_contain_text("Connected as admin")
    page.get_by_label("Message").fill("/help")
    page.get_by_role("button", name="Send").click()
    mine = page.locator(".message.mine")
    expect(mine).to_have_count(1)
    expect(mine).to_contain_text("/help")
    page.reload()
    expect(page.locator("#console")).to_have_attribute("data-connected", "true")
    expect(page.locator(".message.mine")).to_contain_text("/help")
    # /help is answered through the conversation pipeline, like on any platform.
    expect(page.locator(".message.bot")).not_to_have_count(0)


def test_phone_width_pages_do_not_scroll_sideways(server: TeleopsServer, browser: Browser, shots: Path) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True)
    context.set_default_timeout(WAIT_MS)
    try:
        page = context.new_page()
        log_in(page, server, admin_password(server))
        fire(server, summary="Disk /var is 99% full on a host with a very long name", host="db-primary-eu-west-1a")
        page.reload()
        expect(page.locator("table.incidents tbody tr")).to_have_count(1)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the incident list is {width}px wide on a {PHONE['width']}px phone"
        page.screenshot(path=str(shots / "incidents-phone.png"), full_page=True)
    finally:
        context.close()


def long_lines(count: int) -> str:
    """A command printing `count` lines of 500 characters (run without a shell: printf's own argument loop)."""
    return "printf '%0500d\\n' " + " ".join(str(n) for n in range(1, count + 1))


def reply_in_console(page: Page, alert: Locator, command: str) -> None:
    alert.get_by_role("button", name="reply").click()
    page.get_by_label("Message").fill(command)
    page.get_by_role("button", name="Send").click()


def widths(element: Locator) -> dict[str, int]:
    """The page's scroll width, and the element's scroll and client widths."""
    found: dict[str, int] = element.evaluate(
        "e => ({page: document.documentElement.scrollWidth, scroll: e.scrollWidth, client: e.clientWidth})"
    )
    return found


def test_long_output_lines_scroll_inside_their_box_on_a_phone(
    teleops_server: Callable[..., TeleopsServer], browser: Browser, shots: Path
) -> None:
    server = teleops_server(local_agent=True)
    context = browser.new_context(viewport=PHONE, is_mobile=True)
    context.set_default_timeout(WAIT_MS)
    try:
        page = context.new_page()
        log_in(page, server, admin_password(server), then="/ui/console")
        expect(page.locator("#console")).to_have_attribute("data-connected", "true")
        fire(server)  # on the local agent's host
        alert = page.locator(".message.bot", has_text="DiskFull")
        line = "1" * 500  # one word: a 500-character command line, and a 500-character output line
        reply_in_console(page, alert, f"echo {line}")
        expect(page.locator(".message.bot", has_text="exit 0")).to_have_count(1, timeout=30_000)
        reply_in_console(page, alert, long_lines(40))  # 20,040 bytes: more than a console message, so also a file
        attachment = page.locator("details.file")
        expect(attachment).to_have_count(1, timeout=30_000)
        attachment.locator("summary").click()
        seen = widths(attachment.locator("pre.output"))
        assert seen["page"] <= PHONE["width"], f"the console is {seen['page']}px wide on a {PHONE['width']}px phone"
        assert seen["scroll"] > seen["client"], f"the output box does not scroll sideways: {seen}"
        page.screenshot(path=str(shots / "console-output-phone.png"), full_page=False)

        page.goto(f"{server.url}/ui/")
        page.locator("table.incidents a", has_text="DiskFull").click()
        output = page.locator(".timeline pre.output", has_text=line[:400]).first
        expect(output).to_be_visible()
        seen = widths(output)
        assert seen["page"] <= PHONE["width"], f"the incident is {seen['page']}px wide on a {PHONE['width']}px phone"
        assert seen["scroll"] > seen["client"], f"the output box does not scroll sideways: {seen}"
        assert output.evaluate("e => getComputedStyle(e).whiteSpace") == "pre"  # scrolled, not wrapped
        page.screenshot(path=str(shots / "incident-output-phone.png"), full_page=True)
    finally:
        context.close()


def test_console_offers_reply_only_where_a_reply_does_something(server: TeleopsServer, context: BrowserContext) -> None:
    """A reply to an incident's message runs on its host; a reply to anything else (here the /help answer) would
    run nothing (chat/conversation.py), so it is not offered there."""
    page = context.new_page()
    log_in(page, server, admin_password(server), then="/ui/console")
    expect(page.locator("#console")).to_have_attribute("data-connected", "true")
    fire(server, host="web-1")
    alert = page.locator(".message.bot", has_text="DiskFull")
    expect(alert).to_have_count(1)
    page.get_by_label("Message").fill("/help")
    page.get_by_role("button", name="Send").click()
    answer = page.locator(".message.bot", has_text="TeleOps commands")
    expect(answer).to_have_count(1)
    expect(answer.get_by_role("button", name="reply")).to_have_count(0)
    expect(page.locator(".message.mine").get_by_role("button", name="reply")).to_have_count(0)

    alert.get_by_role("button", name="reply").click()
    expect(page.locator("#replying")).to_be_visible()
    incident_id = server.incidents()[0]["id"]
    expect(page.locator("#replying")).to_contain_text(f"the command runs on the host of incident #{incident_id}.")
    page.reload()  # the history says the same
    expect(page.locator("#console")).to_have_attribute("data-connected", "true")
    expect(answer.get_by_role("button", name="reply")).to_have_count(0)
    expect(alert.get_by_role("button", name="reply")).to_have_count(1)


def test_console_labels_a_capped_output_file_with_the_bytes_it_holds(
    teleops_server: Callable[..., TeleopsServer], context: BrowserContext
) -> None:
    server = teleops_server(local_agent=True)
    page = context.new_page()
    log_in(page, server, admin_password(server), then="/ui/console")
    expect(page.locator("#console")).to_have_attribute("data-connected", "true")
    fire(server)
    reply_in_console(page, page.locator(".message.bot", has_text="DiskFull"), long_lines(200))  # 100,200 bytes

    attachment = page.locator(".message.bot", has=page.locator("details.file"))
    expect(attachment).to_have_count(1, timeout=30_000)
    # The agent keeps 64 KiB of it (agents.output_cap_bytes): its first and last 32 KiB.
    expect(attachment.locator(".text")).to_have_text(
        "Output of command 1: the first 32,768 and the last 32,768 of 100,200 bytes; the 34,664 between them were cut"
    )
    expect(attachment.locator("summary")).to_have_text(re.compile(r"command-1-output\.txt \(65,\d{3} bytes\)$"))
    expect(page.locator(".message.bot", has_text="exit 0")).to_contain_text("output truncated (100,200 bytes in all)")


def test_alert_arrives_in_the_console_and_a_reply_runs_df_on_its_host(
    teleops_server: Callable[..., TeleopsServer], context: BrowserContext, shots: Path
) -> None:
    server = teleops_server(local_agent=True)
    page = context.new_page()
    log_in(page, server, admin_password(server), then="/ui/console")
    expect(page.locator("#console")).to_have_attribute("data-connected", "true")

    fire(server)  # host "localhost": the embedded default's local agent
    alert = page.locator(".message.bot", has_text="DiskFull")
    expect(alert).to_have_count(1)
    expect(alert).to_contain_text("CRITICAL")
    expect(alert).to_have_class(re.compile(r"\bsev-critical\b"))

    alert.get_by_role("button", name="reply").click()
    expect(page.locator("#replying")).to_contain_text("the command runs on the host of incident #1.")
    page.get_by_label("Message").fill("df -h")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".message.mine", has_text="df -h")).to_have_count(1)
    # The real output of df on this machine: its header line, and the exit code once finished.
    output = page.locator(".message.bot", has_text="Filesystem")
    expect(output).to_have_count(1, timeout=30_000)
    expect(output).to_contain_text("Mounted on")
    expect(output).to_contain_text("exit 0", timeout=30_000)
    # A result of a command on the incident is about the incident too: a reply to it runs on the same host.
    expect(output.get_by_role("button", name="reply")).to_have_count(1)
    page.screenshot(path=str(shots / "console.png"), full_page=False)

    alert.get_by_role("button", name="Ack").click()
    expect(alert).to_contain_text("acknowledged by admin")
    assert [i["acknowledged_by"] for i in server.incidents(status="acknowledged")] == ["admin"]

    # The scenario page tells the same story: fired, the command with its output and exit code, acked.
    page.goto(f"{server.url}/ui/")
    page.locator("table.incidents a", has_text="DiskFull").click()
    timeline = page.locator(".timeline")
    expect(timeline).to_contain_text("Alert fired")
    expect(timeline.locator(".command", has_text="df -h")).not_to_have_count(0)
    expect(timeline.locator("pre.output", has_text="Mounted on")).not_to_have_count(0)
    expect(timeline).to_contain_text("exit 0")
    expect(timeline).to_contain_text("Acknowledged")
    page.screenshot(path=str(shots / "incident.png"), full_page=True)
