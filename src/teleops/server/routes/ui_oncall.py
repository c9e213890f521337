"""The On call page: who is on call now and next, the week, the escalation chains, overrides and calendar feeds.

Anyone logged in may look. Overrides: admins may add any, a rotation's members may cover it themselves, and remove
overrides that name them or that they made; the server checks every POST (CSRF first, then the rule in
server/oncall_board.py), whatever the page offers. Feeds: a person may make one of their own calendar, a member one
of their rotation's, admins any; the secret URL is shown once, and its maker or an admin can revoke it. Every
change is audited in the same transaction (store/oncall_overrides.py, store/calendar_feeds.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from teleops.oncall.directory import OnCallDirectory
from teleops.server.auth import services_of
from teleops.server.csrf import form_user
from teleops.server.oncall_board import build_board, may_cover, may_remove, parse_form_time
from teleops.server.routes.ui_common import UiUser, render_page, require_ui_user
from teleops.server.routes.ui_notice import SIGNATURE_FIELD, signed_message, verified_message
from teleops.server.schemas import RowId
from teleops.server.services import Services
from teleops.store.calendar_feeds import CalendarFeed, FeedKind, create_feed, feeds, revoke_feed
from teleops.store.database import StorageUnavailable
from teleops.store.database import Transaction as Connection
from teleops.store.oncall_overrides import StoredOverride, add_override, override_by_id, remove_override

__all__ = ["router"]

router = APIRouter()

# An override longer than this is a change of rotation, which belongs in teleops.yaml.
MAX_OVERRIDE = timedelta(days=92)
_UNAVAILABLE = "the database is unavailable, so nothing was read or changed; retry in a minute"


def _directory(services: Services) -> OnCallDirectory:
    return services.oncall.directory


async def _page(
    request: Request,
    user: UiUser,
    *,
    status_code: int = 200,
    error: str | None = None,
    notice: str | None = None,
    feed_url: str | None = None,
    form: dict[str, str] | None = None,
) -> HTMLResponse:
    services = services_of(request)
    directory = _directory(services)
    now = services.clock()

    def read(conn: Connection) -> list[CalendarFeed]:
        directory.load_overrides(conn, now)
        return list(feeds(conn))

    try:
        live_feeds = await services.db.read(read)
    except StorageUnavailable as exc:
        raise HTTPException(status_code=503, detail=_UNAVAILABLE) from exc
    shown_feeds = [f for f in live_feeds if user.is_admin or f.created_by == user.name]
    boards = build_board(directory, now, actor=user.name, admin=user.is_admin)
    configured = {u.name for u in services.settings.users}
    known = sorted(configured | {m for b in boards for m in b.members} | {user.name})
    feed_choices = [f"rotation:{b.name}" for b in boards if user.is_admin or user.name in b.members]
    feed_choices += [f"user:{name}" for name in (known if user.is_admin else [user.name])]
    return render_page(
        request,
        "oncall.html",
        user=user,
        status_code=status_code,
        boards=boards,
        people=known,
        feeds=shown_feeds,
        feed_choices=feed_choices,
        feed_url=feed_url,
        error=error,
        notice=notice,
        form=form or {},
        now=now,
    )


@router.get("/oncall", response_class=HTMLResponse, include_in_schema=False)
async def oncall_page(
    request: Request,
    user: Annotated[UiUser, Depends(require_ui_user)],
    done: Annotated[str | None, Query(max_length=300)] = None,
    sig: Annotated[str | None, Query(alias=SIGNATURE_FIELD, max_length=64)] = None,
) -> HTMLResponse:
    # Only what this server said to this session (routes/ui_notice.py): a crafted link shows no notice.
    return await _page(request, user, notice=verified_message(user, "done", done, sig))


def _done(user: UiUser, text: str) -> RedirectResponse:
    return RedirectResponse(f"/ui/oncall?{signed_message(user, 'done', text)}", status_code=303)


@router.post("/oncall/{rotation}/overrides", include_in_schema=False)
async def add(
    rotation: str,
    request: Request,
    user: Annotated[UiUser, Depends(form_user)],
    cover: Annotated[str, Form(alias="user", max_length=64)] = "",
    start: Annotated[str, Form(max_length=64)] = "",
    end: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Add an override: 403 for someone who may not (checked here, not by the page); a bad window re-shows the page
    with the reason (400) and stores nothing."""
    services = services_of(request)
    directory = _directory(services)
    found = directory.rotations.get(rotation)
    if found is None:
        raise HTTPException(404, f"there is no rotation {rotation!r}; pick one on the On call page")
    if not may_cover(actor=user.name, admin=user.is_admin, rotation=found, cover=cover.strip()):
        raise HTTPException(
            403,
            f"{user.name} may not add this override: admins may add any, and a member of {rotation} may cover it "
            "themselves only; ask an admin",
        )
    form = {"rotation": rotation, "user": cover, "start": start, "end": end}
    now = services.clock()
    try:
        window = _window(start, end, found.tz, now)
        if not cover.strip() or await services.users.get(cover.strip()) is None:
            raise ValueError(f"{cover.strip() or 'nobody'!r} is not a TeleOps user; pick someone from the list")
    except ValueError as exc:
        return await _page(request, user, status_code=400, error=f"Override not added: {exc}.", form=form)
    except StorageUnavailable as exc:
        raise HTTPException(status_code=503, detail=_UNAVAILABLE) from exc

    def write(conn: Connection) -> StoredOverride:
        return add_override(
            conn, rotation=rotation, user=cover.strip(), start=window[0], end=window[1], by=user.name, now=now
        )

    try:
        stored = await services.db.run_in_transaction(write)
    except StorageUnavailable as exc:
        raise HTTPException(status_code=503, detail=_UNAVAILABLE) from exc
    _wake(services)
    return _done(user, f"{stored.user} now covers {rotation} from {_when(stored.start)} to {_when(stored.end)}.")


