"""People and tokens (issue #24, part 6) in a real Chromium against a real `teleops serve`.

An admin enrolled in TOTP creates an ingest token with their step-up code, sees the secret once, and that secret
really works on the ingest API until it is revoked; a wrong code changes nothing; a role changed in the UI for a
person kept in the database survives a restart, while a role declared in the config cannot be changed (the server
refuses the POST); a 2FA reset tells the person on (fake) Telegram; non-admins get 403 from the server on every page
and form; a form without its CSRF token is refused; the pages fit a 390 px phone.

Codes come from the secret `teleops user 2fa-enroll` prints. Each accepted code uses up its 30 s step (no replay),
so `Authenticator` hands out the steps in order, starting one step back (the server accepts ±1 step).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pyotp
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.integration.servers import TeleopsServer, eventually, stop_process, wait_until
from tests.integration.test_telegram_commands_e2e import FakeInThread, telegram
from tests.integration.test_web_signin import (
    OPERATOR,
    browser,
    context,
    password_of,
    playwright,
    shots,
    submit_password,
)
from tests.integration.test_web_ui import DESKTOP, PHONE

__all__ = ["browser", "context", "playwright", "shots", "telegram"]  # the shared fixtures

OLGA_TG = 1001
# Nobody is forced to enrol; olga's role is declared in the config.
CONFIG = {"twofactor": {"web_signin": "enrolled"}, "users": [{"name": OPERATOR, "role": "operator"}]}
FIRING = Path(__file__).parents[2] / "src/teleops/sources/alertmanager/fixtures/firing.json"


class Authenticator:
    """The admin's authenticator app: a fresh code per use, never a step the server has already accepted."""

    def __init__(self, uri: str) -> None:
        self.totp = pyotp.TOTP(pyotp.parse_uri(uri).secret)
        self.last: int | None = None

    def code(self) -> str:
        now = time.time()
        current = int(now) // 30
        # The first code goes one step back when the step is young enough that it stays within the server's ±1.
        first = current - 1 if now % 30 < 20 else current
        step = first if self.last is None else max(self.last + 1, current - 1)
        if step > current + 1:  # all of this window's steps are used: the next one is valid at the next boundary
            time.sleep((step - 1) * 30 - now + 0.2)
        self.last = step
        return str(self.totp.at(step * 30))


def enrol_admin(server: TeleopsServer, user: str = "admin") -> Authenticator:
    return Authenticator(server.cli("user", "2fa-enroll", user).stdout.strip().splitlines()[-1])


def sign_in_admin(page: Page, server: TeleopsServer, auth: Authenticator) -> None:
    submit_password(page, server, "admin", password_of(server, "admin"))
    expect(page.locator("h1")).to_have_text("Authenticator code")
    page.get_by_label("Code", exact=True).fill(auth.code())
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{server.url}/ui/")


def csrf_of(page: Page) -> str:
    return str(page.locator("form.logout input[name='csrf_token']").get_attribute("value"))


def post_alert(server: TeleopsServer, secret: str) -> int:
    body = json.loads(FIRING.read_text())
    headers = {"Authorization": f"Bearer {secret}"}
    return httpx.post(f"{server.url}/api/v1/alerts/alertmanager", json=body, headers=headers, timeout=10).status_code


def fits_a_phone(page: Page) -> None:
    page.set_viewport_size(PHONE)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} is {width}px wide on a {PHONE['width']}px phone"


