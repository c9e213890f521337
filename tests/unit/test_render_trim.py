"""Trimming a message to its platform's limit (issue #19.4): every cut says so ("… 3,976 more characters",
"+22 labels", "[N characters above not shown]"), a trimmed incident message names the page with everything,
and the result stays within Telegram's, Slack's and the console's limits."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teleops.chat import trim
from teleops.chat.base import Capabilities, Formatting
from teleops.chat.console.gateway import CONSOLE_CAPABILITIES
from teleops.chat.render import SLACK_SECTION_LIMIT, render
from teleops.chat.slack.gateway import SLACK_CAPABILITIES
from teleops.chat.telegram.gateway import TELEGRAM_CAPABILITIES
from teleops.domain.message import Button, CodeBlock, IncidentPage, Link, Message, incident_page
from teleops.sources.generic.parse import parse_generic
from teleops.sources.payload import MAX_SUMMARY_LENGTH, clip

PAGE = incident_page(12, "https://teleops.example/")
PAGE_URL = "https://teleops.example/ui/incidents/12"
PLATFORMS = (TELEGRAM_CAPABILITIES, SLACK_CAPABILITIES, CONSOLE_CAPABILITIES)
MORE = re.compile(r"… ([\d,]+) more characters?")
MORE_LABELS = re.compile(r"\+([\d,]+) labels?\b")
TELEGRAM_TAGS = {"b", "i", "code", "pre", "a"}


def cut_count(text: str) -> int:
    """The N of the `… N more characters` marker in `text` (the test fails when there is none)."""
    match = MORE.search(text)
    assert match is not None, text[-200:]
    return int(match.group(1).replace(",", ""))


def thirty_labels(value_length: int = 80) -> tuple[tuple[str, str], ...]:
    return tuple((f"label_{i:02d}", f"v{i:02d}-" + "x" * value_length) for i in range(30))


def alert(body: str, labels: tuple[tuple[str, str], ...] = (), page: IncidentPage | None = PAGE) -> Message:
    return Message(
        title="DiskFull",
        severity="critical",
        host="web-1",
        body=body,
        labels=labels,
        links=(Link("Runbook", "https://runbooks.example/DiskFull"),),
        status="#12 · open",
        buttons=(Button("Ack", "ack:12"), Button("Resolve", "resolve:12")),
        page=page,
    )


class _TelegramText(HTMLParser):
    """What Telegram counts against its 4096: the text after entity parsing; refuses tags it does not know."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        assert tag in TELEGRAM_TAGS, tag

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def telegram_visible(text: str) -> str:
    parser = _TelegramText()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)


def assert_within_limits(message: Message, capabilities: Capabilities) -> None:
    """The rendered message is accepted by the platform: Telegram 4096 UTF-16 units after entity parsing, Slack
    3000 characters per section and context element and at most 10 context elements, the console's 16,000."""
    rendered = render(message, capabilities)
    assert trim.length(rendered.plain) <= capabilities.max_message_length
    if capabilities.formatting is Formatting.HTML:
        assert trim.length(telegram_visible(rendered.text)) <= 4096
    if capabilities.formatting is Formatting.SLACK_MRKDWN:
        assert len(rendered.blocks) <= 50
        for block in rendered.blocks:
            if block["type"] == "section":
                assert len(block["text"]["text"]) <= SLACK_SECTION_LIMIT
            if block["type"] == "context":
                assert len(block["elements"]) <= 10
                assert all(len(e["text"]) <= SLACK_SECTION_LIMIT for e in block["elements"])
    if capabilities.platform == "console":
        assert len(rendered.plain) <= 16_000


# -- the markers --------------------------------------------------------------------------------------------


def test_the_issue_example_5000_characters_cut_to_1024_says_3976_more() -> None:
    budget = 1024 + len("… 3,976 more characters")
    assert trim.clip_body("x" * 5000, budget) == "x" * 1024 + "… 3,976 more characters"


def test_markers_count_in_words_a_person_reads() -> None:
    assert trim.more_characters(1) == "… 1 more character"
    assert trim.more_characters(12_345) == "… 12,345 more characters"
    assert trim.clip_tail("abcdefghij" * 10, 40) == "[93 characters above not shown]\n" + "defghij"
    assert trim.clip_body("short", 5) == "short"


def test_a_cut_never_leaves_half_an_emoji_or_a_dangling_joiner() -> None:
    technologist = "\U0001f469\u200d\U0001f4bb"
    text = technologist * 100
    for budget in range(30, 60):
        cut = trim.clip_body(text, budget)
        kept = cut.split("…")[0]
        assert trim.length(cut) <= budget
        assert not kept.endswith("\u200d")
        assert all(not 0xD800 <= ord(c) <= 0xDFFF for c in kept)
        assert len(kept) + cut_count(cut) == len(text)


