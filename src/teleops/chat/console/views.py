"""A console message as one browser receives it: the whole of it, or — for a reader the read rule does not let
read the command it carries (chat/console/read_rule.py) — its place in the room with one line instead of its text,
or — for a reader who may not read an earlier command it quotes — the same message with those quotes withheld.

Every field is rendered by the page's script as text (textContent), never as markup.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from teleops.chat.access import CODE_PROMPT
from teleops.chat.base import Capabilities
from teleops.chat.console.read_rule import Shown, command_of, source_of, withheld_text
from teleops.chat.render import render
from teleops.commands.read_access import Reader
from teleops.domain.text import visible
from teleops.store.console_messages import ConsoleMessageRecord

__all__ = ["asks_for_command", "message_view", "reply_meaning", "view_for", "withheld_view"]


def reply_meaning(record: ConsoleMessageRecord) -> str | None:
    """What a reply to this message does (chat/conversation.py `_reply`), so the browser offers "reply" only where
    it does something and says what: "code" (a one-time-code prompt: the reply is the code), "incident" (a message
    about an incident, also a command's result on one: the reply runs on that incident's host), or None (a reply
    to anything else runs nothing)."""
    if record.author is not None:
        return None
    if str(record.body.get("text", "")).startswith(CODE_PROMPT):
        return "code"
    return "incident" if record.incident_id is not None else None


_RUN = re.compile(r"^/run(?:@\w+)?(?:\s|$)")


def asks_for_command(text: str, replied: ConsoleMessageRecord | None) -> bool:
    """True when typed `text` asks for a command (chat/conversation.py): `/run HOST CMD…`, or a reply to a
    message about an incident that is not a chat command (the text is the command line)."""
    if _RUN.match(text):
        return True
    return replied is not None and not text.startswith("/") and reply_meaning(replied) == "incident"


def withheld_view(record: ConsoleMessageRecord, facts_text: str, why: str) -> dict[str, Any]:
    """The message's place in the room for a reader the rule does not let read it: one line instead of its text."""
    return {
        "id": record.id,
        "at": record.created_at.isoformat(),
        "edited": record.updated_at != record.created_at,
        "author": record.author,
        "reply_to": record.reply_to,
        "incident_id": record.incident_id,
        "reply": None,
        "text": facts_text,
        "buttons": [],
        "withheld": why,
    }


def message_view(record: ConsoleMessageRecord) -> dict[str, Any]:
    """A stored message as the browser receives it (JSON; the script renders every field as text)."""
    body = record.body
    view: dict[str, Any] = {
        "id": record.id,
        "at": record.created_at.isoformat(),
        "edited": record.updated_at != record.created_at,
        "author": record.author,
        "reply_to": record.reply_to,
        "incident_id": record.incident_id,
        "reply": reply_meaning(record),
        # What people typed is shown with control/bidi characters escaped too (docs/threat-model.md T25).
        "text": visible(str(body.get("text", ""))),
        "buttons": [{"label": str(label), "data": str(data)} for label, data in body.get("buttons", [])],
    }
    if "file" in body:
        view["file"] = body["file"]
    return view


def view_for(
    record: ConsoleMessageRecord, shown: Shown, reader: Reader, *, capabilities: Capabilities
) -> dict[str, Any]:
    """`record` as `reader` may see it: `message_view`, or `withheld_view` saying why not; a message that quotes
    earlier commands (an incident's "last time" lines and Run-again buttons) rendered again (with `capabilities`,
    the console's) without the quotes of the commands `reader` may not read, `quotes_withheld` saying why."""
    allowed, why = shown.decide(record, reader)
    if not allowed:
        command = command_of(record)
        return withheld_view(record, withheld_text(record, shown.facts.get(command) if command else None), why)
    try:
        source = source_of(record)
    except ValueError:  # fails closed: what it quotes cannot be told apart from the rest
        return withheld_view(record, "a message that quotes commands — not shown", "its stored form is unreadable")
    if source is None:
        return message_view(record)
    refused = {c: d[1] for q in source.quotes for c in q.commands if not (d := shown.may_read(c, reader))[0]}
    if not refused:
        return message_view(record)
    rendered = render(source.withholding(refused), capabilities)
    buttons = [[b.label, b.data] for b in rendered.buttons]
    view = message_view(replace(record, body={**record.body, "text": rendered.plain, "buttons": buttons}))
    view["quotes_withheld"] = next(iter(refused.values()))
    return view
