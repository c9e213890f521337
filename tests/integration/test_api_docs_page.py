"""`/docs` renders in a real Chromium against a real `teleops serve`, from the vendored Swagger UI alone.

Swagger UI 3 (the old PyPI bundle) showed "Unable to render this definition" for FastAPI's OpenAPI 3.1;
the vendored Swagger UI 5 (src/teleops/server/swagger_ui/) must list every operation of /openapi.json.
Every request to anything but the test server is aborted and recorded: the page must not need the internet.

Chromium is Debian's /usr/bin/chromium driven by Playwright (never `playwright install`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Response,
    Route,
    expect,
    sync_playwright,
)

from tests.integration.servers import TeleopsServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 20_000
ASSETS = "/static/swagger-ui/"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as runner:
        browser = runner.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class PageTraffic:
    """What the page asked for and said: responses by path, aborted foreign requests, console errors."""

    origin: str
    foreign: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def route(self, route: Route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" == self.origin:
            route.continue_()
        else:
            self.foreign.append(url)
            route.abort("blockedbyclient")

    def response(self, response: Response) -> None:
        self.statuses[urlsplit(response.url).path] = response.status

    def request_failed(self, request: Request) -> None:
        if request.url not in self.foreign:
            self.errors.append(f"request failed: {request.url} ({request.failure})")

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def page_error(self, error: Exception) -> None:
        self.errors.append(f"page error: {error}")


@pytest.fixture
def server(teleops_server: Callable[..., TeleopsServer]) -> TeleopsServer:
    return teleops_server()


@pytest.fixture
def opened(browser: Browser, server: TeleopsServer) -> Iterator[tuple[Page, PageTraffic]]:
    with docs_page(browser, server.url) as (page, traffic):
        yield page, traffic


def _operations(schema: dict[str, object]) -> set[tuple[str, str]]:
    """(METHOD, path) for every operation of an OpenAPI document."""
    paths = schema["paths"]
    assert isinstance(paths, dict)
    return {(method.upper(), path) for path, item in paths.items() for method in item if method.lower() in HTTP_METHODS}


def _blocks(schema: dict[str, object]) -> int:
    """How many `.opblock`s Swagger UI draws: one per operation per tag (untagged ones go under "default")."""
    paths = schema["paths"]
    assert isinstance(paths, dict)
    return sum(
        max(1, len(operation.get("tags", [])))
        for item in paths.values()
        for method, operation in item.items()
        if method.lower() in HTTP_METHODS
    )


def test_docs_page_renders_every_operation_without_the_internet(
    server: TeleopsServer, opened: tuple[Page, PageTraffic]
) -> None:
    check_docs_page(server.url, *opened)


@contextmanager
def docs_page(browser: Browser, url: str) -> Iterator[tuple[Page, PageTraffic]]:
    """A page whose requests to anything but `url`'s origin are aborted and recorded (as the fixtures above)."""
    traffic = PageTraffic(origin=url)
    context: BrowserContext = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    context.route("**/*", traffic.route)  # before any page exists: nothing gets out unseen
    page = context.new_page()
    page.on("response", traffic.response)
    page.on("requestfailed", traffic.request_failed)
    page.on("console", traffic.console)
    page.on("pageerror", traffic.page_error)
    try:
        yield page, traffic
    finally:
        context.close()


def check_docs_page(url: str, page: Page, traffic: PageTraffic) -> None:
    """`/docs` of the server at `url` lists every operation of its /openapi.json, offline, with no error."""
    schema: dict[str, object] = httpx.get(f"{url}/openapi.json", timeout=10).json()
    assert str(schema["openapi"]).startswith("3.1")  # what Swagger UI 3 could not render
    expected = _operations(schema)
    expected_paths = {path for _, path in expected}
    assert {"/api/v1/alerts/{source}", "/api/v1/incidents", "/api/v1/commands"} <= expected_paths

    page.goto(f"{url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("TeleOps")
    expect(page.locator(".opblock")).to_have_count(_blocks(schema))

    expect(page.get_by_text("Unable to render this definition")).to_have_count(0)
    expect(page.locator(".swagger-ui .errors-wrapper")).to_have_count(0)
    rendered: list[list[str]] = page.eval_on_selector_all(
        ".opblock",
        """blocks => blocks.map(block => [
            block.querySelector('.opblock-summary-method').textContent.trim(),
            block.querySelector('.opblock-summary-path').getAttribute('data-path'),
            block.querySelector('.opblock-summary-path').textContent.replaceAll('\\u200b', '').trim(),
        ])""",
    )
    assert {(method, path) for method, path, _ in rendered} == expected
    assert {text for _, _, text in rendered} == expected_paths  # the visible text, not only the attribute

    # One operation opened: its path parameter and its request body schema (OpenAPI 3.1 JSON Schema) render.
    ingest = page.locator(".opblock").filter(
        has=page.locator('.opblock-summary-path[data-path="/api/v1/alerts/{source}"]')
    )
    ingest.first.locator(".opblock-summary-control").click()
    expect(ingest.first.locator(".parameters")).to_contain_text("source")
    expect(ingest.first.locator(".opblock-section-request-body")).to_be_visible()

    assert traffic.foreign == [], "the docs page tried to reach another host"
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert traffic.statuses.get(ASSETS + asset) == 200, f"{asset}: {traffic.statuses}"
    assert traffic.statuses.get("/openapi.json") == 200
    assert traffic.errors == []

    # The favicon too (Chromium may fetch it after the checks above): every asset the page links is local.
    html = httpx.get(f"{url}/docs", timeout=10).text
    assert "https://" not in html
    assert "http://" not in html
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"):
        assert f'"{ASSETS}{asset}"' in html
        assert httpx.get(f"{url}{ASSETS}{asset}", timeout=10).status_code == 200, asset
