"""The platform-neutral message, and its rendering for each formatting kind.

Alert text is untrusted: it may hold `<`, `&`, `_`, `*`, control characters, ANSI escapes or bidi
overrides. Every piece goes through `visible` (domain/text.py) and then the formatting's escaping;
Telegram gets parse_mode HTML with `html.escape` (a closed, small escaping rule, unlike MarkdownV2).
Every `Rendered` also carries a plain-text twin: when a platform still rejects the markup, the
outbox sends the twin instead, so a message is never lost to an escaping bug.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from teleops.chat.base import Capabilities, Formatting
from teleops.domain.text import visible

__all__ = ["Button", "CodeBlock", "Link", "Message", "Rendered", "render"]

_SEVERITY_MARK = {"critical": "🔴", "error": "🟠", "warning": "🟡", "info": "🔵", "unknown": "⚪"}
_SAFE_SCHEMES = ("http://", "https://")
_ELLIPSIS = "…"


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

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the outbox stores messages like this)."""
        return {
            "title": self.title,
            "severity": self.severity,
            "host": self.host,
            "body": self.body,
            "labels": [list(pair) for pair in self.labels],
            "links": [[link.label, link.url] for link in self.links],
            "code": [[block.text, block.language] for block in self.code],
            "status": self.status,
            "buttons": [[b.label, b.data] for b in self.buttons],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Message:
        """The inverse of `to_json`. Raises KeyError/TypeError/ValueError on a malformed dict."""
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
        )


@dataclass(frozen=True, slots=True)
class Rendered:
    """A message in one platform's syntax, plus its plain-text twin for the markup fallback."""

    text: str
    formatting: Formatting
    plain: str
    buttons: tuple[Button, ...] = field(default=())
    # Block Kit blocks (Formatting.SLACK_MRKDWN only): JSON-ready dicts; `text` is then the notification fallback.
    blocks: tuple[dict[str, Any], ...] = field(default=())
    # The incident the message is about (its outbox row's): a reply to it acts on that incident (chat/conversation.py).
    incident_id: int | None = None

    def as_plain(self) -> Rendered:
        return replace(self, text=self.plain, formatting=Formatting.PLAIN)


def render(message: Message, capabilities: Capabilities) -> Rendered:
    """`message` in the platform's formatting, fitted to its length limit, buttons dropped if unsupported.

    Never raises on any text content. Over-long messages lose the head of code blocks first (the tail
    of output matters most), then the end of the body.
    """
    fitted = _fit(message, capabilities.max_message_length)
    plain = _plain(fitted)
    text = _html(fitted) if capabilities.formatting is Formatting.HTML else plain
    buttons = fitted.buttons if capabilities.buttons else ()
    if capabilities.buttons:
        limit = capabilities.max_button_data_bytes
        buttons = tuple(b for b in buttons if len(b.data.encode()) <= limit)
    blocks: tuple[dict[str, Any], ...] = ()
    if capabilities.formatting is Formatting.SLACK_MRKDWN:
        text = _mrkdwn(fitted)
        blocks = _blocks(fitted, buttons)
    return Rendered(text=text, formatting=capabilities.formatting, plain=plain, buttons=buttons, blocks=blocks)


def _headline(message: Message) -> str:
    parts = []
    if message.severity:
        parts.append(f"{_SEVERITY_MARK.get(message.severity, '⚪')} {message.severity.upper()}")
    if message.title:
        parts.append(visible(message.title))
    return " · ".join(parts)


def _safe_url(url: str) -> str | None:
    stripped = url.strip()
    if stripped.lower().startswith(_SAFE_SCHEMES) and visible(stripped) == stripped and " " not in stripped:
        return stripped
    return None


def _plain(message: Message) -> str:
    lines: list[str] = []
    headline = _headline(message)
    if headline:
        lines.append(headline)
    if message.host:
        lines.append(f"host: {visible(message.host)}")
    if message.body:
        lines.append(visible(message.body))
    if message.labels:
        lines.append("labels: " + ", ".join(f"{visible(k)}={visible(v)}" for k, v in message.labels))
    for link in message.links:
        lines.append(f"{visible(link.label)}: {visible(link.url)}")
    for block in message.code:
        lines.append(visible(block.text))
    if message.status:
        lines.append(visible(message.status))
    return "\n".join(lines)


