"""The platform-neutral message (domain/message.py) rendered for each formatting kind (`Rendered`, chat/base.py).

Alert text is untrusted: it may hold `<`, `&`, `_`, `*`, control characters, ANSI escapes or bidi
overrides. Every piece goes through `visible` (domain/text.py) and then the formatting's escaping;
Telegram gets parse_mode HTML with `html.escape` (a closed, small escaping rule, unlike MarkdownV2).
Every `Rendered` also carries a plain-text twin: when a platform still rejects the markup, the
outbox sends the twin instead, so a message is never lost to an escaping bug.

Nothing is cut silently: a message too long for its platform is trimmed part by part, and each cut says so
("… 3,976 more characters", "+22 labels", "[1,200 characters above not shown]"); a trimmed message about an
incident ends with where the whole of it is (the incident page, linked when `server.public_url` is set).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from teleops.chat import trim
from teleops.chat.base import Capabilities, Formatting, Rendered
from teleops.domain.message import Button, IncidentPage, Message
from teleops.domain.text import visible

__all__ = ["render"]

_SEVERITY_MARK = {"critical": "🔴", "error": "🟠", "warning": "🟡", "info": "🔵", "unknown": "⚪"}
_SAFE_SCHEMES = ("http://", "https://")


def render(message: Message, capabilities: Capabilities) -> Rendered:
    """`message` in the platform's formatting, fitted to its length limit, buttons dropped if unsupported.

    Never raises on any text content. An over-long message loses the head of its code blocks first (the tail
    of output matters most), then the summary and labels share what is left; every cut is marked, and a
    trimmed message with a `page` ends with where the whole of it is.
    """
    fitted, cuts = _fit(message, capabilities)
    plain = _plain(fitted, cuts)
    text = _html(fitted, cuts) if capabilities.formatting is Formatting.HTML else plain
    buttons = fitted.buttons if capabilities.buttons else ()
    if capabilities.buttons:
        limit = capabilities.max_button_data_bytes
        buttons = tuple(b for b in buttons if len(b.data.encode()) <= limit)
    blocks: tuple[dict[str, Any], ...] = ()
    if capabilities.formatting is Formatting.SLACK_MRKDWN:
        text = _mrkdwn(fitted, cuts)
        blocks = _blocks(fitted, cuts, buttons)
    return Rendered(
        text=text,
        formatting=capabilities.formatting,
        plain=plain,
        buttons=buttons,
        blocks=blocks,
        command_id=message.command_id,
        source=message if message.quotes else None,
    )


@dataclass(frozen=True, slots=True)
class _Cuts:
    """What fitting left out, for the renderers to say: how many labels are not shown, and whether anything was
    trimmed at all (then the message ends with where the whole of it is)."""

    hidden_labels: int = 0
    trimmed: bool = False


_NO_CUTS = _Cuts()
_TRIMMED = "Trimmed to fit"


def _more_labels(hidden: int) -> str:
    return f"+{trim.count(hidden, 'label')}"


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


def _page_plain(page: IncidentPage) -> str:
    if page.url:
        return f"{_TRIMMED}: everything is on incident #{page.incident_id}: {visible(page.url)}"
    return f"{_TRIMMED}: see incident #{page.incident_id} in the web console"


def _page_line(message: Message, cuts: _Cuts) -> str | None:
    """The plain "where the whole is" line of a trimmed message about an incident, else None."""
    return _page_plain(message.page) if cuts.trimmed and message.page is not None else None


def _plain(message: Message, cuts: _Cuts = _NO_CUTS) -> str:
    lines: list[str] = []
    headline = _headline(message)
    if headline:
        lines.append(headline)
    if message.host:
        lines.append(f"host: {visible(message.host)}")
    if message.body:
        lines.append(visible(message.body))
    if message.labels or cuts.hidden_labels:
        items = [f"{visible(k)}={visible(v)}" for k, v in message.labels]
        if cuts.hidden_labels:
            items.append(_more_labels(cuts.hidden_labels))
        lines.append("labels: " + ", ".join(items))
    for link in message.links:
        lines.append(f"{visible(link.label)}: {visible(link.url)}")
    for block in message.code:
        lines.append(visible(block.text))
    if message.status:
        lines.append(visible(message.status))
    page = _page_line(message, cuts)
    if page is not None:
        lines.append(page)
    return "\n".join(lines)


def _esc(text: str) -> str:
    return html.escape(visible(text), quote=False)


def _html(message: Message, cuts: _Cuts = _NO_CUTS) -> str:
    lines: list[str] = []
    headline = _headline(message)
    if headline:
        lines.append(f"<b>{html.escape(headline, quote=False)}</b>")
    if message.host:
        lines.append(f"host: <code>{_esc(message.host)}</code>")
    if message.body:
        lines.append(_esc(message.body))
    if message.labels or cuts.hidden_labels:
        items = [f"<code>{_esc(k)}={_esc(v)}</code>" for k, v in message.labels]
        if cuts.hidden_labels:
            items.append(_more_labels(cuts.hidden_labels))
        lines.append("labels: " + ", ".join(items))
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
    if cuts.trimmed and message.page is not None:
        url = _safe_url(message.page.url)
        if url is None:
            lines.append(_esc(_page_plain(message.page)))
        else:
            anchor = f'<a href="{html.escape(url, quote=True)}">incident #{message.page.incident_id}</a>'
            lines.append(f"{_TRIMMED}: everything is on {anchor}")
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


def _slack_page(message: Message, cuts: _Cuts) -> str | None:
    if not cuts.trimmed or message.page is None:
        return None
    url = _safe_url(message.page.url)
    if url is None or any(c in url for c in "<>|"):
        return _slack_esc(_page_plain(message.page))
    return f"{_TRIMMED}: everything is on <{url.replace('&', '&amp;')}|incident #{message.page.incident_id}>"


def _slack_labels(message: Message, cuts: _Cuts) -> list[str]:
    items = [f"`{_slack_esc(k)}={_slack_esc(v)}`" for k, v in message.labels]
    if cuts.hidden_labels:
        items.append(_more_labels(cuts.hidden_labels))
    return items


def _mrkdwn(message: Message, cuts: _Cuts = _NO_CUTS) -> str:
    lines: list[str] = []
    headline = _headline(message)
    if headline:
        lines.append(f"*{_slack_esc(headline)}*")
    if message.host:
        lines.append(f"host: `{_slack_esc(message.host)}`")
    if message.body:
        lines.append(_slack_esc(message.body))
    if message.labels or cuts.hidden_labels:
        lines.append("labels: " + ", ".join(_slack_labels(message, cuts)))
    links = _slack_links(message)
    if links:
        lines.append(" · ".join(links))
    for block in message.code:
        lines.append(f"```{_slack_code(block.text)}```")
    if message.status:
        lines.append(f"_{_slack_esc(message.status)}_")
    page = _slack_page(message, cuts)
    if page is not None:
        lines.append(page)
    return "\n".join(lines)


def _section(text: str) -> dict[str, Any]:
    """A mrkdwn section. Fitting keeps every section within Slack's limit; this cut is only a last guard."""
    if len(text) > SLACK_SECTION_LIMIT:
        text = trim.clip_body(text, SLACK_SECTION_LIMIT)
    return {"type": "section", "text": {"type": "mrkdwn", "text": text or " ", "verbatim": True}}


