"""Commands from the web UI in a real Chromium against a real `teleops serve` and its local agent (issue #24,
parts 2(b) and 3).

From the incident page a person runs a command on the incident's host and reads its output on the command's
page; Run again shows what will run where and runs only after "Run it", once, through the same pipeline as chat
(a policy that refuses it runs nothing and says why; a rule that needs a code asks for one); the history filters
by host, person and status; a running command is cancelled from its page; someone whose policy does not cover
the host neither sees nor opens another person's command; a form without its CSRF token is refused.
Screenshots (`commands.png`, `command.png`, `run-again-confirm.png`) go to $TELEOPS_SCREENSHOTS when set.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyotp
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.integration.servers import TeleopsServer
from tests.integration.test_web_signin import browser, context, password_of, playwright, shots, submit_password
from tests.integration.test_web_ui import PHONE, WAIT_MS, fire

__all__ = ["browser", "context", "playwright", "shots"]  # the shared browser fixtures

RUN_WAIT_MS = 30_000
# olga: diagnostics anywhere; otto: only web-* hosts (not the local agent's `localhost`); sam: echo with a code.
POLICY: dict[str, Any] = {
    "roles": {
        "admin": [{"hosts": ["*"], "commands": ["*"], "require_2fa": False}],
        "operator": [{"hosts": ["*"], "commands": ["uptime", "echo *"]}],
        "outsider": [{"hosts": ["web-*"], "commands": ["uptime"]}],
        "stepper": [{"hosts": ["*"], "commands": ["echo *"], "require_2fa": True}],
    }
}
CONFIG: dict[str, Any] = {
    "twofactor": {"web_signin": "enrolled"},  # nobody is led to enrol first: these tests are about commands
    "policy": POLICY,
    "users": [
        {"name": "olga", "role": "operator"},
        {"name": "otto", "role": "outsider"},
        {"name": "sam", "role": "stepper"},
    ],
}


def sign_in(page: Page, server: TeleopsServer, user: str) -> None:
    submit_password(page, server, user, password_of(server, user))
    expect(page).to_have_url(f"{server.url}/ui/")


def api(server: TeleopsServer, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, f"{server.url}{path}", headers=server.api_headers, timeout=40, **kwargs)
    assert response.status_code < 300, response.text
    return response.json()


def run_by_api(server: TeleopsServer, command: str, incident_id: int | None = None) -> dict[str, Any]:
    """As admin through the REST API, waiting for the end."""
    body: dict[str, Any] = {"host": "localhost", "command": command, "incident_id": incident_id}
    created = api(server, "POST", "/api/v1/commands", json=body)
    result: dict[str, Any] = api(server, "GET", f"/api/v1/commands/{created['id']}", params={"wait": 30})
    assert result["status"] == "succeeded", result
    return result


def commands_in_db(server: TeleopsServer) -> list[tuple[int, str, str, list[str], str | None]]:
    """(id, requester, status, argv, dispatched_at) of every command, read straight from the database."""
    import json
    import sqlite3

    with sqlite3.connect(server.sqlite_path) as db:
        rows = db.execute("SELECT id, requester, status, argv, dispatched_at FROM commands ORDER BY id").fetchall()
    return [(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]


def incident_with_a_fix(server: TeleopsServer, fix: str) -> int:
    """An alert answered with `fix` (as admin) and resolved, then fired again: the new incident's id, whose page
    offers `fix` to run again."""
    fire(server)
    first = server.incidents()[0]["id"]
    run_by_api(server, fix, first)
    api(server, "POST", f"/api/v1/incidents/{first}/resolve")
    fire(server)
    again = [i["id"] for i in server.incidents(status="open")]
    assert len(again) == 1, again
    assert again[0] != first
    return int(again[0])


def test_run_from_the_incident_page_run_again_history_and_cancel(
    teleops_server: Callable[..., TeleopsServer], context: BrowserContext, browser: Browser, shots: Path
) -> None:
    server = teleops_server(local_agent=True, config=CONFIG)
    incident = incident_with_a_fix(server, "echo fixed-it-last-time")
    page = context.new_page()
    sign_in(page, server, "admin")

    # Run a command on the incident's host: the command's page shows its real output and result.
    page.goto(f"{server.url}/ui/incidents/{incident}")
    form = page.locator("#run-command")
    expect(form.locator("h2")).to_have_text("Run a command on localhost")
    form.get_by_label("Command", exact=True).fill("echo hello from the web page")
    form.get_by_role("button", name="Run").click()
    expect(page).to_have_url(re.compile(r"/ui/commands/\d+$"))
    expect(page.locator("#command-status")).to_have_text("succeeded", timeout=RUN_WAIT_MS)
    expect(page.locator("#command-output")).to_have_text("hello from the web page\n")
    expect(page.locator("#command-exit")).to_have_text("exit 0")
    expect(page.locator(".facts")).to_contain_text(f"#{incident}")
    page.screenshot(path=str(shots / "command.png"), full_page=True)
    ran = int(page.url.rsplit("/", 1)[1])
    detail = api(server, "GET", f"/api/v1/commands/{ran}")
    assert (detail["requester"], detail["incident_id"], detail["argv"]) == (
        "admin", incident, ["echo", "hello", "from", "the", "web", "page"],
    )  # fmt: skip

    # Run again: a preview first, and nothing runs until "Run it".
    before = len(commands_in_db(server))
    page.goto(f"{server.url}/ui/incidents/{incident}")
    page.locator("#last-time").get_by_role("link", name="Run again: echo fixed-it-last-time").click()
    confirm = page.locator("#run-again")
    expect(confirm.locator(".command-line")).to_have_text("$ echo fixed-it-last-time")
    expect(confirm.locator("dd").first).to_have_text("localhost")
    page.screenshot(path=str(shots / "run-again-confirm.png"), full_page=True)
    assert len(commands_in_db(server)) == before, "the preview ran something"
    sent: dict[str, str | float | bool] = {
        n: confirm.locator(f"input[name='{n}']").input_value() for n in ("csrf_token", "nonce")
    }
    action = confirm.locator("form").get_attribute("action")
    confirm.get_by_role("button", name="Run it").click()
    expect(page).to_have_url(re.compile(r"/ui/commands/\d+$"))
    expect(page.locator("#command-output")).to_have_text("fixed-it-last-time\n", timeout=RUN_WAIT_MS)
    assert len(commands_in_db(server)) == before + 1
    # The same preview confirms once: its form sent again (a double click, a replay) runs nothing.
    again = page.request.post(f"{server.url}{action}", form=sent, max_redirects=0)
    assert again.status == 409, again.text()
    assert "this preview was already confirmed" in again.text()
    assert len(commands_in_db(server)) == before + 1

    # A long command is cancelled from its page; it ends `killed`.
    page.goto(f"{server.url}/ui/incidents/{incident}")
    page.get_by_label("Command", exact=True).fill("sleep 30")
    page.get_by_role("button", name="Run").click()
    expect(page.locator("#command-status")).to_have_text("running")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#command-status")).to_have_text("killed", timeout=RUN_WAIT_MS)
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)

    # The history, newest first, filtered by status, host and person.
    page.get_by_role("link", name="Commands", exact=True).click()
    rows = page.locator("table.commands tbody tr")
    expect(rows).to_have_count(4)  # the first fix (API), the web run, the Run again, the sleep
    expect(rows.first).to_contain_text("sleep 30")
    page.screenshot(path=str(shots / "commands.png"), full_page=True)
    page.get_by_label("Status").select_option("killed")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("sleep 30")
    page.goto(f"{server.url}/ui/commands?host=web-1")
    expect(page.locator(".empty")).to_have_text("No commands you may read match.")
    page.goto(f"{server.url}/ui/commands?host=localhost&person=admin&status=succeeded")
    expect(rows).to_have_count(3)
    response = page.goto(f"{server.url}/ui/commands?status=exploded")
    assert response is not None
    assert response.status == 400
    expect(page.get_by_role("alert")).to_contain_text("Unknown status 'exploded'")

    # A form without this session's CSRF token runs nothing.
    count = len(commands_in_db(server))
    refused = page.request.post(f"{server.url}/ui/commands", form={"host": "localhost", "command": "echo x"})
    assert refused.status == 403, refused.text()
    assert "stale or came from another site" in refused.text()
    assert len(commands_in_db(server)) == count

    # On a 390 px phone: the pages fit without sideways scrolling.
    phone = browser.new_context(viewport=PHONE, is_mobile=True)
    phone.set_default_timeout(WAIT_MS)
    try:
        small = phone.new_page()
        sign_in(small, server, "admin")
        for path in ("/ui/commands", f"/ui/commands/{ran}", f"/ui/incidents/{incident}"):
            small.goto(f"{server.url}{path}")
            width = small.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{path} is {width}px wide on a {PHONE['width']}px phone"
        small.goto(f"{server.url}/ui/commands")
        small.screenshot(path=str(shots / "commands-phone.png"), full_page=True)
    finally:
        phone.close()


def test_policy_refusals_step_up_and_the_read_rule(
    teleops_server: Callable[..., TeleopsServer], browser: Browser
) -> None:
    server = teleops_server(local_agent=True, config=CONFIG)
    incident = incident_with_a_fix(server, "date")  # admin's fix: not among olga's diagnostics
    admins = run_by_api(server, "echo only-for-who-may-read-it")

    def new_page() -> Page:
        context = browser.new_context()
        context.set_default_timeout(WAIT_MS)
        return context.new_page()

    # olga may read the fix (her rules cover every host) and press Run again, but her policy refuses `date`:
    # the page says why, and nothing runs (the refusal is recorded as a `denied` command that was never sent).
    olga = new_page()
    sign_in(olga, server, "olga")
    olga.goto(f"{server.url}/ui/incidents/{incident}")
    olga.get_by_role("link", name="Run again: date").click()
    olga.get_by_role("button", name="Run it").click()
    expect(olga.get_by_role("alert")).to_contain_text('Command refused: role "operator" may not run "date"')
    mine = [c for c in commands_in_db(server) if c[1] == "olga"]
    assert [(c[2], c[3], c[4]) for c in mine] == [("denied", ["date"], None)], mine
    olga.get_by_role("link", name=re.compile(r"command \d+")).click()
    expect(olga.locator("#command-status")).to_have_text("denied")
    olga.context.close()

    # otto's policy covers web-* only: no Run form on localhost's incident, no admin command in his history or
    # fleet, and the server refuses the command's page, its live output and its Cancel.
    otto = new_page()
    sign_in(otto, server, "otto")
    otto.goto(f"{server.url}/ui/incidents/{incident}")
    expect(otto.locator("h1")).to_contain_text("DiskFull")
    expect(otto.locator("#run-command")).to_have_count(0)
    expect(otto.locator("#last-time .run-again")).to_have_count(0)  # the fix is not his to read
    otto.goto(f"{server.url}/ui/commands")
    expect(otto.locator(".empty")).to_have_text("No commands you may read match.")
    otto.goto(f"{server.url}/ui/fleet")
    expect(otto.locator("#agent-localhost")).to_contain_text("None you may read.")
    response = otto.goto(f"{server.url}/ui/commands/{admins['id']}")
    assert response is not None
    assert response.status == 404
    expect(otto.locator("main")).to_contain_text("is not yours to read")
    expect(otto.locator("main")).not_to_contain_text("only-for-who-may-read-it")
    live = otto.request.get(f"{server.url}/ui/commands/{admins['id']}/live")
    assert live.status == 404
    assert "only-for-who-may-read-it" not in live.text()
    token = otto.locator("form.logout input[name='csrf_token']").input_value()
    cancel = otto.request.post(f"{server.url}/ui/commands/{admins['id']}/cancel", form={"csrf_token": token})
    assert cancel.status == 404
    otto.context.close()

    # sam's rule needs a one-time code: the page asks for it and runs the command once it is right.
    # (Enrolled after signing in, so the sign-in's own code does not elevate him already.)
    sam = new_page()
    sign_in(sam, server, "sam")
    secret = pyotp.parse_uri(server.cli("user", "2fa-enroll", "sam").stdout.strip().splitlines()[-1]).secret
    sam.goto(f"{server.url}/ui/incidents/{incident}")
    sam.get_by_label("Command", exact=True).fill("echo stepped up")
    sam.get_by_role("button", name="Run").click()
    expect(sam.locator("h1")).to_have_text("A one-time code is needed")
    assert not [c for c in commands_in_db(server) if c[1] == "sam"], "ran without a code"
    sam.get_by_label("One-time code").fill(pyotp.TOTP(secret).now())
    sam.get_by_role("button", name="Run with this code").click()
    expect(sam).to_have_url(re.compile(r"/ui/commands/\d+$"))
    expect(sam.locator("#command-output")).to_have_text("stepped up\n", timeout=RUN_WAIT_MS)
    sam.context.close()