@pytest.mark.parametrize("capabilities", PLATFORMS, ids=lambda c: c.platform)
def test_a_long_summary_ends_with_how_many_characters_are_not_shown(capabilities: Capabilities) -> None:
    summary = "s" * 20_000
    rendered = render(alert(summary), capabilities)
    match = re.search(r"\n(s+)… ([\d,]+) more characters\n", rendered.plain)
    assert match is not None, rendered.plain[-300:]
    shown = len(match.group(1))
    assert shown > 500
    assert int(match.group(2).replace(",", "")) == len(summary) - shown
    assert f"{'s' * shown}… {len(summary) - shown:,} more characters" in rendered.text


@pytest.mark.parametrize("capabilities", [TELEGRAM_CAPABILITIES, SLACK_CAPABILITIES], ids=lambda c: c.platform)
def test_labels_left_out_are_counted(capabilities: Capabilities) -> None:
    labels = thirty_labels()
    rendered = render(alert("s" * 5000, labels), capabilities)
    match = MORE_LABELS.search(rendered.plain)
    assert match is not None
    hidden = int(match.group(1))
    shown = [name for name, _ in labels if f"{name}=" in rendered.plain]
    assert hidden > 0
    assert len(shown) + hidden == 30
    assert shown == [name for name, _ in labels[: len(shown)]]  # the first ones, in order, are shown
    assert f"+{hidden} labels" in rendered.text
    if rendered.blocks:
        assert f"+{hidden} labels" in rendered.blocks[0]["text"]["text"]


def test_a_label_value_cut_short_ends_with_an_ellipsis() -> None:
    rendered = render(alert("s" * 5000, thirty_labels(500)), TELEGRAM_CAPABILITIES)
    assert re.search(r"label_00=v00-x+…", rendered.plain)


def test_one_label_left_out_is_singular() -> None:
    capabilities = Capabilities(
        platform="tiny",
        formatting=Formatting.PLAIN,
        max_message_length=150,
        buttons=False,
        max_button_data_bytes=0,
        replies=False,
        edits=False,
        files=False,
        max_file_bytes=0,
    )
    labels = (("a", "1"), ("b", "2"), ("c" * 40, "x" * 200))
    plain = render(Message(title="t", labels=labels, page=IncidentPage(7)), capabilities).plain
    assert plain == "t\nlabels: a=1, b=2, +1 label\nTrimmed to fit: see incident #7 in the web console"


# -- the page with everything --------------------------------------------------------------------------------


def test_a_trimmed_message_links_its_incident_page_on_every_platform() -> None:
    message = alert("s" * 20_000, thirty_labels())
    telegram = render(message, TELEGRAM_CAPABILITIES)
    assert f'Trimmed to fit: everything is on <a href="{PAGE_URL}">incident #12</a>' in telegram.text
    assert f"Trimmed to fit: everything is on incident #12: {PAGE_URL}" in telegram.plain
    slack = render(message, SLACK_CAPABILITIES)
    context = [e["text"] for b in slack.blocks if b["type"] == "context" for e in b["elements"]]
    assert f"Trimmed to fit: everything is on <{PAGE_URL}|incident #12>" in context
    assert f"<{PAGE_URL}|incident #12>" in slack.text
    console = render(message, CONSOLE_CAPABILITIES)
    assert console.plain.endswith(f"Trimmed to fit: everything is on incident #12: {PAGE_URL}")


def test_without_a_public_url_the_page_is_named_not_guessed() -> None:
    message = alert("s" * 20_000, page=incident_page(12, ""))
    for capabilities in PLATFORMS:
        rendered = render(message, capabilities)
        assert "Trimmed to fit: see incident #12 in the web console" in rendered.text
        assert "http" not in rendered.plain.split("Trimmed to fit")[1]


def test_a_message_that_fits_is_untouched_and_names_no_page() -> None:
    message = alert("Disk / is 97% full on web-1", thirty_labels(10))
    for capabilities in PLATFORMS:
        rendered = render(message, capabilities)
        assert "Trimmed" not in rendered.text
        assert not MORE.search(rendered.plain)
        assert not MORE_LABELS.search(rendered.plain)
        assert all(f"{k}={v}" in rendered.plain for k, v in message.labels)


