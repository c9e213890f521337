"""Telegram updates -> `InboundEvent`: the only place that reads PTB's update objects."""

from __future__ import annotations

from datetime import UTC, datetime

from telegram import Message, Update

from teleops.chat.base import EventKind, InboundEvent

__all__ = ["PLATFORM", "event_of_update"]

PLATFORM = "telegram"

# The forward fields of Bot API < 7.0 (python-telegram-bot 21+ keeps them only in `api_kwargs`): a self-hosted
# or older Bot API server still sends them, sometimes without `forward_origin`. Any of them: not an action.
_LEGACY_FORWARD_FIELDS = frozenset(
    {
        "forward_from",
        "forward_from_chat",
        "forward_from_message_id",
        "forward_signature",
        "forward_sender_name",
        "forward_date",
        "is_automatic_forward",
    }
)


def _forwarded(message: Message) -> bool:
    return (
        message.forward_origin is not None
        or bool(message.is_automatic_forward)
        or not _LEGACY_FORWARD_FIELDS.isdisjoint(message.api_kwargs)
    )


def event_of_update(update: Update, *, now: datetime) -> InboundEvent | None:
    """The normalised event of a message or button press; None for anything else (channel posts,
    member changes, polls, …) — those never trigger actions (THREATS T07).
    """
    if update.callback_query is not None:
        query = update.callback_query
        origin = query.message
        if origin is None or not isinstance(origin, Message):
            return None  # a button on an inline-mode message: not ours
        user = query.from_user
        return InboundEvent(
            platform=PLATFORM,
            kind=EventKind.BUTTON,
            chat_id=str(origin.chat.id),
            user_id=str(user.id),
            username=user.username or "",
            text="",
            # A button press carries no date of its own; Telegram keeps it only briefly.
            sent_at=now,
            update_id=str(update.update_id),
            message_id=str(origin.message_id),
            button_data=query.data or "",
            callback_id=query.id,
            is_bot=user.is_bot,
            is_private_chat=origin.chat.type == "private",
        )
    edited = update.edited_message is not None
    message = update.message or update.edited_message
    if message is None or message.from_user is None:
        return None
    user = message.from_user
    sent_at = message.date if message.date.tzinfo else message.date.replace(tzinfo=UTC)
    reply = message.reply_to_message
    return InboundEvent(
        platform=PLATFORM,
        kind=EventKind.MESSAGE,
        chat_id=str(message.chat.id),
        user_id=str(user.id),
        username=user.username or "",
        text=message.text or message.caption or "",
        sent_at=sent_at,
        update_id=str(update.update_id),
        message_id=str(message.message_id),
        reply_to=str(reply.message_id) if reply is not None else None,
        is_forwarded=_forwarded(message),
        is_edited=edited or message.edit_date is not None,
        is_bot=user.is_bot,
        from_sender_chat=message.sender_chat is not None,
        is_private_chat=message.chat.type == "private",
    )
