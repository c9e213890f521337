"""Untrusted text made safe to show: control characters, ANSI escapes and bidi overrides become visible.

Alert labels, annotations and command output can carry anything. Shown raw, `ESC[2J` clears a
terminal-like view and U+202E reverses what the reader sees (docs/threat-model.md T25). `visible` keeps newlines
and tabs and turns every other control, format (bidi, zero-width) or separator character into a
visible escape such as `\\x1b` or `\\u202e`, so the reader sees that something odd was there.

Emoji stay emoji: a zero-width joiner *between two emoji* (👩‍💻, 🏳️‍🌈, 👨‍👩‍👧) and the tag characters of a
subdivision flag (🏴󠁧󠁢󠁳󠁣󠁴󠁿) are part of one picture and cannot steer other text. A joiner anywhere else (a "lone"
joiner) is invisible and can make two strings look alike, so it is escaped like any other format character.
"""

from __future__ import annotations

import unicodedata
from bisect import bisect_right

__all__ = ["ZWJ", "is_pictographic", "visible"]

ZWJ = "\u200d"
_KEEP = frozenset("\n\t ")
# Unicode categories that draw nothing or move other text: controls, format (bidi overrides,
# zero-width joiners), line/paragraph separators, surrogates, private use, unassigned.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
_VS16 = "\ufe0f"  # "show as emoji" variation selector: 🏳️‍🌈 is 🏳 VS16 ZWJ 🌈
_SKIN_TONES = range(0x1F3FB, 0x1F400)  # emoji modifiers: 🧑🏽‍💻 is 🧑 🏽 ZWJ 💻
_TAG_SPEC = range(0xE0020, 0xE007F)  # tag letters of a subdivision flag (🏴 + "gbsct" + cancel tag)
_CANCEL_TAG = "\U000e007f"

# Extended_Pictographic (Unicode 17, UTS #51), as (first, last) code point ranges. Taken from the property
# itself rather than from the general category: it includes code points reserved for future emoji, so an
# emoji newer than this Python's Unicode tables (where it is still "unassigned") is shown, not escaped.
_PICTOGRAPHIC: tuple[tuple[int, int], ...] = (
    (0xA9, 0xA9), (0xAE, 0xAE), (0x203C, 0x203C), (0x2049, 0x2049), (0x2122, 0x2122), (0x2139, 0x2139),
    (0x2194, 0x2199), (0x21A9, 0x21AA), (0x231A, 0x231B), (0x2328, 0x2328), (0x23CF, 0x23CF),
    (0x23E9, 0x23F3), (0x23F8, 0x23FA), (0x24C2, 0x24C2), (0x25AA, 0x25AB), (0x25B6, 0x25B6),
    (0x25C0, 0x25C0), (0x25FB, 0x25FE), (0x2600, 0x2604), (0x260E, 0x260E), (0x2611, 0x2611),
    (0x2614, 0x2615), (0x2618, 0x2618), (0x261D, 0x261D), (0x2620, 0x2620), (0x2622, 0x2623),
    (0x2626, 0x2626), (0x262A, 0x262A), (0x262E, 0x262F), (0x2638, 0x263A), (0x2640, 0x2640),
    (0x2642, 0x2642), (0x2648, 0x2653), (0x265F, 0x2660), (0x2663, 0x2663), (0x2665, 0x2666),
    (0x2668, 0x2668), (0x267B, 0x267B), (0x267E, 0x267F), (0x2692, 0x2697), (0x2699, 0x2699),
    (0x269B, 0x269C), (0x26A0, 0x26A1), (0x26A7, 0x26A7), (0x26AA, 0x26AB), (0x26B0, 0x26B1),
    (0x26BD, 0x26BE), (0x26C4, 0x26C5), (0x26C8, 0x26C8), (0x26CE, 0x26CF), (0x26D1, 0x26D1),
    (0x26D3, 0x26D4), (0x26E9, 0x26EA), (0x26F0, 0x26F5), (0x26F7, 0x26FA), (0x26FD, 0x26FD),
    (0x2702, 0x2702), (0x2705, 0x2705), (0x2708, 0x270D), (0x270F, 0x270F), (0x2712, 0x2712),
    (0x2714, 0x2714), (0x2716, 0x2716), (0x271D, 0x271D), (0x2721, 0x2721), (0x2728, 0x2728),
    (0x2733, 0x2734), (0x2744, 0x2744), (0x2747, 0x2747), (0x274C, 0x274C), (0x274E, 0x274E),
    (0x2753, 0x2755), (0x2757, 0x2757), (0x2763, 0x2764), (0x2795, 0x2797), (0x27A1, 0x27A1),
    (0x27B0, 0x27B0), (0x27BF, 0x27BF), (0x2934, 0x2935), (0x2B05, 0x2B07), (0x2B1B, 0x2B1C),
    (0x2B50, 0x2B50), (0x2B55, 0x2B55), (0x3030, 0x3030), (0x303D, 0x303D), (0x3297, 0x3297),
    (0x3299, 0x3299), (0x1F004, 0x1F004), (0x1F02C, 0x1F02F), (0x1F094, 0x1F09F), (0x1F0AF, 0x1F0B0),
    (0x1F0C0, 0x1F0C0), (0x1F0CF, 0x1F0D0), (0x1F0F6, 0x1F0FF), (0x1F170, 0x1F171), (0x1F17E, 0x1F17F),
    (0x1F18E, 0x1F18E), (0x1F191, 0x1F19A), (0x1F1AE, 0x1F1E5), (0x1F201, 0x1F20F), (0x1F21A, 0x1F21A),
    (0x1F22F, 0x1F22F), (0x1F232, 0x1F23A), (0x1F23C, 0x1F23F), (0x1F249, 0x1F25F), (0x1F266, 0x1F321),
    (0x1F324, 0x1F393), (0x1F396, 0x1F397), (0x1F399, 0x1F39B), (0x1F39E, 0x1F3F0), (0x1F3F3, 0x1F3F5),
    (0x1F3F7, 0x1F3FA), (0x1F400, 0x1F4FD), (0x1F4FF, 0x1F53D), (0x1F549, 0x1F54E), (0x1F550, 0x1F567),
    (0x1F56F, 0x1F570), (0x1F573, 0x1F57A), (0x1F587, 0x1F587), (0x1F58A, 0x1F58D), (0x1F590, 0x1F590),
    (0x1F595, 0x1F596), (0x1F5A4, 0x1F5A5), (0x1F5A8, 0x1F5A8), (0x1F5B1, 0x1F5B2), (0x1F5BC, 0x1F5BC),
    (0x1F5C2, 0x1F5C4), (0x1F5D1, 0x1F5D3), (0x1F5DC, 0x1F5DE), (0x1F5E1, 0x1F5E1), (0x1F5E3, 0x1F5E3),
    (0x1F5E8, 0x1F5E8), (0x1F5EF, 0x1F5EF), (0x1F5F3, 0x1F5F3), (0x1F5FA, 0x1F64F), (0x1F680, 0x1F6C5),
    (0x1F6CB, 0x1F6D2), (0x1F6D5, 0x1F6E5), (0x1F6E9, 0x1F6E9), (0x1F6EB, 0x1F6F0), (0x1F6F3, 0x1F6FF),
    (0x1F7DA, 0x1F7FF), (0x1F80C, 0x1F80F), (0x1F848, 0x1F84F), (0x1F85A, 0x1F85F), (0x1F888, 0x1F88F),
    (0x1F8AE, 0x1F8AF), (0x1F8BC, 0x1F8BF), (0x1F8C2, 0x1F8CF), (0x1F8D9, 0x1F8FF), (0x1F90C, 0x1F93A),
    (0x1F93C, 0x1F945), (0x1F947, 0x1F9FF), (0x1FA58, 0x1FA5F), (0x1FA6E, 0x1FAFF), (0x1FC00, 0x1FFFD),
)  # fmt: skip
_FIRSTS = tuple(first for first, _ in _PICTOGRAPHIC)