def _esc(text: str) -> str:
    return html.escape(visible(text), quote=False)


def _html(message: Message) -> str:
    lines: list[str] = []
    headline = _headline(message)
    if headline:
        lines.append(f"<b>{html.escape(headline, quote=False)}</b>")
    if message.host:
        lines.append(f"host: <code>{_esc(message.host)}</code>")
    if message.body:
        lines.append(_esc(message.body))
    if message.labels:
        lines.append("labels: " + ", ".join(f"<code>{_esc(k)}={_esc(v)}</code>" for k, v in message.labels))
    links = []
    for link in message.links:
        url = _safe_url(link.url)
        if url is None:  # javascript:, data:, or anything odd: shown as text, never clickable
            links.append(f"{_esc(link.label)}: {_esc(link.url)}")
        else:
            links.append(f'<a href="{html.escape(url, quote=True)}">{_esc(link.label)}</a>')
    if links:
        lines.append(" · ".join(links))
    for block in message.code:
        lines.append(f"<pre>{_esc(block.text)}</pre>")
    if message.status:
        lines.append(f"<i>{_esc(message.status)}</i>")
    return "\n".join(lines)


# -- Slack: mrkdwn text and Block Kit ---------------------------------------------------------------

SLACK_SECTION_LIMIT = 3000  # characters of one section's text, after escaping (Block Kit rejects more)
# Buttons whose action cannot be undone from chat ask "are you sure?" first (Block Kit confirm dialog).
_CONFIRM = {"resolve:": "Resolve this incident? Its messages will be closed for everyone."}


def _slack_esc(text: str) -> str:
    """Slack's whole escaping rule: &, <, > become entities, so `<!channel>` or `<url|label>` stay text."""
    return visible(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_code(text: str) -> str:
    # A ``` inside output would end the code block early: break the fence with a modifier grave accent.
    return _slack_esc(text).replace("```", "`ˋ`")


def _slack_links(message: Message) -> list[str]:
    links = []
    for link in message.links:
        url = _safe_url(link.url)
        label = _slack_esc(link.label).replace("|", "¦")
        if url is None or any(c in url for c in "<>|"):  # odd schemes or delimiters: shown as text, never linked
            links.append(f"{label}: {_slack_esc(link.url)}")
        else:
            links.append(f"<{url.replace('&', '&amp;')}|{label}>")
    return links


def _mrkdwn(message: Message) -> str:
    lines: list[str] = []
    headline = _headline(message)
    if headline:
        lines.append(f"*{_slack_esc(headline)}*")
    if message.host:
        lines.append(f"host: `{_slack_esc(message.host)}`")
    if message.body:
        lines.append(_slack_esc(message.body))
    if message.labels:
        lines.append("labels: " + ", ".join(f"`{_slack_esc(k)}={_slack_esc(v)}`" for k, v in message.labels))
    links = _slack_links(message)
    if links:
        lines.append(" · ".join(links))
    for block in message.code:
        lines.append(f"```{_slack_code(block.text)}```")
    if message.status:
        lines.append(f"_{_slack_esc(message.status)}_")
    return "\n".join(lines)


def _section(text: str, *, tail: bool = False) -> dict[str, Any]:
    """A mrkdwn section, clipped (head or tail) so that the escaped text fits Slack's per-section limit."""
    if len(text) > SLACK_SECTION_LIMIT:
        keep = SLACK_SECTION_LIMIT - 1
        text = "…" + text[-keep:] if tail else text[:keep] + "…"
    return {"type": "section", "text": {"type": "mrkdwn", "text": text or " ", "verbatim": True}}


def _blocks(message: Message, buttons: Sequence[Button]) -> tuple[dict[str, Any], ...]:
    """Section (severity, title, host, summary, labels) · code sections · context (links, status) · actions."""
    head: list[str] = []
    headline = _headline(message)
    if headline:
        head.append(f"*{_slack_esc(headline)}*")
    if message.host:
        head.append(f"host: `{_slack_esc(message.host)}`")
    if message.body:
        head.append(_slack_esc(message.body))
    if message.labels:
        head.append(" ".join(f"`{_slack_esc(k)}={_slack_esc(v)}`" for k, v in message.labels))
    blocks: list[dict[str, Any]] = []
    if head:
        blocks.append(_section("\n".join(head)))
    for code in message.code:
        fence = 6  # the two ``` fences
        body = _slack_code(code.text)
        if len(body) + fence > SLACK_SECTION_LIMIT:
            body = body[-(SLACK_SECTION_LIMIT - fence - 1) :]
        blocks.append(_section(f"```{body}```", tail=True))
    context = [*_slack_links(message)]
    if message.status:
        context.append(f"_{_slack_esc(message.status)}_")
    if context:
        elements = [{"type": "mrkdwn", "text": part[:SLACK_SECTION_LIMIT], "verbatim": True} for part in context[:10]]
        blocks.append({"type": "context", "elements": elements})
    if buttons:
        blocks.append(
            {"type": "actions", "block_id": "teleops_actions", "elements": [_button(b) for b in buttons[:25]]}
        )
    return tuple(blocks)


def _button(button: Button) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "button",
        "action_id": f"teleops:{button.data.split(':', 1)[0]}",
        "text": {"type": "plain_text", "text": visible(button.label)[:75] or "?", "emoji": True},
        "value": button.data,
    }
    for prefix, question in _CONFIRM.items():
        if button.data.startswith(prefix):
            element["style"] = "danger"
            element["confirm"] = {
                "title": {"type": "plain_text", "text": "Are you sure?"},
                "text": {"type": "plain_text", "text": question},
                "confirm": {"type": "plain_text", "text": visible(button.label)[:30] or "Yes"},
                "deny": {"type": "plain_text", "text": "Cancel"},
                "style": "danger",
            }
    return element


