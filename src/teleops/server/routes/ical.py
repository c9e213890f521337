"""Read-only iCal feeds: `/ical/rotation/{name}.ics?token=…` and `/ical/user/{name}.ics?token=…`.

The token is the feed's secret (made on the On call page, store/calendar_feeds.py): a calendar app cannot sign in, so
the URL is the credential. A wrong, revoked or other feed's token answers the same bare 404 as a feed that does not
exist, so the answer reveals nothing. The feed covers the past week and the next FEED_WEEKS weeks, overrides made in
the web UI included. Request URLs are not logged (the access log is off, cli/serve.py), so the secret stays out of
logs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from teleops.oncall.calendar_feed import calendar_text, person_events, rotation_events
from teleops.server.auth import services_of
from teleops.store.calendar_feeds import CalendarFeed, FeedKind, feed_for_secret
from teleops.store.database import StorageUnavailable
from teleops.store.database import Transaction as Connection

__all__ = ["FEED_WEEKS", "router"]

FEED_WEEKS = 8
_PAST = timedelta(days=7)
_MAX_TOKEN = 128

router = APIRouter(prefix="/ical", include_in_schema=False)


def _not_found() -> HTTPException:
    return HTTPException(status_code=404, detail="Not Found")


async def _feed(request: Request, kind: FeedKind, name: str, token: str) -> Response:
    services = services_of(request)
    directory = services.oncall.directory
    now = services.clock()

    def read(conn: Connection) -> CalendarFeed | None:
        found = feed_for_secret(conn, kind, name, token)
        if found is not None:
            directory.load_overrides(conn, now)
        return found

    try:
        # An overlong token is simply not one (the same 404, never a 422 that tells it apart).
        found = await services.db.read(read) if token and len(token) <= _MAX_TOKEN else None
    except StorageUnavailable as exc:
        raise HTTPException(status_code=503, detail="the database is unavailable; retry in a minute") from exc
    if found is None:
        raise _not_found()
    start, end = now - _PAST, now + timedelta(weeks=FEED_WEEKS)
    if kind is FeedKind.ROTATION:
        rotation = directory.rotations.get(name)
        if rotation is None:
            raise _not_found()
        title, events = f"On call: {name}", rotation_events(rotation, start, end)
    else:
        title, events = f"On call: {name}", person_events(directory.rotations, name, start, end)
    return Response(
        calendar_text(title, events, now=now),
        media_type="text/calendar; charset=utf-8",
        headers={"Cache-Control": "private, max-age=300", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"},
    )


@router.get("/rotation/{name}.ics")
async def rotation_feed(request: Request, name: str, token: Annotated[str, Query()] = "") -> Response:
    return await _feed(request, FeedKind.ROTATION, name, token)


@router.get("/user/{name}.ics")
async def user_feed(request: Request, name: str, token: Annotated[str, Query()] = "") -> Response:
    return await _feed(request, FeedKind.USER, name, token)