def _blocks(message: Message, cuts: _Cuts, buttons: Sequence[Button]) -> tuple[dict[str, Any], ...]:
    """Section (severity, title, host, summary, labels) · code sections · context (links, status, page) · actions."""
    head: list[str] = []
    headline = _headline(message)
    if headline:
        head.append(f"*{_slack_esc(headline)}*")
    if message.host:
        head.append(f"host: `{_slack_esc(message.host)}`")
    if message.body:
        head.append(_slack_esc(message.body))
    if message.labels or cuts.hidden_labels:
        head.append(" ".join(_slack_labels(message, cuts)))
    blocks: list[dict[str, Any]] = []
    if head:
        blocks.append(_section("\n".join(head)))
    for code in message.code:
        body = _slack_code(code.text)
        if len(body) + 6 > SLACK_SECTION_LIMIT:  # only a guard: fitting keeps it shorter; the fences stay whole
            body = trim.clip_tail(body, SLACK_SECTION_LIMIT - 6)
        blocks.append(_section(f"```{body}```"))
    # A context block holds at most 10 elements: links give way first, the status and the page line stay.
    context = _slack_links(message)[:8]
    if message.status:
        context.append(f"_{_slack_esc(message.status)}_")
    page = _slack_page(message, cuts)
    if page is not None:
        context.append(page)
    if context:
        elements = [{"type": "mrkdwn", "text": part[:SLACK_SECTION_LIMIT], "verbatim": True} for part in context]
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


# -- Fitting a message to the platform's length limit ----------------------------------------------

_LABEL_KEY_CHARS = 32  # a label cut to fit keeps this much of its name and value, then "…"
_LABEL_VALUE_CHARS = 64
_RETRY_MARGIN = 8  # the measure decides; this only makes the next try land under the limit sooner
_TRIES = 8


def _measure(formatting: Formatting) -> Callable[[Message, _Cuts], int]:
    """How long a message is where the platform counts: Slack counts escaped mrkdwn (each Block Kit section is
    a part of it), Telegram counts text after entity parsing, which the plain twin bounds from above."""
    if formatting is Formatting.SLACK_MRKDWN:
        return lambda message, cuts: trim.length(_mrkdwn(message, cuts))
    return lambda message, cuts: trim.length(_plain(message, cuts))