def _window(start: str, end: str, zone: str, now: datetime) -> tuple[datetime, datetime]:
    begin, finish = parse_form_time(start, zone), parse_form_time(end, zone)
    if finish <= begin:
        raise ValueError("it ends before it starts; pick an end after the start")
    if finish <= now:
        raise ValueError("it is over already; pick an end in the future")
    if finish - begin > MAX_OVERRIDE:
        raise ValueError(f"it is longer than {MAX_OVERRIDE.days} days; change the rotation in teleops.yaml instead")
    return begin, finish


def _when(at: datetime) -> str:
    return at.strftime("%a %d %b %H:%M %Z").strip()


def _wake(services: Services) -> None:
    """Paging and handovers use the new cover from their next pass; wake the worker so that is now."""
    services.oncall.worker.wake()


@router.post("/oncall/overrides/{override_id}/remove", include_in_schema=False)
async def remove(override_id: RowId, request: Request, user: Annotated[UiUser, Depends(form_user)]) -> Response:
    services = services_of(request)
    directory = _directory(services)
    now = services.clock()

    def write(conn: Connection) -> StoredOverride | None:
        found = override_by_id(conn, override_id)
        if found is None:
            return None
        rotation = directory.rotations.get(found.rotation)  # None: the rotation left teleops.yaml since
        allowed = user.is_admin or (
            rotation is not None and may_remove(actor=user.name, admin=False, rotation=rotation, override=found)
        )
        if not allowed:
            raise PermissionError(found.rotation)
        return remove_override(conn, override_id, by=user.name, now=now)

    try:
        removed = await services.db.run_in_transaction(write)
    except PermissionError as exc:
        raise HTTPException(
            403,
            f"{user.name} may not remove this override of {exc}: admins may, and members of the rotation whom it "
            "names or who made it; ask an admin",
        ) from exc
    except StorageUnavailable as exc:
        raise HTTPException(status_code=503, detail=_UNAVAILABLE) from exc
    if removed is None:
        return await _page(
            request, user, status_code=404, error="That override is gone already (removed, or never existed)."
        )
    _wake(services)
    return _done(user, f"Override removed: {removed.rotation} is back to its schedule for that window.")


@router.post("/oncall/feeds", response_class=HTMLResponse, include_in_schema=False)
async def add_feed(
    request: Request, user: Annotated[UiUser, Depends(form_user)], feed: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    """Make a calendar feed and show its secret URL once (in this answer only: never in a redirect or a log)."""
    services = services_of(request)
    directory = _directory(services)
    kind_text, _, subject = feed.partition(":")
    if kind_text not in (FeedKind.ROTATION.value, FeedKind.USER.value) or not subject:
        return await _page(request, user, status_code=400, error="Feed not made: pick a rotation or a person.")
    kind = FeedKind(kind_text)
    rotation = directory.rotations.get(subject) if kind is FeedKind.ROTATION else None
    if kind is FeedKind.ROTATION and rotation is None:
        return await _page(request, user, status_code=400, error=f"Feed not made: there is no rotation {subject!r}.")
    mine = subject == user.name if rotation is None else user.name in rotation.members
    allowed = user.is_admin or mine
    if not allowed:
        raise HTTPException(
            403, f"{user.name} may not make a feed of {feed}: you may for yourself and your rotations; ask an admin"
        )
    try:
        if kind is FeedKind.USER and await services.users.get(subject) is None:
            return await _page(request, user, status_code=400, error=f"Feed not made: {subject!r} is not a user.")
        made, secret = await services.db.run_in_transaction(
            lambda conn: create_feed(conn, kind, subject, by=user.name, now=services.clock())
        )
    except StorageUnavailable as exc:
        raise HTTPException(status_code=503, detail=_UNAVAILABLE) from exc
    url = f"{services.settings.server.base_url()}/ical/{made.kind.value}/{quote(subject, safe='')}.ics?token={secret}"
    return await _page(
        request, user, notice=f"Feed made for {feed}. Copy its address now: it is shown only once.", feed_url=url
    )


@router.post("/oncall/feeds/{feed_id}/revoke", include_in_schema=False)
async def revoke(feed_id: RowId, request: Request, user: Annotated[UiUser, Depends(form_user)]) -> Response:
    services = services_of(request)

    def write(conn: Connection) -> CalendarFeed | None:
        mine = next((f for f in feeds(conn) if f.id == feed_id), None)
        if mine is None:
            return None
        if not user.is_admin and mine.created_by != user.name:
            raise PermissionError(mine.subject)
        return revoke_feed(conn, feed_id, by=user.name, now=services.clock())

    try:
        revoked = await services.db.run_in_transaction(write)
    except PermissionError as exc:
        raise HTTPException(403, f"{user.name} may not revoke a feed someone else made; ask an admin") from exc
    except StorageUnavailable as exc:
        raise HTTPException(status_code=503, detail=_UNAVAILABLE) from exc
    if revoked is None:
        return await _page(request, user, status_code=404, error="That feed is revoked already (or never existed).")
    return _done(user, f"Feed of {revoked.kind.value} {revoked.subject} revoked: its address now answers 404.")