def _length(text: str) -> int:
    # Telegram counts UTF-16 code units; counting them is never less than counting code points.
    return len(text.encode("utf-16-le")) // 2


def _clip_tail(text: str, budget: int) -> str:
    """The last `budget` characters of `text`, with a marker saying how much was left out."""
    if _length(text) <= budget:
        return text
    marker = f"[{_length(text) - budget} characters above not shown]\n"
    keep = max(budget - len(marker), 0)
    return marker + (text[-keep:] if keep else "")


def _clip_head(text: str, budget: int) -> str:
    if _length(text) <= budget:
        return text
    return text[: max(budget - 1, 0)] + _ELLIPSIS


def _fit(message: Message, limit: int) -> Message:
    """Shrink `message` until its visible text (after escapes) fits in `limit` characters."""
    if _length(_plain(message)) <= limit:
        return message
    margin = 64  # separators, link labels and markup that counts as visible text on some platforms
    without_code = replace(message, code=())
    rest = _length(_plain(without_code))
    if message.code and rest + margin < limit:
        share = (limit - rest - margin) // len(message.code)
        code = tuple(replace(block, text=_clip_tail(visible(block.text), share)) for block in message.code)
        return replace(message, code=code)
    # The text around the code is itself too long: keep a share of each part.
    labels: Sequence[tuple[str, str]] = message.labels[:10]
    slim = replace(
        message,
        title=_clip_head(message.title, limit // 4),
        body=_clip_head(visible(message.body), limit // 4),
        labels=tuple((_clip_head(k, 32), _clip_head(v, 64)) for k, v in labels),
        status=_clip_head(message.status, limit // 8),
        code=tuple(replace(block, text=_clip_tail(visible(block.text), limit // 8)) for block in message.code[:1]),
    )
    if _length(_plain(slim)) <= limit:
        return slim
    # Last resort, always within the limit: the plain text as one clipped body, no markup around it.
    return Message(body=_clip_head(_plain(slim), limit), buttons=message.buttons)
