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


def _id(value: object, what: str) -> str:
    """A Telegram id (an integer) as text. PTB does not check the types of what it parses, so this does."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"{what} is a {type(value).__name__}, not an integer id")


def _text(value: object, what: str) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    raise TypeError(f"{what} is a {type(value).__name__}, not text")


def event_of_update(update: Update, *, now: datetime) -> InboundEvent | None:
    """The normalised event of a message or button press; None for anything else (channel posts,
    member changes, polls, …) — those never trigger actions (docs/threat-model.md T07).

    Raises TypeError (or AttributeError) for an update in a shape it does not read, e.g. a text that is not a
    string or an id that is not an integer: the gateway reports and skips it.
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
            chat_id=_id(origin.chat.id, "callback_query.message.chat.id"),
            user_id=_id(user.id, "callback_query.from.id"),
            username=_text(user.username, "callback_query.from.username"),
            text="",
            # A button press carries no date of its own; Telegram keeps it only briefly.
            sent_at=now,
            update_id=str(update.update_id),
            message_id=_id(origin.message_id, "callback_query.message.message_id"),
            button_data=_text(query.data, "callback_query.data"),
            callback_id=_text(query.id, "callback_query.id"),
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
        chat_id=_id(message.chat.id, "message.chat.id"),
        user_id=_id(user.id, "message.from.id"),
        username=_text(user.username, "message.from.username"),
        text=_text(message.text, "message.text") or _text(message.caption, "message.caption"),
        sent_at=sent_at,
        update_id=str(update.update_id),
        message_id=_id(message.message_id, "message.message_id"),
        reply_to=_id(reply.message_id, "message.reply_to_message.message_id") if reply is not None else None,
        is_forwarded=_forwarded(message),
        is_edited=edited or message.edit_date is not None,
        is_bot=user.is_bot,
        from_sender_chat=message.sender_chat is not None,
        is_private_chat=message.chat.type == "private",
    )