def _fit(message: Message, capabilities: Capabilities) -> tuple[Message, _Cuts]:
    """`message` cut until it fits `capabilities.max_message_length` where the platform counts, and what was cut."""
    measure = _measure(capabilities.formatting)
    limit = capabilities.max_message_length
    if measure(message, _NO_CUTS) <= limit:
        return message, _NO_CUTS
    budget = limit
    for _ in range(_TRIES):
        fitted, cuts = _shrink(message, budget)
        over = measure(fitted, cuts) - limit
        if over <= 0:
            return fitted, cuts
        budget -= over + _RETRY_MARGIN  # escaping made it longer than counted: ask for less
    return _last_resort(message, limit, measure)


def _labels_length(pairs: Sequence[tuple[str, str]], hidden: int) -> int:
    """The plain "labels: a=1, b=2, +3 labels" line's length, plus its line break."""
    items = [trim.length(k) + 1 + trim.length(v) for k, v in pairs]
    if hidden:
        items.append(len(_more_labels(hidden)))
    return len("labels: ") + sum(items) + 2 * max(len(items) - 1, 0) + 1


def _fit_labels(labels: Sequence[tuple[str, str]], budget: int) -> tuple[tuple[tuple[str, str], ...], int]:
    """The labels that fit `budget` (each cut short first), and how many more there are."""
    pairs = [(visible(k), visible(v)) for k, v in labels]
    if _labels_length(pairs, 0) <= budget:
        return tuple(pairs), 0
    pairs = [(trim.clip_head(k, _LABEL_KEY_CHARS), trim.clip_head(v, _LABEL_VALUE_CHARS)) for k, v in pairs]
    used, shown = len("labels: ") + 1, 0
    for k, v in pairs:
        item = trim.length(k) + 1 + trim.length(v) + (2 if shown else 0)
        hidden = len(pairs) - shown - 1
        marker = len(_more_labels(hidden)) + 2 if hidden else 0
        if used + item + marker > budget:
            break
        used, shown = used + item, shown + 1
    return tuple(pairs[:shown]), len(pairs) - shown


def _shrink(message: Message, budget: int) -> tuple[Message, _Cuts]:
    """`message` cut to about `budget`: code first, then the summary, labels and code share what is left."""
    budget = max(budget, 0)
    frame = replace(
        message,
        title=trim.clip_head(visible(message.title), budget // 8),
        host=trim.clip_head(visible(message.host), budget // 8) if message.host else message.host,
        status=trim.clip_head(visible(message.status), budget // 8),
        body="",
        labels=(),
        code=(),
    )
    room = budget - trim.length(_plain(frame, _Cuts(trimmed=True)))
    body = visible(message.body)
    need_body = trim.length(body) + 1 if body else 0
    need_labels = _labels_length(message.labels, 0) if message.labels else 0
    codes = [visible(block.text) for block in message.code]
    need_code = sum(trim.length(text) + 1 for text in codes)
    if codes and need_body + need_labels < room:
        # The text around the code fits: only the head of the output goes (its tail matters most).
        body_share, labels_share, code_share = need_body, need_labels, room - need_body - need_labels
    else:
        body_share, labels_share, code_share = trim.share(room, [need_body, need_labels, need_code])
    labels, hidden = _fit_labels(message.labels, labels_share)
    if message.labels:  # labels cut to whole items rarely fill their share: the summary gets the rest
        body_share += labels_share - _labels_length(labels, hidden)
    each = code_share // len(codes) - 1 if codes else 0
    fitted = replace(
        frame,
        body=trim.clip_body(body, body_share - 1) if body else "",
        labels=labels,
        code=tuple(replace(b, text=trim.clip_tail(t, each)) for b, t in zip(message.code, codes, strict=True)),
    )
    return fitted, _Cuts(hidden_labels=hidden, trimmed=True)


def _last_resort(message: Message, limit: int, measure: Callable[[Message, _Cuts], int]) -> tuple[Message, _Cuts]:
    """The whole plain text as one body cut to fit (a frame too long to share: a huge title or link)."""
    whole = _plain(message)
    budget = limit
    for _ in range(_TRIES):
        candidate = Message(body=trim.clip_body(whole, budget), buttons=message.buttons, page=message.page)
        over = measure(candidate, _Cuts(trimmed=True)) - limit
        if over <= 0:
            return candidate, _Cuts(trimmed=True)
        budget -= over + _RETRY_MARGIN
    # A limit too small for even the marker and the page line: a bare cut (Slack's escaping grows text ≤ 5×).
    return Message(body=trim.clip_head(whole, limit // 5), buttons=message.buttons), _NO_CUTS
