"""Chat platform webhooks: `POST /api/v1/chat/telegram/webhook` (secret header checked by the gateway) and
`POST /api/v1/chat/slack/events` (Events API, interactivity and `/teleops`; signature checked by the gateway)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from teleops.server.auth import services_of

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/chat", tags=["chat"])

MAX_UPDATE_BYTES = 1024 * 1024


@router.post(
    "/telegram/webhook",
    status_code=200,
    responses={
        403: {"description": "Missing or wrong secret"},
        404: {"description": "Telegram is not configured in webhook mode"},
    },
)
async def telegram_webhook(request: Request) -> Response:
    """One Telegram update. 403 unless exactly one `X-Telegram-Bot-Api-Secret-Token` header matches
    `telegram.webhook_secret`; 404 when Telegram runs in polling mode or is not configured.
    """
    services = services_of(request)
    gateway = services.chat.gateway("telegram")
    handle = getattr(gateway, "handle_webhook", None)
    if gateway is None or handle is None or services.settings.telegram.mode != "webhook":
        return Response(
            "Telegram webhook mode is not enabled; set telegram.mode: webhook and telegram.webhook_secret",
            status_code=404,
        )
    body = await request.body()
    if len(body) > MAX_UPDATE_BYTES:
        return Response("update too large", status_code=413)
    status = await handle(request.headers.getlist("x-telegram-bot-api-secret-token"), body)
    return Response(status_code=int(status))


@router.post(
    "/slack/events",
    status_code=200,
    responses={
        401: {"description": "Missing, stale or wrong signature"},
        404: {"description": "Slack is not configured in Events API mode"},
    },
)
async def slack_events(request: Request) -> Response:
    """One Slack Events API, interactivity or slash-command request (all may share this URL). 401 with
    nothing done unless `X-Slack-Signature` is a valid v0 HMAC of the raw body signed within ±300 s;
    404 when Slack runs in Socket Mode or is not configured.
    """
    services = services_of(request)
    gateway = services.chat.gateway("slack")
    handle = getattr(gateway, "handle_http", None)
    if gateway is None or handle is None or services.settings.slack.mode != "events":
        return Response(
            "Slack Events API mode is not enabled; set slack.mode: events and slack.signing_secret", status_code=404
        )
    body = await request.body()
    if len(body) > MAX_UPDATE_BYTES:
        return Response("request too large", status_code=413)
    headers = {name: request.headers.getlist(name) for name in {k.lower() for k in request.headers}}
    status, answer_headers, content = await handle(headers, body)
    return Response(content, status_code=int(status), headers=answer_headers)
