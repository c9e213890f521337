"""Slack payloads -> `InboundEvent`: messages (incl. thread replies), button presses, `/teleops` commands.

Pure functions over the JSON Slack sends (Events API, interactivity, slash commands), so they read the
same whether it came over Socket Mode or HTTP. Identity is `TEAM/USER` (both immutable ids, docs/threat-model.md T04).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from teleops.chat.base import EventKind, InboundEvent

__all__ = [
    "PLATFORM",
    "button_event",
    "command_event",
    "delivery_id",
    "message_event",
    "slack_text",
    "team_of",
    "user_team_of",
]

PLATFORM = "slack"

# Message subtypes a person produces by typing; anything else (joins, bot posts, deletions…) is not for us.
_TYPED = {None, "thread_broadcast", "file_share", "me_message"}
_LEADING_MENTION = re.compile(r"^\s*<@[A-Z0-9]+>[:,]?\s*")
_LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|[^>]*)?>")


def slack_text(text: str) -> str:
    """What the person typed: Slack's `<url|label>` back to the url, and its three entities unescaped."""
    text = _LEADING_MENTION.sub("", text)
    text = _LINK.sub(lambda m: m.group(1), text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _at(ts: Any, fallback: datetime) -> datetime:
    try:
        return datetime.fromtimestamp(float(ts), tz=UTC)
    except (TypeError, ValueError, OverflowError):
        return fallback


def delivery_id(body: object) -> str:
    """Slack's id of one delivery, for reports about it: `event_id` (events), else `trigger_id` (buttons,
    slash commands); "" when the body carries neither."""
    if not isinstance(body, Mapping):
        return ""
    return str(body.get("event_id") or body.get("trigger_id") or "")[:128]


def team_of(body: Mapping[str, Any]) -> str:
    """The workspace the payload was delivered for (events: `team_id`; interactivity: `team.id`)."""
    team = body.get("team")
    if isinstance(team, Mapping):
        return str(team.get("id") or "")
    return str(body.get("team_id") or team or "")


def user_team_of(body: Mapping[str, Any], event: Mapping[str, Any] | None = None) -> str:
    """The workspace of the *person* (differs from `team_of` in channels shared with other workspaces)."""
    if event is not None:
        team = event.get("user_team") or event.get("team")
        if team:
            return str(team)
    user = body.get("user")
    if isinstance(user, Mapping) and user.get("team_id"):
        return str(user["team_id"])
    return str(body.get("user_team_id") or team_of(body))


def message_event(body: Mapping[str, Any], *, now: datetime) -> InboundEvent | None:
    """A `message` event (channel, group, DM, thread reply). None for subtypes no person typed."""
    event = body.get("event")
    if not isinstance(event, Mapping):
        return None
    subtype = event.get("subtype")
    edited = subtype == "message_changed"
    message: Mapping[str, Any] = event
    if edited:
        inner = event.get("message")
        if not isinstance(inner, Mapping):
            return None
        message = inner
    elif subtype not in _TYPED and subtype != "bot_message":
        return None
    user = message.get("user")
    is_bot = subtype == "bot_message" or bool(message.get("bot_id"))
    if not user and not is_bot:
        return None
    channel = str(event.get("channel") or "")
    ts = str(message.get("ts") or event.get("ts") or "")
    thread_ts = message.get("thread_ts")
    attachments = message.get("attachments") or []
    forwarded = any(isinstance(a, Mapping) and a.get("is_share") for a in attachments)
    return InboundEvent(
        platform=PLATFORM,
        kind=EventKind.MESSAGE,
        chat_id=channel,
        user_id=f"{user_team_of(body, message)}/{user or message.get('bot_id', '')}",
        text=slack_text(str(message.get("text") or "")),
        sent_at=_at(ts, now),
        update_id=str(body.get("event_id") or f"message:{channel}:{ts}"),
        message_id=ts or None,
        # A reply in a thread answers the thread's first message: the incident announcement.
        reply_to=str(thread_ts) if thread_ts and thread_ts != ts else None,
        is_forwarded=forwarded,
        is_edited=edited or bool(message.get("edited")),
        is_bot=is_bot,
        is_private_chat=event.get("channel_type") == "im",
    )


def button_event(body: Mapping[str, Any], *, now: datetime) -> InboundEvent | None:
    """A `block_actions` press on one of our buttons (its `value` is the button data, re-authorised later)."""
    actions = body.get("actions") or []
    user = body.get("user")
    channel = body.get("channel")
    container = body.get("container") or {}
    if not actions or not isinstance(user, Mapping) or not isinstance(channel, Mapping):
        return None
    action = actions[0]
    channel_id = str(channel.get("id") or "")
    return InboundEvent(
        platform=PLATFORM,
        kind=EventKind.BUTTON,
        chat_id=channel_id,
        user_id=f"{user_team_of(body)}/{user.get('id', '')}",
        username=str(user.get("username") or user.get("name") or ""),
        text="",
        sent_at=_at(action.get("action_ts"), now),
        update_id=f"action:{body.get('trigger_id') or action.get('action_ts')}",
        message_id=str(container.get("message_ts") or "") or None,
        button_data=str(action.get("value") or ""),
        callback_id=f"{channel_id}|{user.get('id', '')}",
    )


def _unique(body: Mapping[str, Any], now: datetime) -> str:
    return f"{body.get('user_id')}:{now.timestamp()}"


def command_event(body: Mapping[str, Any], *, now: datetime) -> InboundEvent:
    """`/teleops VERB ARGS…` as the text command `/VERB ARGS…` (bare `/teleops` is `/help`)."""
    words = str(body.get("text") or "").strip().lstrip("/")
    return InboundEvent(
        platform=PLATFORM,
        kind=EventKind.MESSAGE,
        chat_id=str(body.get("channel_id") or ""),
        user_id=f"{user_team_of(body)}/{body.get('user_id', '')}",
        username=str(body.get("user_name") or ""),
        text=f"/{slack_text(words)}" if words else "/help",
        sent_at=now,  # a slash command is delivered at once or not at all
        update_id=f"command:{body.get('trigger_id') or _unique(body, now)}",
        is_private_chat=str(body.get("channel_name")) == "directmessage",
    )
