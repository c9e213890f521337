"""The platform-neutral message: what the core wants to say (the outbox stores it as JSON). chat/render.py turns
it into one platform's `Rendered` (chat/base.py); incident messages take `Extra` lines from other parts (scenario
memory's "last time" and Run-again buttons)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["Button", "CodeBlock", "Extra", "IncidentPage", "Link", "Message", "Quote", "incident_page"]


@dataclass(frozen=True, slots=True)
class Button:
    """A button: `data` comes back in `InboundEvent.button_data` (untrusted: re-authorised on press)."""

    label: str
    data: str


@dataclass(frozen=True, slots=True)
class Link:
    label: str
    url: str


@dataclass(frozen=True, slots=True)
class CodeBlock:
    """Verbatim text (command output). Too long for the platform: its *tail* is kept."""

    text: str
    language: str | None = None


@dataclass(frozen=True, slots=True)
class IncidentPage:
    """The incident page of the web UI, which shows everything a trimmed chat message had to leave out."""

    incident_id: int
    url: str = ""  # "" when no `server.public_url` is configured: the page is then named, never guessed


def incident_page(incident_id: int, public_url: str) -> IncidentPage:
    """The page of incident `incident_id` under `public_url` (the configured `server.public_url`, may be "")."""
    base = public_url.strip().rstrip("/")
    return IncidentPage(incident_id, f"{base}/ui/incidents/{incident_id}" if base else "")


@dataclass(frozen=True, slots=True)
class Quote:
    """A part of a message that quotes earlier commands (scenario memory's "last time" block): a body `line`
    naming their command lines, or a button whose `data` runs one of them again.

    Chat rooms show the message whole (a room is a room). Where one room is shared by people with different rights
    (the web console), a reader who may not read one of `commands` (commands/read_access.py) gets `withheld`
    instead of `line` and no such button: `Message.withholding`.
    """

    commands: tuple[int, ...]
    line: str = ""
    withheld: str = ""  # `line` as shown to who may not read one of `commands`
    button: str = ""  # the data of the button to remove for them


@dataclass(frozen=True, slots=True)
class Message:
    """What the core wants to say, with no platform syntax in it. Every field is plain text."""

    title: str = ""
    severity: str | None = None
    host: str | None = None
    body: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    links: tuple[Link, ...] = ()
    code: tuple[CodeBlock, ...] = ()
    status: str = ""  # e.g. "acknowledged by alice 03:12", shown last
    buttons: tuple[Button, ...] = ()
    # Where the whole of it can be read: named at the end of the message when `render` had to trim it.
    page: IncidentPage | None = None
    # The platform id of the person's message this one answers (a command's output replies to the command), on
    # platforms that reply to a message rather than thread (Telegram, the console).
    answers: str | None = None
    # The command whose line or output this message carries (chat/commands.py): where one room is shared by people
    # with different rights (the web console), it is shown only to who may read that command (chat/console/).
    command_id: int | None = None
    # The earlier commands it quotes, part by part (scenario memory): the console withholds them per reader.
    quotes: tuple[Quote, ...] = ()

    def withholding(self, commands: Collection[int]) -> Message:
        """This message for a reader who may not read `commands`: each quoted line naming one of them replaced by
        its `withheld` text, each button running one of them removed. Unchanged when it quotes none of them."""
        hidden = [q for q in self.quotes if any(c in commands for c in q.commands)]
        if not hidden:
            return self
        body = self.body
        # Longest first: a line that is part of a longer one must not break the longer one's replacement.
        for quote in sorted((q for q in hidden if q.line), key=lambda q: len(q.line), reverse=True):
            body = body.replace(quote.line, quote.withheld)
        dropped = {q.button for q in hidden if q.button}
        return replace(self, body=body, buttons=tuple(b for b in self.buttons if b.data not in dropped))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the outbox stores messages like this)."""
        data: dict[str, Any] = {
            "title": self.title,
            "severity": self.severity,
            "host": self.host,
            "body": self.body,
            "labels": [list(pair) for pair in self.labels],
            "links": [[link.label, link.url] for link in self.links],
            "code": [[block.text, block.language] for block in self.code],
            "status": self.status,
            "buttons": [[b.label, b.data] for b in self.buttons],
            "page": [self.page.incident_id, self.page.url] if self.page is not None else None,
            "answers": self.answers,
        }
        if self.command_id is not None:
            data["command_id"] = self.command_id
        if self.quotes:
            data["quotes"] = [[list(q.commands), q.line, q.withheld, q.button] for q in self.quotes]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Message:
        """The inverse of `to_json`. Raises KeyError/TypeError/ValueError on a malformed dict."""
        page = data.get("page")  # absent in rows queued before pages were linked
        return cls(
            title=str(data.get("title", "")),
            severity=data.get("severity"),
            host=data.get("host"),
            body=str(data.get("body", "")),
            labels=tuple((str(k), str(v)) for k, v in data.get("labels", ())),
            links=tuple(Link(str(label), str(url)) for label, url in data.get("links", ())),
            code=tuple(CodeBlock(str(text), lang) for text, lang in data.get("code", ())),
            status=str(data.get("status", "")),
            buttons=tuple(Button(str(label), str(d)) for label, d in data.get("buttons", ())),
            page=IncidentPage(int(page[0]), str(page[1])) if page else None,
            answers=None if data.get("answers") is None else str(data["answers"]),
            command_id=None if data.get("command_id") is None else int(data["command_id"]),
            quotes=tuple(
                Quote(tuple(int(c) for c in ids), str(line), str(withheld), str(button))
                for ids, line, withheld, button in data.get("quotes", ())
            ),
        )


@dataclass(frozen=True, slots=True)
class Extra:
    """What another part adds to an incident's message (scenario memory: "last time", Run-again buttons).
    `quotes` names the lines and buttons that quote earlier commands (Message.quotes)."""

    lines: tuple[str, ...] = ()
    code: tuple[CodeBlock, ...] = ()
    buttons: tuple[Button, ...] = ()
    quotes: tuple[Quote, ...] = ()
