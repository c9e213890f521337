"""Web sign-in with TOTP in a real Chromium against a real `teleops serve` (issue #24, part 1).

The first-start admin is led to enrol from the QR page and then signs in with a code; a cookie from before logout
opens nothing; a form without its CSRF token is refused; repeated failures lock the sign-in, with an audit event;
every page fits a 390 px phone. Chromium is Debian's /usr/bin/chromium (never `playwright install`); codes are
computed from the secret the enrolment page shows. Screenshots go to $TELEOPS_SCREENSHOTS when set
(`TELEOPS_SCREENSHOTS=docs/screenshots pytest tests/integration/test_web_signin.py` refreshes docs/web-ui.md's).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyotp
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.integration import test_web_ui
from tests.integration.servers import TeleopsServer
from tests.integration.test_web_ui import PHONE, WAIT_MS

# The browser fixtures of the existing web UI tests (Debian's chromium, headless), shared rather than copied.
playwright, browser, context, shots = (
    test_web_ui.playwright,
    test_web_ui.browser,
    test_web_ui.context,
    test_web_ui.shots,
)

OPERATOR = "olga"
# The built-in policy (admins need a code before a change), so the first admin must enrol before anything else.
DEFAULT_POLICY: dict[str, Any] = {"policy": {}, "users": [{"name": OPERATOR, "role": "operator"}]}


def password_of(server: TeleopsServer, user: str) -> str:
    """A fresh password through the CLI (the admin's first one is only in the server's log)."""
    return server.cli("user", "set-password", user, "--generate").stdout.strip().splitlines()[-1]


def submit_password(page: Page, server: TeleopsServer, user: str, password: str) -> None:
    page.goto(f"{server.url}/ui/login")
    page.get_by_label("User").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def enrol(page: Page, folder: Path | None = None) -> pyotp.TOTP:
    """On the enrolment page: read the secret shown under the QR code and confirm the current code."""
    expect(page.locator(".qr svg")).to_be_visible()
    secret = page.locator("#totp-secret").inner_text().replace(" ", "")
    totp = pyotp.TOTP(secret)
    if folder is not None:
        page.screenshot(path=str(folder / "enrol-2fa.png"), full_page=True)
    page.get_by_label("Code from the app").fill(totp.now())
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator("#twofactor-status")).to_contain_text("Authenticator enrolled")
    return totp


def next_code(totp: pyotp.TOTP) -> str:
    """The code of the next 30 s step: accepted now (one step of skew) and never the one just used."""
    return totp.at(time.time() + 30)


def log_out(page: Page) -> None:
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/ui/login"))


def test_first_admin_is_led_to_enrol_from_the_qr_page_then_signs_in_with_a_code(
    teleops_server: Callable[..., TeleopsServer], context: BrowserContext, shots: Path
) -> None:
    server = teleops_server(config=DEFAULT_POLICY)
    page = context.new_page()
    password = password_of(server, "admin")
    submit_password(page, server, "admin", password)
    expect(page).to_have_url(f"{server.url}/ui/account/2fa")
    expect(page.locator(".info-box")).to_contain_text("enrol an authenticator app before anything else")
    # The server, not the menu, keeps them here: every other page and the UI's API lead back to enrolment.
    page.goto(f"{server.url}/ui/console")
    expect(page).to_have_url(f"{server.url}/ui/account/2fa")
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    api = httpx.get(f"{server.url}/api/v1/incidents", cookies=cookies, timeout=10)
    assert api.status_code == 401, api.text

    totp = enrol(page, shots)
    page.goto(f"{server.url}/ui/")
    expect(page.locator("h1")).to_have_text("Incidents")
    log_out(page)

    submit_password(page, server, "admin", password)
    expect(page.locator("h1")).to_have_text("Authenticator code")
    page.screenshot(path=str(shots / "login-code.png"), full_page=True)
    page.get_by_label("Code").fill(next_code(totp))
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{server.url}/ui/")
    expect(page.locator(".topbar .who")).to_have_text("admin")

    # Re-enrolment needs a current code; a wrong one is refused and nothing changes.
    page.goto(f"{server.url}/ui/account/2fa")
    page.screenshot(path=str(shots / "account-2fa.png"), full_page=True)
    page.get_by_label("Current code").fill("000000" if next_code(totp) != "000000" else "111111")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong code")
    expect(page.locator(".qr svg")).to_have_count(0)


def test_a_cookie_from_before_logout_no_longer_works(
    teleops_server: Callable[..., TeleopsServer], browser: Browser, context: BrowserContext
) -> None:
    server = teleops_server(config=DEFAULT_POLICY)
    page = context.new_page()
    submit_password(page, server, OPERATOR, password_of(server, OPERATOR))
    expect(page.locator("h1")).to_have_text("Incidents")
    old = context.cookies()
    log_out(page)

    replay = browser.new_context(viewport={"width": 1280, "height": 860})
    replay.set_default_timeout(WAIT_MS)
    try:
        replay.add_cookies(old)  # type: ignore[arg-type]
        stale = replay.new_page()
        stale.goto(f"{server.url}/ui/")
        expect(stale).to_have_url(re.compile(r"/ui/login\?next="))
    finally:
        replay.close()
    cookies = {c["name"]: c["value"] for c in old}
    response = httpx.get(f"{server.url}/ui/account/2fa", cookies=cookies, follow_redirects=False, timeout=10)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/ui/login")


def test_a_form_post_without_the_csrf_token_is_refused(
    teleops_server: Callable[..., TeleopsServer], context: BrowserContext
) -> None:
    server = teleops_server(config=DEFAULT_POLICY)
    page = context.new_page()
    submit_password(page, server, OPERATOR, password_of(server, OPERATOR))
    page.goto(f"{server.url}/ui/account/2fa")
    # The real form, in the real browser, with its hidden token removed: the server refuses the post.
    page.locator("form[action='/ui/account/2fa'] input[name='csrf_token']").evaluate("e => e.remove()")
    page.get_by_label("Code from the app").fill("123456")
    with page.expect_response(lambda r: r.url.endswith("/ui/account/2fa") and r.request.method == "POST") as posted:
        page.get_by_role("button", name="Confirm").click()
    assert posted.value.status == 403
    expect(page.locator("body")).to_contain_text("reload the page and try again")
    # The same for logout: without the token the session is not ended.
    page.goto(f"{server.url}/ui/")
    page.locator("form.logout input[name='csrf_token']").evaluate("e => e.remove()")
    with page.expect_response(lambda r: r.url.endswith("/ui/logout")) as logout:
        page.get_by_role("button", name="Log out").click()
    assert logout.value.status == 403
    page.goto(f"{server.url}/ui/")
    expect(page.locator("h1")).to_have_text("Incidents")


def test_repeated_failures_lock_the_sign_in_with_an_audit_event_and_say_when_to_retry(
    teleops_server: Callable[..., TeleopsServer], context: BrowserContext, shots: Path
) -> None:
    server = teleops_server(config={**DEFAULT_POLICY, "twofactor": {"lockout_after": 3, "web_lockout": "10m"}})
    page = context.new_page()
    right = password_of(server, OPERATOR)
    for _ in range(2):
        submit_password(page, server, OPERATOR, "not-it")
        expect(page.get_by_role("alert")).to_contain_text("Wrong user name or password")
    submit_password(page, server, OPERATOR, "not-it")
    expect(page.get_by_role("alert")).to_contain_text("is locked after too many failed attempts. Try again after")
    page.screenshot(path=str(shots / "login-locked.png"), full_page=True)
    submit_password(page, server, OPERATOR, right)  # the right password does not open a locked sign-in
    expect(page.get_by_role("alert")).to_contain_text("Try again after")

    # Wrong codes lock the shared 2FA state (the one chat /otp uses) until an admin unlocks it.
    admin = context.new_page()
    password = password_of(server, "admin")
    submit_password(admin, server, "admin", password)
    totp = enrol(admin)
    log_out(admin)
    submit_password(admin, server, "admin", password)
    wrong = "000000" if next_code(totp) != "000000" else "111111"
    for _ in range(3):
        admin.get_by_label("Code").fill(wrong)
        admin.get_by_role("button", name="Sign in").click()
        expect(admin.get_by_role("alert")).to_be_visible()
    expect(admin.get_by_role("alert")).to_contain_text("teleops user 2fa-unlock admin")
    server.cli("user", "2fa-unlock", "admin")
    submit_password(admin, server, "admin", password)
    admin.get_by_label("Code").fill(next_code(totp))
    admin.get_by_role("button", name="Sign in").click()
    expect(admin).to_have_url(f"{server.url}/ui/")

    admin.goto(f"{server.url}/ui/audit?action=web.")
    rows = admin.locator("table.audit tbody tr")
    expect(rows.filter(has_text="web.locked_out")).to_have_count(2)
    expect(rows.filter(has_text="web.locked_out").filter(has_text=OPERATOR)).to_contain_text("failed passwords")
    expect(rows.filter(has_text="web.login_failed")).to_have_count(3)


def test_every_page_is_usable_at_390_px_wide(
    teleops_server: Callable[..., TeleopsServer], browser: Browser, shots: Path
) -> None:
    server = teleops_server(config=DEFAULT_POLICY)
    phone = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    phone.set_default_timeout(WAIT_MS)
    try:
        page = phone.new_page()

        def fits(name: str) -> None:
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{name} is {width} px wide at {PHONE['width']} px"
            for button in page.get_by_role("button").all():
                if button.is_visible():
                    box = button.bounding_box()
                    assert box is not None
                    assert 0 <= box["x"] <= box["x"] + box["width"] <= PHONE["width"], name
            page.screenshot(path=str(shots / f"{name}-phone.png"), full_page=True)

        password = password_of(server, "admin")
        page.goto(f"{server.url}/ui/login")
        fits("login")
        submit_password(page, server, "admin", password)
        expect(page.locator(".qr svg")).to_be_visible()
        fits("enrol-2fa")
        totp = enrol(page)
        log_out(page)
        submit_password(page, server, "admin", password)
        expect(page.get_by_label("Code")).to_be_visible()
        fits("login-code")
        page.get_by_label("Code").fill(next_code(totp))
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(f"{server.url}/ui/")
        page.goto(f"{server.url}/ui/audit")
        expect(page.locator("#chain")).to_contain_text("intact")
        page.get_by_label("Action").fill("login.")
        page.get_by_label("Action").press("Enter")
        expect(page.locator("table.audit tbody tr").first).to_contain_text("login.")
        fits("audit")
        page.goto(f"{server.url}/ui/account/2fa")
        fits("account-2fa")
    finally:
        phone.close()
