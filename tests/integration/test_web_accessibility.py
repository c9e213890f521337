"""Every web UI page is accessible (issue #24: "responsive, accessible (labels, contrast, keyboard)").

One real `teleops serve` with its local agent, a rotation, an incident and a finished command; an admin signed in
through Debian's Chromium visits every page and, on each, checks from the live DOM and computed styles
(tests/integration/a11y_audit.js):

- one <h1>, <html lang>, a <title>;
- every visible input, select, textarea and button has an accessible name (label, aria-label(ledby), title, or a
  button's text); every image or drawing that is not decorative is named (the 2FA QR code);
- WCAG contrast of at least 4.5:1 (3:1 for large text) for body text, links, buttons and hints against the
  background really behind them;
- from the top of the page, Tab reaches the main navigation's first link and a control of the page's main form,
  and every element Tab lands on shows a focus style (an outline or a box-shadow).

The sign-in page is checked signed out. Last, faults planted in a live page (an unlabelled input, an unnamed
drawing, a faint hint, a second <h1>, a nav link without outline) must each be reported, so a pass means something.
The screenshot `keyboard-focus.png` (the focus ring on the incident filters) goes to $TELEOPS_SCREENSHOTS when set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.integration.servers import TeleopsServer
from tests.integration.test_web_commands import run_by_api
from tests.integration.test_web_signin import browser, context, password_of, playwright, shots, submit_password

__all__ = ["browser", "context", "playwright", "shots"]  # the shared browser fixtures

AUDIT_JS = (Path(__file__).parent / "a11y_audit.js").read_text()
CONFIG: dict[str, Any] = {
    "twofactor": {"web_signin": "enrolled"},  # the admin signs in with a password; /ui/account/2fa shows the QR
    "oncall": {
        "rotations": [{"name": "primary", "members": ["admin"], "shift": "7d", "handoff": "Mon 09:00"}],
        "escalation": [{"after": "0m", "notify": "rotation:primary"}],
    },
}
MAX_TABS = 60
SEVERITIES = ("critical", "error", "warning", "info", "unknown")
# What the focus report reads after each Tab: the focused element, whether the browser treats it as
# keyboard-focused, and its focus styles.
FOCUSED_JS = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const style = getComputedStyle(el);
  return {
    id: el.dataset.a11yMark || "",
    what: el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + " " + (el.textContent || el.name || "").trim().slice(0, 30),
    focusVisible: el.matches(":focus-visible"),
    outline: style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0,
    shadow: style.boxShadow !== "none",
  };
}"""
# Marks the nav's first link and the main form's controls, so the Tab walk knows when it has reached them.
MARK_JS = """([nav, target]) => {
  const first = nav ? document.querySelector(nav) : null;
  if (first) first.dataset.a11yMark = "nav";
  const targets = Array.from(document.querySelectorAll(target)).filter(
    (el) => el.type !== "hidden" && !el.disabled && el.getClientRects().length > 0);
  targets.forEach((el) => { if (!el.dataset.a11yMark) el.dataset.a11yMark = "target"; });
  return [Boolean(first), targets.length];
}"""


@dataclass(frozen=True)
class Visit:
    """A page, its stable name (for messages and screenshots), and the controls of its main form (CSS)."""

    name: str
    path: str
    main_form: str
    screenshot: str | None = None  # a file name in `shots` for the moment Tab reaches the main form


def audit(page: Page, visit: Visit, shots: Path, *, signed_in: bool = True) -> None:
    report: dict[str, Any] = page.evaluate(AUDIT_JS)
    where = f"{visit.name} ({visit.path})"
    assert report["lang"], f"{where}: <html> has no lang"
    assert report["title"], f"{where}: no <title>"
    assert len(report["h1"]) == 1, f"{where}: {len(report['h1'])} <h1> ({report['h1']}); a page has exactly one"
    assert not report["unnamed"], f"{where}: controls without an accessible name: {report['unnamed']}"
    assert not report["unnamedImages"], f"{where}: images without a text alternative: {report['unnamedImages']}"
    assert not report["lowContrast"], f"{where}: text below WCAG contrast:\n" + "\n".join(report["lowContrast"])
    assert {"body text", "link"} <= set(report["checked"]), f"{where}: contrast checked only {report['checked']}"
    keyboard(page, visit, shots, signed_in=signed_in)