def is_pictographic(char: str) -> bool:
    """True when `char` (one code point) is Extended_Pictographic: an emoji, or reserved for a future one."""
    code = ord(char)
    at = bisect_right(_FIRSTS, code) - 1
    return at >= 0 and code <= _PICTOGRAPHIC[at][1]


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _joins_emoji(text: str, at: int) -> bool:
    """The ZWJ at `at` joins two emoji: an emoji (optionally with VS16 or a skin tone) before, an emoji after."""
    if at + 1 >= len(text) or not is_pictographic(text[at + 1]):
        return False
    before = at - 1
    if before >= 1 and (text[before] == _VS16 or ord(text[before]) in _SKIN_TONES):
        before -= 1
    return before >= 0 and is_pictographic(text[before])


def _tag_sequence_end(text: str, at: int) -> int:
    """Where the emoji tag sequence starting at `at` ends (after its cancel tag), or -1 when there is none.

    A tag sequence is an emoji followed by tag letters and the cancel tag (🏴 + g b s c t + U+E007F).
    """
    if at == 0 or not is_pictographic(text[at - 1]):
        return -1
    end = at
    while end < len(text) and ord(text[end]) in _TAG_SPEC:
        end += 1
    if end > at and end < len(text) and text[end] == _CANCEL_TAG:
        return end + 1
    return -1


def _shown_as_is(text: str, at: int) -> bool:
    char = text[at]
    if char in _KEEP or is_pictographic(char) or unicodedata.category(char) not in _HIDDEN_CATEGORIES:
        return True
    return char == ZWJ and _joins_emoji(text, at)


def visible(text: str) -> str:
    """`text` with every invisible or steering character replaced by its escape; newlines and tabs kept.

    `\\r\\n` becomes `\\n` (a lone `\\r` is escaped: it can overwrite a line on screen). Emoji sequences
    (ZWJ sequences, tag sequences) are kept whole; bidi controls and lone joiners are always escaped.
    Idempotent (`visible(visible(t)) == visible(t)`). Never raises.
    """
    text = text.replace("\r\n", "\n")
    if text.isprintable() and "\r" not in text:
        return text  # fast path: nothing to escape (isprintable is False for \n and \t, so this is rare)
    out: list[str] = []
    at = 0
    while at < len(text):
        char = text[at]
        if _shown_as_is(text, at):
            out.append(char)
        elif ord(char) in _TAG_SPEC and (end := _tag_sequence_end(text, at)) > 0:
            out.append(text[at:end])
            at = end
            continue
        else:
            out.append(_escape(char))
        at += 1
    return "".join(out)
