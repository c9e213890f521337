"""The front door's route table (server/front_door.py): every route the app serves has a door, each door names
the credential its routes really need, and what a caller can send before authenticating is small."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from pydantic import ValidationError
from starlette.routing import Mount, Route
from tests.settings import settings_with

from teleops.domain.duration import Duration
from teleops.server.app import create_app
from teleops.server.front_door import BODY_TOKEN_CAP, DOORS, Credential, door_for

KiB = 1024


def concrete(template: str) -> str:
    """A path the template matches: every `{param}` becomes 1."""
    return re.sub(r"\{[^}]+\}", "1", template)


def served_paths(tmp_path: Path) -> list[tuple[str, object]]:
    """Every route of the real app as (a concrete path, the route), through the routers it includes."""
    app = create_app(settings_with(data_dir=tmp_path / "data", local_agent={"enabled": False}))
    paths: list[tuple[str, object]] = []

    def walk(routes: Iterable[object], outer: str) -> None:
        """`outer`: the prefixes of the routers that include these routes (a route's path has its own)."""
        for route in routes:
            included = getattr(route, "original_router", None)  # FastAPI's wrapper of an included APIRouter
            if included is not None:
                for child in included.routes:
                    nested = getattr(child, "original_router", None)
                    walk([child], outer + included.prefix if nested is not None else outer)
            elif isinstance(route, Mount):
                paths.append((outer + route.path + "/anything.css", route))
            elif isinstance(route, (APIRoute, Route, APIWebSocketRoute)):
                paths.append((outer + concrete(route.path), route))

    walk(app.routes, "")
    return paths


def test_every_route_the_app_serves_has_a_door(tmp_path: Path) -> None:
    paths = served_paths(tmp_path)
    assert {"/api/v1/commands", "/ui/login", "/healthz", "/ui/static/anything.css"} <= {p for p, _r in paths}
    missing = [path for path, _route in paths if door_for(path) is None]
    assert not missing, f"routes without a row in front_door.DOORS (they would answer 404): {missing}"


def test_every_api_route_that_needs_a_token_is_behind_the_api_door(tmp_path: Path) -> None:
    checked = 0
    for path, route in served_paths(tmp_path):
        if not isinstance(route, APIRoute) or not path.startswith("/api/v1/"):
            continue
        needs_token = any(d.call.__name__ == "require_api_caller" for d in route.dependant.dependencies if d.call)
        door = door_for(path)
        assert door is not None
        if needs_token:
            assert door.credential is Credential.API, f"{path} needs an API token but its door is {door}"
            checked += 1
    assert checked >= 10, "the walk found too few API routes: it no longer sees the app's routes"


@pytest.mark.parametrize(
    ("path", "credential"),
    [
        ("/api/v1/alerts/alertmanager", Credential.INGEST),
        ("/api/v1/alerts/no-such-source", Credential.INGEST),  # the door answers 404 itself, unread
        ("/api/v1/chat/telegram/webhook", Credential.TELEGRAM_SECRET),
        ("/api/v1/chat/slack/events", Credential.SLACK_SIGNATURE),
        ("/api/v1/commands", Credential.API),
        ("/api/v1/commands/batch", Credential.API),
        ("/api/v1/incidents/7/snooze", Credential.API),
        ("/api/v1/chat/telegram/webhook/extra", Credential.API),  # not the webhook: an unknown API path
        ("/ui/login", Credential.LOGIN_FORM),
        ("/ui/logout", Credential.WEB_SESSION),
        ("/ui/incidents/7/ack", Credential.WEB_SESSION),
        ("/ui/static/app.css", Credential.PUBLIC),
        ("/healthz", Credential.PUBLIC),
    ],
)
def test_the_door_for_a_path(path: str, credential: Credential) -> None:
    door = door_for(path)
    assert door is not None
    assert door.credential is credential


@pytest.mark.parametrize("path", ["/nope", "/healthz/", "/healthzz", "/api", "/static/other", "/uix", ""])
def test_unknown_paths_have_no_door(path: str) -> None:
    assert door_for(path) is None


def test_what_can_be_sent_before_authenticating_is_bounded() -> None:
    # Doors that check nothing before the body, or whose credential is inside it, cap it small.
    unauthenticated = {Credential.PUBLIC: 0, Credential.LOGIN_FORM: 4 * KiB, Credential.SLACK_SIGNATURE: 128 * KiB}
    for door in DOORS:
        bound = unauthenticated.get(door.credential)
        if bound is not None:
            assert door.body_cap is not None, door
            assert door.body_cap <= bound, door
    assert 4 * KiB >= BODY_TOKEN_CAP  # what is read of a body to find its routing_key


def test_specific_rows_come_before_the_prefixes_that_contain_them() -> None:
    for i, door in enumerate(DOORS):
        for earlier in DOORS[:i]:
            assert not (earlier.prefix and door.path.startswith(earlier.path)), f"{door.path} is shadowed by {earlier}"


@pytest.mark.parametrize("key", ["header_timeout", "body_timeout", "keepalive_timeout"])
def test_a_front_door_timeout_out_of_range_is_refused_naming_the_key(tmp_path: Path, key: str) -> None:
    for value in ("0s", "2h"):
        with pytest.raises(ValidationError, match=key):
            settings_with(data_dir=tmp_path, server={key: value})
    assert getattr(settings_with(data_dir=tmp_path, server={key: "7s"}).server, key) == Duration("7s")


def test_max_connections_has_a_floor(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="max_connections"):
        settings_with(data_dir=tmp_path, server={"max_connections": 1})
