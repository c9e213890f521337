"""A newcomer's first session, all in the browser (issue #24, "done when"): against a real `teleops serve` with its
embedded agent and the built-in policy, the first admin signs in, enrols an authenticator from the QR page, fires
the test alert, answers it with a command on its host, reads the timeline, sees the fleet, the rotation and the
audit log, and creates a token for Alertmanager that then really ingests.

The only addition to the default config is a one-person rotation (the next step docs/oncall.md gives), so the
On call page has someone to name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import BrowserContext, expect

from tests.integration.servers import TeleopsServer
from tests.integration.test_web_people import post_alert
from tests.integration.test_web_signin import (
    browser,
    context,
    enrol,
    next_code,
    password_of,
    playwright,
    shots,
    submit_password,
)

__all__ = ["browser", "context", "playwright", "shots"]  # the shared browser fixtures

RUN_WAIT_MS = 30_000
CONFIG: dict[str, Any] = {
    "policy": {},  # the built-in policy, not the test fixtures' (admins need a code before a change)
    "oncall": {
        "rotations": [{"name": "primary", "members": ["admin"], "shift": "7d", "handoff": "Mon 09:00"}],
        "escalation": [{"after": "0m", "notify": "rotation:primary"}],
    },
}


def test_a_newcomer_does_the_whole_loop_in_the_browser(
    teleops_server: Callable[..., TeleopsServer], context: BrowserContext, shots: Path
) -> None:
    server = teleops_server(local_agent=True, config=CONFIG)
    page = context.new_page()
    nav = page.locator(".topbar nav")

    # Sign in; the built-in policy lets admins change things, so they must enrol a second factor first.
    submit_password(page, server, "admin", password_of(server, "admin"))
    expect(page).to_have_url(f"{server.url}/ui/account/2fa")
    totp = enrol(page)

    # Fire the test alert: it opens its incident, about the embedded agent's host.
    page.goto(f"{server.url}/ui/")
    expect(page.locator(".empty")).to_contain_text("Fire a test alert")
    page.get_by_role("button", name="Fire a test alert").click()
    expect(page).to_have_url(re.compile(r"/ui/incidents/\d+$"))
    incident = int(page.url.rsplit("/", 1)[1])
    expect(page.locator("main")).to_contain_text("Disk / is 97% full")

    # Answer it: a command on its host, through the policy (df is read-only: no code asked).
    form = page.locator("#run-command")
    expect(form.locator("h2")).to_have_text("Run a command on localhost")
    form.get_by_label("Command", exact=True).fill("df -h /")
    form.get_by_role("button", name="Run").click()
    expect(page).to_have_url(re.compile(r"/ui/commands/\d+$"))
    expect(page.locator("#command-status")).to_have_text("succeeded", timeout=RUN_WAIT_MS)
    expect(page.locator("#command-output")).to_contain_text("Filesystem")

    # Read the timeline: the alert and the command are the incident's scenario.
    page.goto(f"{server.url}/ui/incidents/{incident}")
    timeline = page.locator(".timeline")
    expect(timeline).to_contain_text("df -h /")
    expect(timeline).to_contain_text("admin")

    # The fleet: the embedded agent, online.
    nav.get_by_role("link", name="Fleet").click()
    agent = page.locator("#agent-localhost")
    expect(agent.locator(".agent-state")).to_have_text("online")
    expect(agent.locator(".recent-commands")).to_contain_text("$ df -h /")

    # The rotation: admin is on call now.
    nav.get_by_role("link", name="On call").click()
    expect(page.locator("[data-rotation='primary']")).to_contain_text("admin")

    # The audit log: the chain is intact and holds the test alert and the command.
    nav.get_by_role("link", name="Audit").click()
    expect(page.locator("#chain .chain-state")).to_have_text("intact")
    expect(page.locator("table.audit tbody")).to_contain_text("alert.test_fired")

    # A token for Alertmanager, with the admin's code: shown once, and it ingests.
    nav.get_by_role("link", name="Tokens").click()
    create = page.locator("#create-token")
    create.get_by_label("For").select_option("ingest")
    create.get_by_label("Name", exact=True).fill("alertmanager")
    create.get_by_label("Your authenticator code", exact=True).fill(next_code(totp))
    create.get_by_role("button", name="Create token").click()
    expect(page.locator("h1")).to_have_text("Token created")
    secret = page.get_by_label("Secret", exact=True).input_value()
    expect(page.locator("#alertmanager-snippet")).to_contain_text(f"credentials: {secret}")
    assert post_alert(server, secret) == 200