def restart(server: TeleopsServer) -> None:
    """Stop `teleops serve` by its PID and start it again on the same config, port and data."""
    stop_process(server.process)
    with server.log.open("ab") as out:
        server.process = subprocess.Popen(
            [sys.executable, "-m", "teleops.cli", "serve", "--config", str(server.config_path)],
            cwd=server.config_path.parent,
            env=server.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_until(
        lambda: httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200,
        what="teleops serve after a restart",
        process=server.process,
        log=server.log,
    )


def test_an_ingest_token_made_in_the_browser_works_until_revoked_and_a_wrong_code_changes_nothing(
    teleops_server: Callable[..., TeleopsServer], context: BrowserContext, shots: Path
) -> None:
    server = teleops_server(config=CONFIG)
    auth = enrol_admin(server)
    page = context.new_page()
    sign_in_admin(page, server, auth)
    page.get_by_role("link", name="Tokens").click()
    expect(page).to_have_url(f"{server.url}/ui/tokens")
    form = page.locator("#create-token")

    # Without its CSRF token the server refuses the form before looking at anything else.
    form.locator("input[name='csrf_token']").evaluate("e => e.remove()")
    form.get_by_label("Name", exact=True).fill("no-csrf")
    form.get_by_label("Your authenticator code", exact=True).fill("123456")
    with page.expect_response(lambda r: r.url.endswith("/ui/tokens") and r.request.method == "POST") as posted:
        form.get_by_role("button", name="Create token").click()
    assert posted.value.status == 403
    page.goto(f"{server.url}/ui/tokens")
    expect(page.locator("tr[data-token='ingest:no-csrf']")).to_have_count(0)

    form.get_by_label("For").select_option("ingest")
    form.get_by_label("Name", exact=True).fill("alertmanager")
    form.get_by_label("Your authenticator code", exact=True).fill(auth.code())
    form.get_by_role("button", name="Create token").click()
    expect(page.locator("h1")).to_have_text("Token created")
    secret = page.get_by_label("Secret", exact=True).input_value()
    assert secret.startswith("tlo_in_")
    snippet = page.locator("#alertmanager-snippet")
    expect(snippet).to_contain_text(f"url: {server.url}/api/v1/alerts/alertmanager")
    expect(snippet).to_contain_text(f"credentials: {secret}")
    page.screenshot(path=str(shots / "token-created.png"), full_page=True)
    fits_a_phone(page)
    page.set_viewport_size(DESKTOP)

    assert post_alert(server, secret) == 200
    page.goto(f"{server.url}/ui/tokens")
    assert secret not in page.content(), "the secret is shown once, never on the list"
    row = page.locator("tr[data-token='ingest:alertmanager']")
    expect(row).to_contain_text("admin")  # created by
    row.get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("status")).to_contain_text("it stops working now")
    expect(page.locator("#revoked-tokens tr[data-token='ingest:alertmanager']")).to_have_count(1)
    assert post_alert(server, secret) == 401

    # A wrong code: a clear error, no token, and the failure counted like every other code.
    form.get_by_label("Name", exact=True).fill("second")
    form.get_by_label("Your authenticator code", exact=True).fill("000000" if auth.totp.now() != "000000" else "111111")
    with page.expect_response(lambda r: r.url.endswith("/ui/tokens") and r.request.method == "POST") as posted:
        form.get_by_role("button", name="Create token").click()
    assert posted.value.status == 401
    expect(page.get_by_role("alert")).to_contain_text("Nothing changed: wrong code")
    expect(page.locator("tr[data-token='ingest:second']")).to_have_count(0)
    page.screenshot(path=str(shots / "tokens.png"), full_page=True)
    fits_a_phone(page)

    page.goto(f"{server.url}/ui/audit?actor=admin&q=alertmanager")
    rows = page.locator("table.audit tbody tr")
    expect(rows.filter(has_text="token.created")).to_have_count(1)
    expect(rows.filter(has_text="token.revoked")).to_have_count(1)
    page.goto(f"{server.url}/ui/audit?action=2fa.rejected")
    expect(page.locator("table.audit tbody tr").filter(has_text="web-stepup")).to_have_count(1)


def test_a_database_persons_role_change_survives_a_restart_and_a_config_role_cannot_be_changed(
    teleops_server: Callable[..., TeleopsServer], context: BrowserContext, shots: Path
) -> None:
    server = teleops_server(config=CONFIG)
    auth = enrol_admin(server)
    page = context.new_page()
    sign_in_admin(page, server, auth)
    page.get_by_role("link", name="People").click()
    add = page.locator("#add-person")
    add.get_by_label("Name", exact=True).fill("dave")
    add.get_by_label("Role").select_option("operator")
    add.get_by_label("Your authenticator code", exact=True).fill(auth.code())
    add.get_by_role("button", name="Add person").click()
    expect(page).to_have_url(f"{server.url}/ui/people/dave?added=1")
    expect(page.locator("#declared")).to_contain_text("in the database")

    role = page.locator("#role-form")
    role.get_by_label("New role").select_option("admin")
    role.get_by_label("Your authenticator code", exact=True).fill(auth.code())
    role.get_by_role("button", name="Change role").click()
    expect(page.get_by_role("status")).to_contain_text("dave is now admin (was operator)")
    expect(page.locator("#role")).to_have_text("admin")

    restart(server)
    page.goto(f"{server.url}/ui/people")  # the session is in the database: it outlives the process
    expect(page.locator("tr[data-person='dave']")).to_contain_text("admin")
    expect(page.locator("tr[data-person='dave']")).to_contain_text("database")
    expect(page.locator(f"tr[data-person='{OPERATOR}']")).to_contain_text("config")
    page.screenshot(path=str(shots / "people.png"), full_page=True)
    fits_a_phone(page)

    # olga's role is the config's: no form, and the server refuses a hand-made POST whatever it carries.
    page.goto(f"{server.url}/ui/people/{OPERATOR}")
    expect(page.locator("#role-readonly")).to_contain_text("Declared in config — edit teleops.yaml")
    expect(page.locator("#role-form")).to_have_count(0)
    refused = page.request.post(
        f"{server.url}/ui/people/{OPERATOR}/role",
        form={"csrf_token": csrf_of(page), "role": "admin", "code": "123456"},
    )
    assert refused.status == 409, refused.text()
    assert "edit users: in teleops.yaml" in refused.text()
    page.reload()
    expect(page.locator("#role")).to_have_text("operator")
    fits_a_phone(page)