def keyboard(page: Page, visit: Visit, shots: Path, *, signed_in: bool) -> None:
    """From the top of the page, Tab reaches the nav's first link and the main form, each stop visibly focused."""
    where = f"{visit.name} ({visit.path})"
    nav = ".topbar nav a" if signed_in else None
    has_nav, targets = page.evaluate(MARK_JS, [nav, visit.main_form])
    assert has_nav or not signed_in, f"{where}: no main navigation"
    assert targets, f"{where}: nothing matches the main form's controls {visit.main_form!r}"
    # Start from the top: focus nothing (an autofocus field keeps its place, as a keyboard user would find it).
    page.evaluate("() => { if (!document.activeElement.autofocus) document.activeElement.blur(); }")
    reached: set[str] = set()
    unstyled: list[str] = []
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED_JS)
        if focused is None:
            continue
        if not (focused["focusVisible"] and (focused["outline"] or focused["shadow"])):
            unstyled.append(focused["what"])
        if focused["id"]:
            reached.add(focused["id"])
        if focused["id"] == "target" and visit.screenshot:
            page.screenshot(path=str(shots / visit.screenshot))
        if reached >= ({"nav", "target"} if signed_in else {"target"}):
            break
    assert "nav" in reached or not signed_in, f"{where}: {MAX_TABS} Tabs never reached the navigation"
    assert "target" in reached, f"{where}: {MAX_TABS} Tabs never reached {visit.main_form!r}"
    assert not unstyled, f"{where}: focused without a visible focus style: {unstyled}"


# Faults planted in a live page, each of which the audit must report (so a passing audit means something).
PLANT_JS = """() => {
  const input = document.createElement("input");
  input.name = "planted";
  document.querySelector("main").append(input);
  const drawing = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  drawing.setAttribute("width", "20");
  drawing.setAttribute("height", "20");
  drawing.id = "planted-svg";
  document.querySelector("main").append(drawing);
  const hint = document.createElement("p");
  hint.className = "hint";
  hint.textContent = "planted faint hint";
  hint.style.color = "#b0b6c2";
  document.querySelector("main").append(hint);
  const second = document.createElement("h1");
  second.textContent = "planted heading";
  document.querySelector("main").append(second);
  document.querySelector(".topbar nav a").style.outline = "none";
}"""


def the_audit_catches_each_fault(page: Page, server: TeleopsServer, shots: Path) -> None:
    visit = Visit("tokens", "/ui/tokens", "#create-token :is(input, select, button)")
    page.goto(f"{server.url}{visit.path}")
    page.evaluate(PLANT_JS)
    report: dict[str, Any] = page.evaluate(AUDIT_JS)
    assert len(report["h1"]) == 2, report["h1"]
    assert any("[name=planted]" in name for name in report["unnamed"]), report["unnamed"]
    assert any("#planted-svg" in name for name in report["unnamedImages"]), report["unnamedImages"]
    assert any("planted faint hint" in line for line in report["lowContrast"]), report["lowContrast"]
    with pytest.raises(AssertionError, match="without a visible focus style"):
        keyboard(page, visit, shots, signed_in=True)


def test_every_page_has_headings_names_contrast_and_keyboard_focus(
    teleops_server: Callable[..., TeleopsServer], context: BrowserContext, shots: Path
) -> None:
    server = teleops_server(local_agent=True, config=CONFIG)
    for severity in SEVERITIES:  # every severity badge is on the incident list, for the contrast check
        alert = {"summary": f"Disk / is full ({severity})", "host": "localhost", "check": f"Disk-{severity}"}
        alert["severity"] = severity
        url = f"{server.url}/api/v1/alerts/generic"
        posted = httpx.post(url, json=alert, headers=server.ingest_headers, timeout=10)
        assert posted.status_code < 300, posted.text
    incident = server.incidents()[0]["id"]
    command = run_by_api(server, "uptime", incident)["id"]

    page = context.new_page()
    submit_password(page, server, "admin", password_of(server, "admin"))
    expect(page).to_have_url(f"{server.url}/ui/")
    visits = [
        Visit("incidents", "/ui/", "form.incident-filters :is(input, select, button)", "keyboard-focus.png"),
        Visit("incident", f"/ui/incidents/{incident}", "#run-command :is(input, button)"),
        Visit("console", "/ui/console", "#composer :is(input, button)"),
        Visit("commands", "/ui/commands", "main form[role=search] :is(input, select, button)"),
        Visit("command", f"/ui/commands/{command}", "main a[href]"),
        Visit("fleet", "/ui/fleet", "main a[href]"),
        Visit("oncall", "/ui/oncall", ".override-form :is(input, select, button)"),
        Visit("account-2fa", "/ui/account/2fa", "form[action='/ui/account/2fa'] :is(input, button)"),
        Visit("audit", "/ui/audit", "main form[role=search] :is(input, button)"),
        Visit("people", "/ui/people", "#add-person :is(input, select, button)"),
        Visit("person", "/ui/people/admin", "main :is(form, .crumbs) :is(a, input, select, button)"),
        Visit("tokens", "/ui/tokens", "#create-token :is(input, select, button)"),
    ]
    for visit in visits:
        response = page.goto(f"{server.url}{visit.path}")
        assert response is not None, visit.path
        assert response.status == 200, f"{visit.path}: HTTP {response.status}"
        if visit.name == "account-2fa":
            expect(page.locator(".qr svg")).to_be_visible()  # the QR code is there, and audited
        if visit.name == "console":
            expect(page.locator("#console-state")).not_to_have_text("Connecting…")
        audit(page, visit, shots)

    the_audit_catches_each_fault(page, server, shots)

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_label("User")).to_be_visible()
    audit(page, Visit("login", "/ui/login", "form[action='/ui/login'] :is(input, button)"), shots, signed_in=False)
