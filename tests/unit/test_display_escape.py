"""Display escaping of untrusted text (docs/threat-model.md T25, issue #19.7c): bidi controls and lone joiners always show as
escapes, while emoji built with zero-width joiners, skin tones, keycaps and tag flags stay emoji."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teleops.chat.base import Capabilities
from teleops.chat.console.gateway import CONSOLE_CAPABILITIES
from teleops.chat.render import render
from teleops.chat.slack.gateway import SLACK_CAPABILITIES
from teleops.chat.telegram.gateway import TELEGRAM_CAPABILITIES
from teleops.domain.message import Message
from teleops.domain.text import is_pictographic, visible

ZWJ = "\u200d"
ZWNJ = "\u200c"
VS16 = "\ufe0f"
CANCEL_TAG = "\U000e007f"
# Every bidirectional formatting character of Unicode (UAX #9): marks, embeddings, overrides, isolates.
BIDI_CONTROLS = (
    "\u061c\u200e\u200f"  # ALM, LRM, RLM
    "\u202a\u202b\u202c\u202d\u202e"  # LRE, RLE, PDF, LRO, RLO
    "\u2066\u2067\u2068\u2069"  # LRI, RLI, FSI, PDI
)
SKIN_TONES = "".join(chr(c) for c in range(0x1F3FB, 0x1F400))

# RGI emoji ZWJ sequences (each checked against /^\p{RGI_Emoji}$/v of Unicode 17), written as escapes so the
# joiners can be seen in this file.
RGI_ZWJ_SEQUENCES = (
    "\U0001f469\u200d\U0001f4bb",  # woman technologist
    "\U0001f3f3\ufe0f\u200d\U0001f308",  # rainbow flag
    "\U0001f3f3\ufe0f\u200d\u26a7\ufe0f",  # transgender flag
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",  # family: man, woman, girl, boy
    "\U0001f469\u200d\U0001f469\u200d\U0001f466",  # family: woman, woman, boy
    "\U0001f468\u200d\U0001f468\u200d\U0001f467\u200d\U0001f467",  # family: man, man, girl, girl
    "\U0001f9d1\U0001f3fd\u200d\U0001f4bb",  # technologist: medium skin tone
    "\U0001f469\U0001f3ff\u200d\U0001f680",  # woman astronaut: dark skin tone
    "\U0001f9d1\u200d\U0001f91d\u200d\U0001f9d1",  # people holding hands
    "\U0001f9d1\U0001f3fb\u200d\U0001f91d\u200d\U0001f9d1\U0001f3fc",  # people holding hands: light, medium-light skin tones
    "\U0001f469\u200d\u2764\ufe0f\u200d\U0001f468",  # couple with heart: woman, man
    "\U0001f469\u200d\u2764\ufe0f\u200d\U0001f48b\u200d\U0001f468",  # kiss: woman, man
    "\U0001f3f4\u200d\u2620\ufe0f",  # pirate flag
    "\U0001f415\u200d\U0001f9ba",  # service dog
    "\U0001f43b\u200d\u2744\ufe0f",  # polar bear
    "\u2764\ufe0f\u200d\U0001f525",  # heart on fire
    "\u2764\ufe0f\u200d\U0001fa79",  # mending heart
    "\U0001f62e\u200d\U0001f4a8",  # face exhaling
    "\U0001f635\u200d\U0001f4ab",  # face with spiral eyes
    "\U0001f441\ufe0f\u200d\U0001f5e8\ufe0f",  # eye in speech bubble
    "\U0001f9d4\u200d\u2642\ufe0f",  # man: beard
    "\U0001f46e\u200d\u2640\ufe0f",  # woman police officer
    "\U0001f3c3\U0001f3fe\u200d\u2640\ufe0f",  # woman running: medium-dark skin tone
    "\U0001f468\u200d\U0001f9b0",  # man: red hair
    "\U0001f469\U0001f3fc\u200d\U0001f9b3",  # woman: medium-light skin tone, white hair
    "\U0001f9d1\u200d\U0001f37c",  # person feeding baby
    "\U0001f408\u200d\u2b1b",  # black cat
    "\U0001f426\u200d\U0001f525",  # phoenix
    "\U0001f34b\u200d\U0001f7e9",  # lime
    "\u26d3\ufe0f\u200d\U0001f4a5",  # broken chain
    "\U0001f642\u200d\u2194\ufe0f",  # head shaking horizontally
    "\U0001f9d1\u200d\U0001f9d1\u200d\U0001f9d2",  # family: adult, adult, child
)
# Other RGI emoji whose parts are invisible or combining on their own: keycaps, flags, subdivision tag flags.
RGI_OTHER_SEQUENCES = (
    "#\ufe0f\u20e3",  # keycap: #
    "*\ufe0f\u20e3",  # keycap: *
    "1\ufe0f\u20e3",  # keycap: 1
    "\U0001f1fa\U0001f1e6",  # flag: Ukraine
    "\U0001f1ef\U0001f1f5",  # flag: Japan
    "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",  # flag: England
    "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # flag: Scotland
    "\U0001f3f4\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f",  # flag: Wales
    "\U0001f44d\U0001f3fd",  # thumbs up: medium skin tone
    "\u270c\ufe0f",  # victory hand
)
RGI_SEQUENCES = RGI_ZWJ_SEQUENCES + RGI_OTHER_SEQUENCES
PLATFORMS = (TELEGRAM_CAPABILITIES, SLACK_CAPABILITIES, CONSOLE_CAPABILITIES)

# The emoji the generated texts are built from; the oracle below knows them without asking the code under test.
EMOJI = "\U0001f469\U0001f468\U0001f9d1\U0001f4bb\U0001f308\U0001f3f3\U0001f3f4\u2764\u2620\U0001f525\u2642\u2640"
TAGS = "".join(chr(c) for c in (0xE0067, 0xE0062, 0xE0073, 0xE0063, 0xE0074, 0xE0041))


def joins_two_emoji(text: str, at: int) -> bool:
    """The oracle: the ZWJ at `at` sits between an emoji (maybe with VS16 or a skin tone) and an emoji."""
    after = text[at + 1] if at + 1 < len(text) else ""
    before = at - 1
    if before >= 1 and (text[before] == VS16 or text[before] in SKIN_TONES):
        before -= 1
    return after in EMOJI and before >= 0 and text[before] in EMOJI


def in_tag_flag(text: str, at: int) -> bool:
    """The oracle: the tag character at `at` is inside 🏴 + tag letters + cancel tag."""
    start = at
    while start > 0 and "\U000e0020" <= text[start - 1] <= "\U000e007e":
        start -= 1
    end = at
    while end < len(text) and "\U000e0020" <= text[end] <= "\U000e007e":
        end += 1
    return start > 0 and text[start - 1] in EMOJI and end < len(text) and text[end] == CANCEL_TAG and end > start


@pytest.mark.parametrize("sequence", RGI_SEQUENCES)
def test_rgi_emoji_sequences_are_shown_as_themselves(sequence: str) -> None:
    assert visible(sequence) == sequence
    assert visible(f"deploy {sequence} done\n") == f"deploy {sequence} done\n"


@pytest.mark.parametrize("capabilities", PLATFORMS, ids=lambda c: c.platform)
def test_a_zwj_emoji_in_an_alert_reaches_every_platform_unescaped(capabilities: Capabilities) -> None:
    technologist, rainbow, family = RGI_ZWJ_SEQUENCES[0], RGI_ZWJ_SEQUENCES[1], RGI_ZWJ_SEQUENCES[3]
    message = Message(title=f"{technologist} on call", body=f"{rainbow} {family}", labels=(("team", family),))
    rendered = render(message, capabilities)
    for text in (rendered.text, rendered.plain, *(json.dumps(b, ensure_ascii=False) for b in rendered.blocks)):
        assert "\\u200d" not in text
    for emoji in (technologist, rainbow, family):
        assert emoji in rendered.plain
    assert family in rendered.text


@pytest.mark.parametrize("control", BIDI_CONTROLS)
def test_every_bidi_control_is_escaped_even_beside_emoji(control: str) -> None:
    for text in (f"ok{control}evil", f"\U0001f469{control}\U0001f4bb", f"\U0001f469{ZWJ}{control}\U0001f4bb"):
        shown = visible(text)
        assert control not in shown
        assert f"\\u{ord(control):04x}" in shown


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("adm\u200din", "adm\\u200din"),  # between letters: makes "admin" and "adm‍in" look alike
        (f"{ZWJ}\U0001f4bb", "\\u200d\U0001f4bb"),  # nothing before it
        (f"\U0001f469{ZWJ}", "\U0001f469\\u200d"),  # nothing after it
        (f"\U0001f469{ZWJ}x", "\U0001f469\\u200dx"),  # an emoji, then a letter
        (f"x{ZWJ}\U0001f4bb", "x\\u200d\U0001f4bb"),
        (f"\U0001f469{ZWJ}{ZWJ}\U0001f4bb", "\U0001f469\\u200d\\u200d\U0001f4bb"),  # doubled: neither joins emoji
        (f"\U0001f469{ZWNJ}\U0001f4bb", "\U0001f469\\u200c\U0001f4bb"),  # ZWNJ never builds an emoji
        (f"\U0001f469{VS16}{VS16}{ZWJ}\U0001f4bb", f"\U0001f469{VS16}{VS16}\\u200d\U0001f4bb"),
        ("a\u200bb\u2060c\ufeff", "a\\u200bb\\u2060c\\ufeff"),  # zero-width space, word joiner, BOM
    ],
)
def test_lone_joiners_and_other_invisible_characters_are_escaped(text: str, shown: str) -> None:
    assert visible(text) == shown


def test_tag_characters_outside_a_flag_are_escaped() -> None:
    """Tag letters hide text ("ASCII smuggling"); only a complete 🏴 + tags + cancel tag flag keeps them."""
    hidden = "".join(chr(0xE0000 + ord(c)) for c in "rm -rf")
    assert visible(f"ok{hidden}") == "ok" + "".join(f"\\U{0xE0000 + ord(c):08x}" for c in "rm -rf")
    no_cancel = "\U0001f3f4\U000e0067\U000e0062"
    assert visible(no_cancel) == "\U0001f3f4\\U000e0067\\U000e0062"
    england = RGI_OTHER_SEQUENCES[5]
    assert visible(england + "\U000e0041") == england + "\\U000e0041"  # a tag after the cancel tag: not part of it


def test_an_emoji_newer_than_pythons_unicode_tables_is_shown() -> None:
    shaking_face = "\U0001fae8"  # Unicode 15: "unassigned" (Cn) to Python 3.11's unicodedata 14.0
    assert is_pictographic(shaking_face)
    assert visible(f"{shaking_face}{ZWJ}\U0001f525") == f"{shaking_face}{ZWJ}\U0001f525"
    assert visible("\U000f0000") == "\\U000f0000"  # private use stays escaped


def test_control_characters_and_ansi_stay_escaped() -> None:
    assert visible("\x1b[2Jcleared\x07\rline") == "\\x1b[2Jcleared\\x07\\x0dline"
    assert visible("a\r\nb\tc") == "a\nb\tc"


pieces = st.one_of(
    st.sampled_from(list(EMOJI)),
    st.sampled_from([ZWJ, ZWNJ, VS16, CANCEL_TAG, *BIDI_CONTROLS, *SKIN_TONES, *TAGS]),
    st.sampled_from(["a", "Z", "0", " ", "\n", "-", "\u0430", "\x1b", "\r"]),
)
mixed_text = st.lists(pieces, max_size=60).map("".join)


@given(mixed_text)
@settings(max_examples=400, deadline=None)
def test_no_bidi_control_or_lone_joiner_ever_survives(text: str) -> None:
    shown = visible(text)
    assert not any(control in shown for control in BIDI_CONTROLS)
    assert ZWNJ not in shown
    assert "\x1b" not in shown
    assert "\r" not in shown
    for at, char in enumerate(shown):
        if char == ZWJ:
            assert joins_two_emoji(shown, at), (text, shown)
        if "\U000e0020" <= char <= CANCEL_TAG:
            assert char == CANCEL_TAG or in_tag_flag(shown, at), (text, shown)
    # Nothing vanishes: every joiner is either kept or shown as its escape.
    assert text.count(ZWJ) == shown.count(ZWJ) + shown.count("\\u200d")
    assert visible(shown) == shown  # idempotent: the console escapes the rendered text once more


@given(st.sampled_from(RGI_SEQUENCES), mixed_text, mixed_text)
@settings(max_examples=400, deadline=None)
def test_every_rgi_sequence_survives_unchanged_whatever_surrounds_it(sequence: str, before: str, after: str) -> None:
    # A space on each side: an emoji or joiner of the surrounding text never becomes part of the sequence.
    shown = visible(f"{before} {sequence} {after}")
    assert f" {sequence} " in shown