def test_a_2fa_reset_tells_the_person_in_chat_and_non_admins_are_refused_by_the_server(
    teleops_server: Callable[..., TeleopsServer], telegram: FakeInThread, browser: Browser, context: BrowserContext
) -> None:
    fake = telegram.fake
    config = {
        "twofactor": {"web_signin": "enrolled"},
        "users": [{"name": OPERATOR, "role": "operator", "telegram_id": OLGA_TG}],
        "telegram": {"token": fake.token, "base_url": fake.base_url, "mode": "polling", "poll_timeout": "1s"},
    }
    server = teleops_server(config=config)
    auth = enrol_admin(server)
    enrol_admin(server, OPERATOR)
    page = context.new_page()
    sign_in_admin(page, server, auth)
    page.goto(f"{server.url}/ui/people/{OPERATOR}")
    expect(page.locator("#twofactor")).to_have_text("enrolled")
    reset = page.locator("#reset-form")
    reset.get_by_label("Your authenticator code", exact=True).fill(auth.code())
    reset.get_by_role("button", name="Reset 2FA").click()
    expect(page.get_by_role("status")).to_contain_text(f"{OPERATOR} was told in telegram")
    expect(page.locator("#twofactor")).to_have_text("not enrolled")
    told = eventually(
        lambda: [m for m in telegram.call(lambda: fake.chat_messages(OLGA_TG)) if "was reset" in m.text],
        what="olga's Telegram message about the reset",
    )
    assert "admin reset your two-factor sign-in" in told[0].text
    assert f"{server.url}/ui/account/2fa" in told[0].text
    page.goto(f"{server.url}/ui/audit?action=2fa.reset")
    expect(page.locator("table.audit tbody tr").filter(has_text=f"user:{OPERATOR}")).to_have_count(1)

    # olga is no admin: the server answers 403 to the pages and to every form, with her own valid CSRF token.
    olga = browser.new_context()
    try:
        mine = olga.new_page()
        submit_password(mine, server, OPERATOR, password_of(server, OPERATOR))
        expect(mine).to_have_url(f"{server.url}/ui/")
        expect(mine.get_by_role("link", name="People")).to_have_count(0)
        for path in ("/ui/people", "/ui/tokens", f"/ui/people/{OPERATOR}"):
            response = mine.goto(f"{server.url}{path}")
            assert response is not None
            assert response.status == 403, path
        mine.goto(f"{server.url}/ui/")
        token = csrf_of(mine)
        for path, form in (
            ("/ui/tokens", {"kind": "ingest", "name": "mine", "code": "123456"}),
            ("/ui/tokens/revoke", {"kind": "ingest", "name": "default"}),
            ("/ui/people", {"name": "eve", "role": "admin", "code": "123456"}),
            (f"/ui/people/{OPERATOR}/role", {"role": "admin", "code": "123456"}),
            ("/ui/people/admin/2fa-reset", {"code": "123456"}),
            ("/ui/people/admin/invite", {"code": "123456"}),
        ):
            answer = mine.request.post(f"{server.url}{path}", form={"csrf_token": token, **form})
            assert answer.status == 403, (path, answer.status)
            assert "is not an admin" in answer.text()
    finally:
        olga.close()
    page.goto(f"{server.url}/ui/tokens")  # nothing she posted changed anything
    expect(page.locator("#live-tokens tr[data-token='ingest:default']")).to_have_count(1)
    expect(page.locator("tr[data-token='ingest:mine']")).to_have_count(0)
    page.goto(f"{server.url}/ui/people")
    expect(page.locator("tr[data-person='eve']")).to_have_count(0)
    expect(page.locator(f"tr[data-person='{OPERATOR}']")).to_contain_text("operator")
