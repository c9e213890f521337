"""The Fleet page in a real Chromium against a real `teleops serve`, its local agent and a second real
`teleops agent` (issue #24, part 7): every agent with its online state, last seen, version, labels and the host
names it answers for, and each host's latest commands as far as the reader may read them. Screenshot `fleet.png`
goes to $TELEOPS_SCREENSHOTS when set.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, expect

from tests.integration.servers import TeleopsServer, agent_online, eventually, start_agent, stop_process
from tests.integration.test_web_commands import CONFIG, api, run_by_api, sign_in
from tests.integration.test_web_signin import browser, context, playwright, shots
from tests.integration.test_web_ui import PHONE, WAIT_MS

__all__ = ["browser", "context", "playwright", "shots"]  # the shared browser fixtures


def test_fleet_shows_agents_and_only_the_commands_each_reader_may_read(
    teleops_server: Callable[..., TeleopsServer], context: BrowserContext, browser: Browser, shots: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    server = teleops_server(local_agent=True, config=CONFIG)
    web = start_agent(server, "web-1", tmp_path / "web-1", allow=("uptime",), labels=("host=www", "role=frontend"))
    try:
        eventually(lambda: agent_online(server, "web-1", web), what="agent web-1 online")
        on_localhost = run_by_api(server, "echo on the controller own machine")
        created = api(server, "POST", "/api/v1/commands", json={"host": "www", "command": "uptime"})
        on_web = api(server, "GET", f"/api/v1/commands/{created['id']}", params={"wait": 30})
        assert on_web["status"] == "succeeded", on_web

        page = context.new_page()
        sign_in(page, server, "admin")
        page.get_by_role("link", name="Fleet").click()
        expect(page.locator(".heading .hint")).to_have_text("2 of 2 agents online")
        web_card, local_card = page.locator("#agent-web-1"), page.locator("#agent-localhost")
        expect(web_card.locator(".agent-state")).to_have_text("online")
        # Its name, the hostname it announced first (bound) and its bound `host` label.
        expect(web_card.locator(".answers")).to_have_text(f"web-1, {socket.gethostname()}, www")
        expect(web_card.locator(".labels")).to_contain_text("role=frontend")
        expect(web_card.locator(".facts")).to_contain_text("0.1.0")
        expect(web_card.locator(".facts")).to_contain_text("ago")
        expect(web_card.locator(".recent-commands")).to_contain_text("$ uptime")
        expect(local_card.locator(".recent-commands")).to_contain_text("$ echo on the controller own machine")
        page.screenshot(path=str(shots / "fleet.png"), full_page=True)
        local_card.get_by_role("link", name=f"#{on_localhost['id']}").click()
        expect(page.locator("#command-output")).to_have_text("on the controller own machine\n")

        # otto's policy covers web-* only: he sees both agents, web-1's command, and nothing of localhost's.
        otto = browser.new_context()
        otto.set_default_timeout(WAIT_MS)
        try:
            view = otto.new_page()
            sign_in(view, server, "otto")
            view.goto(f"{server.url}/ui/fleet")
            expect(view.locator("#agent-web-1 .recent-commands")).to_contain_text("$ uptime")
            expect(view.locator("#agent-localhost")).to_contain_text("None you may read.")
            expect(view.locator("main")).not_to_contain_text("controller own machine")
        finally:
            otto.close()

        # An agent that goes away shows offline, with when it was last seen.
        stop_process(web)
        eventually(lambda: not agent_online(server, "web-1"), what="agent web-1 offline")
        page.goto(f"{server.url}/ui/fleet")
        expect(web_card.locator(".agent-state")).to_have_text("offline")
        expect(page.locator(".heading .hint")).to_have_text("1 of 2 agents online")

        phone = browser.new_context(viewport=PHONE, is_mobile=True)
        phone.set_default_timeout(WAIT_MS)
        try:
            small = phone.new_page()
            sign_in(small, server, "admin")
            small.goto(f"{server.url}/ui/fleet")
            width = small.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"the fleet page is {width}px wide on a {PHONE['width']}px phone"
            small.screenshot(path=str(shots / "fleet-phone.png"), full_page=True)
        finally:
            phone.close()
    finally:
        stop_process(web)