def test_long_output_still_keeps_its_tail_and_counts_what_is_above() -> None:
    output = "".join(f"line {i}\n" for i in range(5000)) + "THE END"
    rendered = render(Message(title="uptime", code=(CodeBlock(output),), page=PAGE), TELEGRAM_CAPABILITIES)
    match = re.search(r"\[([\d,]+) characters above not shown\]\n", rendered.plain)
    assert match is not None
    tail = rendered.plain[match.end() :].split("\n#")[0].split("\nTrimmed to fit")[0]
    assert output.endswith(tail)
    assert tail.endswith("THE END")
    assert int(match.group(1).replace(",", "")) + len(tail) == len(output)
    assert rendered.plain.endswith(f"Trimmed to fit: everything is on incident #12: {PAGE_URL}")


def test_incident_page_urls() -> None:
    assert incident_page(3, "https://ops.example/teleops/") == IncidentPage(
        3, "https://ops.example/teleops/ui/incidents/3"
    )
    assert incident_page(3, "  ") == IncidentPage(3, "")


def test_the_page_survives_the_outbox_json_and_old_rows_have_none() -> None:
    message = alert("b", page=PAGE)
    assert Message.from_json(message.to_json()) == message
    old = message.to_json()
    del old["page"]
    assert Message.from_json(old).page is None


def test_an_unsafe_public_url_is_shown_never_linked() -> None:
    message = alert("s" * 20_000, page=IncidentPage(12, "javascript:alert(1)"))
    text = render(message, TELEGRAM_CAPABILITIES).text
    assert 'href="javascript' not in text
    assert "incident #12: javascript:alert(1)" in text


# -- always within the limits ----------------------------------------------------------------------------------

# Text that grows when escaped (& is 5 characters on Slack, a bidi control 6 everywhere) or counts double
# in UTF-16 (emoji): the budget arithmetic must hold for all of them.
chunks = st.sampled_from(["x", "&", "<>", "\u202e", "\U0001f600", "\U0001f469\u200d\U0001f4bb", "a b\n", "`"])
long_text = st.builds(lambda chunk, n: chunk * n, chunks, st.integers(0, 9000))
label = st.tuples(st.text(min_size=1, max_size=40), long_text.map(lambda t: t[:300]))


@given(
    title=long_text.map(lambda t: t[:400]),
    body=long_text,
    labels=st.lists(label, max_size=40).map(tuple),
    code=st.lists(long_text.map(CodeBlock), max_size=2).map(tuple),
    page=st.none() | st.just(PAGE),
)
@settings(max_examples=150, deadline=None)
def test_every_platform_limit_holds_whatever_the_text(
    title: str, body: str, labels: tuple[tuple[str, str], ...], code: tuple[CodeBlock, ...], page: IncidentPage | None
) -> None:
    message = Message(title=title, severity="warning", host="web-1", body=body, labels=labels, code=code, page=page)
    for capabilities in PLATFORMS:
        assert_within_limits(message, capabilities)


@pytest.mark.parametrize("capabilities", PLATFORMS, ids=lambda c: c.platform)
def test_the_issue_alert_fits_and_says_what_it_cut(capabilities: Capabilities) -> None:
    message = alert("s" * 5000, thirty_labels())
    assert_within_limits(message, capabilities)
    rendered = render(message, capabilities)
    if capabilities is CONSOLE_CAPABILITIES:  # 16,000 characters: all of it fits, so nothing is cut or said
        assert "s" * 5000 in rendered.plain
        assert "Trimmed" not in rendered.plain
    else:
        assert MORE.search(rendered.plain)
        assert MORE_LABELS.search(rendered.plain)
        assert PAGE_URL in rendered.plain


# -- at ingest ----------------------------------------------------------------------------------------------


def test_a_5000_character_summary_is_stored_whole() -> None:
    summary = "s" * 5000
    [parsed] = parse_generic({"check": "DiskFull", "summary": summary, "host": "web-1"})
    assert parsed.summary == summary
    assert MAX_SUMMARY_LENGTH >= 16_384


def test_a_summary_cut_at_ingest_says_how_much_was_not_stored() -> None:
    [parsed] = parse_generic({"check": "DiskFull", "summary": "s" * 20_000, "host": "web-1"})
    assert len(parsed.summary) <= MAX_SUMMARY_LENGTH
    kept = len(parsed.summary.split("…")[0])
    assert parsed.summary == "s" * kept + f"… {20_000 - kept:,} more characters not stored"
    assert clip("abc", 3) == "abc"
    assert clip("abcdef", 3) == "ab…"  # no room for the count: a bare ellipsis still marks the cut
