"""The audit page (admins only): the log newest first, searchable, a page at a time, with the chain's state.

Non-admins get 403 from the server (`require_ui_admin`), whatever the navigation bar shows. The chain's state
is `teleops audit verify`'s verdict, cached for a minute (server/audit_status.py); "Verify now" re-runs it.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from teleops.server.audit_status import chain_status
from teleops.server.auth import services_of
from teleops.server.csrf import admin_form_user
from teleops.server.routes.ui_common import UiUser, render_page, require_ui_admin
from teleops.store.audit_search import AuditQuery, search_audit
from teleops.store.database import StorageUnavailable

__all__ = ["router"]

router = APIRouter()

PAGE_SIZE = 50


@router.get("/audit", response_class=HTMLResponse, include_in_schema=False)
async def audit_page(
    request: Request,
    user: Annotated[UiUser, Depends(require_ui_admin)],
    actor: Annotated[str, Query(max_length=255)] = "",
    action: Annotated[str, Query(max_length=64)] = "",
    q: Annotated[str, Query(max_length=200)] = "",
    before: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    services = services_of(request)
    query = AuditQuery(actor=actor.strip(), action=action.strip(), text=q.strip(), before=before, limit=PAGE_SIZE)
    try:
        page = await search_audit(services.db, query)
        state = await chain_status(request).get(services)
    except StorageUnavailable as exc:
        raise HTTPException(status_code=503, detail="the database is unavailable; retry in a minute") from exc
    filters = {k: v for k, v in (("actor", query.actor), ("action", query.action), ("q", query.text)) if v}
    older = f"/ui/audit?{urlencode({**filters, 'before': page.older})}" if page.older else None
    return render_page(
        request,
        "audit.html",
        user=user,
        page=page,
        query=query,
        state=state,
        older=older,
        newest="/ui/audit" + (f"?{urlencode(filters)}" if filters else ""),
        now=services.clock(),
    )


@router.post("/audit/verify", include_in_schema=False)
async def verify_now(request: Request, user: Annotated[UiUser, Depends(admin_form_user)]) -> Response:
    """Re-run the full verification now (the page shows the cached one otherwise)."""
    services = services_of(request)
    try:
        await chain_status(request).get(services, fresh=True)
    except StorageUnavailable as exc:
        raise HTTPException(status_code=503, detail="the database is unavailable; retry in a minute") from exc
    return RedirectResponse("/ui/audit", status_code=303)
