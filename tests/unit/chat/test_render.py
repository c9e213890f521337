"""Rendering untrusted alert text for each platform: escaping, visible control characters, length fitting."""

from __future__ import annotations

from teleops.chat.base import Capabilities, Formatting
from teleops.chat.render import render
from teleops.domain.message import Button, CodeBlock, Link, Message
from teleops.domain.text import visible

HTML = Capabilities(
    platform="test",
    formatting=Formatting.HTML,
    max_message_length=4096,
    buttons=True,
    max_button_data_bytes=64,
    replies=True,
    edits=True,
    files=True,
    max_file_bytes=50 * 1024 * 1024,
)
PLAIN = Capabilities(
    platform="plain",
    formatting=Formatting.PLAIN,
    max_message_length=200,
    buttons=False,
    max_button_data_bytes=0,
    replies=False,
    edits=False,
    files=False,
    max_file_bytes=0,
)


def test_markup_in_labels_is_escaped_not_interpreted() -> None:
    message = Message(
        title="<b>Disk</b> & co",
        labels=(("team", '<a href="https://evil.example">click</a>'),),
        body="5 < 6 && 7 > 3",
    )
    rendered = render(message, HTML)
    assert "<a href" not in rendered.text
    assert "&lt;a href=&quot;" in rendered.text or '&lt;a href="' in rendered.text
    assert "&lt;b&gt;Disk&lt;/b&gt; &amp; co" in rendered.text
    assert "5 &lt; 6 &amp;&amp; 7 &gt; 3" in rendered.text
    assert rendered.plain.count("<b>Disk</b>") == 1  # the plain twin keeps the text as written


def test_only_http_links_are_clickable() -> None:
    message = Message(
        links=(Link("Runbook", "https://wiki.example/r?a=1&b=2"), Link("Evil", "javascript:alert(1)")),
    )
    text = render(message, HTML).text
    assert '<a href="https://wiki.example/r?a=1&amp;b=2">Runbook</a>' in text
    assert "javascript:alert(1)" in text
    assert 'href="javascript' not in text


def test_control_ansi_and_bidi_are_shown_as_escapes() -> None:
    message = Message(title="ok\u202eevil", code=(CodeBlock("\x1b[2Jcleared\x07\r\nline2\u200b"),))
    rendered = render(message, HTML)
    for text in (rendered.text, rendered.plain):
        assert "\x1b" not in text
        assert "\u202e" not in text
        assert "\u200b" not in text
        assert "\\x1b[2J" in text
        assert "\\u202e" in text
        assert "\\x07" in text
    assert visible("a\r\nb\tc") == "a\nb\tc"
    assert visible("a\rb") == "a\\x0db"


def test_long_output_keeps_its_tail_within_the_limit() -> None:
    output = "".join(f"line {i}\n" for i in range(5000)) + "THE END"
    rendered = render(Message(title="uptime", code=(CodeBlock(output),)), HTML)
    assert len(rendered.plain) <= HTML.max_message_length
    assert rendered.plain.endswith("THE END")
    assert "characters above not shown" in rendered.plain


def test_oversized_body_is_cut_to_the_limit() -> None:
    rendered = render(Message(title="x" * 1000, body="y" * 10_000, labels=(("k", "v" * 500),)), PLAIN)
    assert len(rendered.text) <= PLAIN.max_message_length


def test_buttons_dropped_when_unsupported_or_data_too_long() -> None:
    message = Message(title="t", buttons=(Button("Ack", "ack:1"), Button("Long", "x" * 65)))
    assert render(message, PLAIN).buttons == ()
    assert render(message, HTML).buttons == (Button("Ack", "ack:1"),)


def test_message_json_round_trip() -> None:
    message = Message(
        title="t",
        severity="critical",
        host="web-1",
        body="b",
        labels=(("a", "1"),),
        links=(Link("l", "https://x"),),
        code=(CodeBlock("out", None),),
        status="acked",
        buttons=(Button("Ack", "ack:1"),),
    )
    assert Message.from_json(message.to_json()) == message
